"""``switchboard config show`` and ``switchboard config check [FILE]``.

``show`` prints the settings a role started here would run with, as a TOML
file with the source of every value in a comment (``default``,
``data_dir``: derived from it, ``file PATH``, ``env NAME``, ``flag``);
secrets are masked and URLs lose their passwords, so the output can be
pasted into a ticket. ``--json`` prints the same as one object keyed by
``section.key``.

``reference`` prints the settings reference of docs/operations.md (every
key by section: default, variables, why), generated from switchboard/config.py
(tests/unit/test_config_cmd.py checks the document against it).

``check FILE`` validates FILE alone (defaults + FILE: what CI should accept
before shipping it); without FILE it validates what a role would load here
(``SWITCHBOARD_CONFIG`` and the environment); ``--env`` adds the
environment to FILE. Exit 0 and ``ok: ...``, or exit 1 and one line naming
the key and the file or variable at fault.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from switchboard.config import DERIVED, SECTIONS, TABLES, Settings
from switchboard.configload import Leaf, Loaded, leaves, load
from switchboard.errors import ConfigError
from switchboard.log import redact_url

# The flags `config show` takes: those of the role commands, so it shows
# what `switchboard edge --port 9000 ...` would run with (dest -> field).
FLAGS: dict[str, tuple[str, str, type]] = {
    "data": ("data_dir", "data directory", str),
    "nats": ("nats_url", "NATS URL", str),
    "store": ("store_url", "message store URL", str),
    "presence": ("presence_url", "presence backend URL", str),
    "host": ("host", "the edge's listen address", str),
    "port": ("port", "the edge's port", int),
    "edge_id": ("edge_id", "the edge's id", str),
    "log_level": ("log_level", "log level", str),
}


def add_parser(sub: Any) -> None:
    """Register ``config show`` and ``config check`` (sets ``run=`` on each)."""
    cfg = sub.add_parser("config", help="show the effective settings and where each comes from, or check a "
                                        "settings file")
    cmds = cfg.add_subparsers(dest="config_cmd", required=True, metavar="{show,check,reference}")
    show = cmds.add_parser("show", help="the settings a role started here would use: a TOML file with the "
                                        "source of each value (default, data_dir, file, env, flag); secrets masked")
    show.add_argument("--config", metavar="FILE", help="TOML settings file (default: $SWITCHBOARD_CONFIG)")
    for dest, (_, what, kind) in FLAGS.items():
        show.add_argument("--" + dest.replace("_", "-"), dest=dest, type=kind, metavar=dest.upper(),
                          help=f"as the role commands' flag: {what}")
    show.add_argument("--json", action="store_true", help="one JSON object {section.key: {value, from}}")
    show.set_defaults(run=run_show)
    check = cmds.add_parser("check", help="validate a settings file: exit 0, or 1 with one line naming the key "
                                          "and the file at fault")
    check.add_argument("file", nargs="?", metavar="FILE",
                       help="the file to check, alone (default: what a role would load here: "
                            "$SWITCHBOARD_CONFIG and the environment)")
    check.add_argument("--env", action="store_true", help="check FILE together with the SWITCHBOARD_* environment")
    check.set_defaults(run=run_check)
    ref = cmds.add_parser("reference", help="print the settings reference (Markdown, as in docs/operations.md)")
    ref.set_defaults(run=lambda args: print(reference(), end="") or 0)


def run_show(args: argparse.Namespace) -> int:
    overrides = {field: getattr(args, dest, None) for dest, (field, _, _) in FLAGS.items()}
    try:
        loaded = load(config_file=args.config, overrides=overrides)
    except ConfigError as exc:
        print(f"switchboard config show: {exc.message}", file=sys.stderr)
        return 1
    print(render_json(loaded) if args.json else render_toml(loaded), end="")
    return 0


def run_check(args: argparse.Namespace) -> int:
    try:
        loaded = load(config_file=args.file, use_env=args.file is None or args.env)
    except ConfigError as exc:
        print(f"switchboard config check: {exc.message}", file=sys.stderr)
        return 1
    what = loaded.file or "no settings file"
    print(f"ok: {what}" + (" with the environment" if args.file is None or args.env else ""))
    return 0


# -- rendering ---------------------------------------------------------------------
def shown(leaf: Leaf, value: Any) -> Any:
    """The value as it may be printed: secrets masked, URLs without passwords."""
    if leaf.secret and value:
        return "***"
    if leaf.url and isinstance(value, str):
        return redact_url(value)
    return value


def _value(loaded: Loaded, leaf: Leaf) -> Any:
    s = loaded.settings
    if leaf.table is None:
        return getattr(s, leaf.name)
    return getattr(getattr(s, leaf.table), leaf.name)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, tuple):
        return json.dumps(list(value))
    return json.dumps(value)  # a TOML basic string: JSON's escapes are TOML's


def render_toml(loaded: Loaded) -> str:
    lines = ["# switchboard config show: the effective settings. The comment says where each value comes",
             "# from: default, data_dir (derived from it), file, env (the variable) or flag. Secrets: ***."]
    section = None
    for leaf in leaves():
        origin = loaded.origins.get(leaf.path)
        if origin is None:  # a table that is not configured ([pusher.fcm] without fcm)
            continue
        if leaf.section != section:
            section = leaf.section
            lines += ["", f"[{section}]"] if section else [""]
        value = shown(leaf, _value(loaded, leaf))
        text = f"# {leaf.key} = (not set)" if value is None else f"{leaf.key} = {_toml(value)}"
        lines.append(f"{text:<48}  # {origin}")
    return "\n".join(lines) + "\n"


def render_json(loaded: Loaded) -> str:
    out = {leaf.path: {"value": shown(leaf, _value(loaded, leaf)), "from": loaded.origins[leaf.path]}
           for leaf in leaves() if leaf.path in loaded.origins}
    return json.dumps(out, indent=2, default=list) + "\n"


# -- the reference (docs/operations.md) ----------------------------------------------
def reference() -> str:
    """Markdown: one table per section, every key with its default, its
    variables and the comment that says why the default."""
    default = Settings()
    intro = {cls.__dict__["section"]: (cls.__doc__ or "").strip() for cls in SECTIONS}
    intro.update({s.section: (TABLES[s.table].__doc__ or "").strip()  # type: ignore[index]
                  for s in leaves() if s.table is not None})
    out: list[str] = []
    section = None
    for leaf in leaves():
        if leaf.section != section:
            section = leaf.section
            title = f"`[{section}]`" if section else "Top level"
            text = intro.get(section, "").split("\n\n")[0].replace("\n", " ")
            out += ["", f"#### {title}", "", text, "", "| key | default | environment | why |", "|---|---|---|---|"]
        env = f"`{leaf.env}`" + (f" (or `{leaf.alias}`)" if leaf.alias else "")
        why = leaf.doc.replace("|", "\\|")
        out.append(f"| `{leaf.key}` | {_default_text(leaf, default)} | {env} | {why} |")
    return "\n".join(out).lstrip("\n") + "\n"


def _default_text(leaf: Leaf, default: Settings) -> str:
    if leaf.table is not None:
        f = next(f for f in dataclasses.fields(TABLES[leaf.table]) if f.name == leaf.name)
        if f.default is dataclasses.MISSING:
            return "required"
        value = f.default
    elif leaf.name in DERIVED:
        return f"`sqlite:///<data_dir>/{DERIVED[leaf.name]}`"
    else:
        value = getattr(default, leaf.name)
    if value is None:
        return "not set"
    return f"`{_toml(value)}`"
