"""A ``nats`` CLI context for the embedded NATS of ``switchboard up``.

docs/operations.md watches a deployment with ``nats micro ls``, ``nats kv
ls`` ...; against ``up`` those need the embedded server's URL, whose port
is picked at each start. ``up`` therefore writes ``<data>/nats-context.json``
(the nats CLI's context format: ``nats --context /abs/path.json ...`` reads
it) and prints one ready-to-paste line that saves and selects it as the
context ``switchboard``, after which the commands of the docs work verbatim.
Only for the embedded server: it has no accounts, so the file holds no
credential (a ``--nats`` URL may, and the operator has their own context).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

CONTEXT_NAME = "switchboard"
FILE_NAME = "nats-context.json"


def write(data_dir: str | Path, url: str) -> Path:
    """Write the context file of ``url`` under ``data_dir``; its absolute path."""
    path = (Path(data_dir) / FILE_NAME).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"description": "switchboard up (embedded nats-server)", "url": url}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body, indent=2) + "\n")
    tmp.replace(path)  # a reader never sees half a file
    return path


def hint(path: Path, url: str) -> str:
    """The line ``up`` prints: a paste-able save+select, and the no-setup form."""
    return (f"nats CLI: nats context save {CONTEXT_NAME} --server {url} --select   "
            f"(or, without saving: nats --context {shlex.quote(str(path))} micro ls)")


__all__ = ["CONTEXT_NAME", "FILE_NAME", "hint", "write"]
