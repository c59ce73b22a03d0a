"""nats-py internals Switchboard borrows (see :mod:`switchboard.compat`).

- ``Client._server_info``: the INFO the server sent on the current
  connection, a dict. nats-py has no public accessor for it (its properties
  expose single fields such as ``max_payload`` and ``client_id``, not
  ``tls_required``). :func:`switchboard.tls.require_tls` reads it through
  :func:`server_info` to refuse a server that would leave a ``nats_tls_*``
  connection in plain text. Were it renamed, that check would refuse every
  server (fail closed) with a misleading message; the import check says why.

The hot path does not use nats-py at all (switchboard/bus/ speaks the NATS
protocol itself), so nothing here runs per message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from switchboard import compat

if TYPE_CHECKING:
    from nats.aio.client import Client

DIST = "nats-py"
# Same specifier as pyproject.toml's requirement: the minor checked against.
SUPPORTED = ">=2.16,<2.17"


def _server_info_attr() -> object:
    from nats.aio.client import Client

    info = vars(Client())["_server_info"]  # set in __init__; KeyError when renamed
    if not isinstance(info, dict):
        raise AttributeError("_server_info is not a dict")
    return info


# What is borrowed -> a probe raising AttributeError/KeyError when it is gone.
BORROWED = {
    "nats.aio.client.Client._server_info": _server_info_attr,
}


def check() -> str:
    """Raise IncompatibleLibrary unless the installed nats-py is supported
    and has every borrowed attribute; return its version."""
    return compat.check(DIST, SUPPORTED, BORROWED)


VERSION = check()


def server_info(nc: Client) -> dict[str, Any]:
    """The server's INFO on ``nc``'s current connection ({} before one)."""
    info = getattr(nc, "_server_info", None)
    return info if isinstance(info, dict) else {}
