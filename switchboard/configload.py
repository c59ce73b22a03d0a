"""Where settings come from: defaults < one TOML file < environment < flags.

Every setting is a *leaf* of the tree in switchboard/config.py: ``data_dir``
at the top, ``[edge] port``, ``[pusher.apns] key_id``... A leaf has one
TOML place, one environment variable ``SWITCHBOARD_<SECTION>__<KEY>``
(``SWITCHBOARD_PUSHER__APNS__KEY_ID``) and, for the fields that had one
before sections existed, the flat alias ``SWITCHBOARD_<FIELD>``
(``SWITCHBOARD_NATS_URL`` for ``[nats] url``), read only when the sectioned
variable is not set. :func:`load` returns the settings and where each leaf's
value came from (``switchboard config show``). Every error is one line that
names the key and the file or variable at fault.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from switchboard.config import SECTIONS, TABLES, Settings
from switchboard.errors import ConfigError

ENV_PREFIX = "SWITCHBOARD_"
CONFIG_ENV = "SWITCHBOARD_CONFIG"

# Keys of the former separate push config file (and its path setting): a
# file or environment still using them gets told where they went.
MOVED = {
    "push_config": "the push settings are sections of this file now: [pusher], [pusher.apns], [pusher.fcm], "
                   "[pusher.webpush] (docs/push.md)",
    "worker": "the push config's [worker] keys are [pusher] keys now (docs/push.md)",
    "apns": "write it as [pusher.apns]", "fcm": "write it as [pusher.fcm]", "webpush": "write it as [pusher.webpush]",
}

# The fields that had a flat variable (SWITCHBOARD_<FIELD>) before the tree had
# sections: deploy files, scripts and people's shells use them, so they stay
# as aliases. Fields added since have the sectioned variable only.
FLAT_ENV = frozenset((
    "data_dir", "nats_url", "subject_prefix", "stream_prefix", "nats_tls_ca", "nats_tls_cert", "nats_tls_key",
    "replicas", "dedup_window_sec", "messages_max_age_sec", "inbox_max_age_sec", "inbox_max_per_user", "store_url",
    "host", "port", "edge_id", "jwt_secret", "tls_cert", "tls_key", "max_frame_bytes", "max_body_bytes",
    "send_queue_frames", "send_queue_bytes", "max_sockets_per_user", "edge_send_queue_bytes", "rate_per_sec",
    "rate_burst", "replay_batch", "hello_timeout", "ping_interval", "ping_timeout", "admit_per_sec", "send_timeout",
    "conv_list_per_min", "dev_signin", "http_body_bytes", "partitions", "lease_ttl", "fanout_max_members",
    "max_group_members", "max_groups_per_min", "max_fanout_per_min", "conv_list_max", "archive_batch",
    "archive_max_deliver", "presence_url", "presence_heartbeat_sec", "presence_ttl_factor", "presence_sweep_sec",
    "presence_max_watches_per_user", "push_provider", "trace_sample", "trace_max_age_sec", "instance",
    "metrics_port", "log_level", "log_json"))


@dataclass(frozen=True)
class Leaf:
    """One setting: where it lives in the tree and how it is spelled."""

    section: str  # "" (top level), "edge", or "pusher.apns" for a table's keys
    key: str  # the key in its section
    name: str  # the Settings field ("nats_url"), or the table's field for a table's key ("key_id")
    kind: Any  # the field's type
    table: str | None = None  # the Settings field holding the table ("push_apns"), for a table's keys
    secret: bool = False  # never printed
    url: bool = False  # printed with credentials masked
    owner: type | None = None  # the dataclass declaring the field (its comments are the docs)

    @property
    def doc(self) -> str:
        """The comment above the field: why its default (docs/operations.md)."""
        return _field_docs(self.owner).get(self.name, "") if self.owner is not None else ""

    @property
    def path(self) -> str:
        return f"{self.section}.{self.key}" if self.section else self.key

    @property
    def where(self) -> str:
        """How a TOML file spells it: ``[edge] port`` or ``data_dir``."""
        return f"[{self.section}] {self.key}" if self.section else self.key

    @property
    def env(self) -> str:
        return ENV_PREFIX + "__".join([*self.section.split("."), self.key] if self.section else [self.key]).upper()

    @property
    def alias(self) -> str | None:
        """The flat variable of a field that had one (``SWITCHBOARD_PORT``)."""
        if self.name not in FLAT_ENV or self.table is not None:
            return None
        flat = ENV_PREFIX + self.name.upper()
        return None if flat == self.env else flat


@cache
def leaves() -> tuple[Leaf, ...]:
    """Every leaf in file order: sections as switchboard/config.py declares them."""
    out: list[Leaf] = []
    for cls in SECTIONS:
        section = cls.__dict__["section"]
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            key = f.metadata.get("key", f.name)
            if f.name in TABLES:
                table = TABLES[f.name]
                sub_hints = typing.get_type_hints(table)
                for sf in dataclasses.fields(table):
                    out.append(Leaf(section=f"{section}.{key}", key=sf.name, name=sf.name, kind=sub_hints[sf.name],
                                    table=f.name, owner=table))
                continue
            out.append(Leaf(section=section, key=key, name=f.name, kind=hints[f.name],
                            secret=bool(f.metadata.get("secret")), url=bool(f.metadata.get("url")), owner=cls))
    return tuple(out)


@cache
def _by_path() -> dict[str, Leaf]:
    return {leaf.path: leaf for leaf in leaves()}


@cache
def _by_name() -> dict[str, Leaf]:
    return {leaf.name: leaf for leaf in leaves() if leaf.table is None}


@cache
def _tables() -> dict[str, str]:
    """Table section ("pusher.apns") -> its Settings field ("push_apns")."""
    return {leaf.section: leaf.table for leaf in leaves() if leaf.table is not None}


def leaf_of(name: str) -> Leaf:
    """The leaf of a Settings field name or a dotted path (``port``, ``edge.port``)."""
    leaf = _by_name().get(name) or _by_path().get(name)
    if leaf is None:
        raise ConfigError(f"unknown setting {name!r}")
    return leaf


@dataclass(frozen=True)
class Loaded:
    settings: Settings
    # leaf path -> where its value came from: "default", "data_dir" (derived
    # from it), "file PATH", "env NAME" or "flag". Keys of absent tables are missing.
    origins: dict[str, str]
    file: str | None  # the TOML file read, if any


def load(*, config_file: str | None = None, env: Mapping[str, str] | None = None,
         overrides: Mapping[str, Any] | None = None, use_env: bool = True) -> Loaded:
    """Settings from the four sources, validated. ``env`` defaults to
    ``os.environ``; ``use_env=False`` reads no variable but
    ``SWITCHBOARD_CONFIG`` (``config check FILE``: the file alone)."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    tables: dict[str, dict[str, Any]] = {}
    origins: dict[str, str] = {}

    def put(leaf: Leaf, value: Any, origin: str) -> None:
        if leaf.table is None:
            values[leaf.name] = value
        else:
            tables.setdefault(leaf.table, {})[leaf.key] = value
        origins[leaf.path] = origin

    path = config_file or env.get(CONFIG_ENV) or None
    if path:
        for leaf, value in _read_file(path):
            put(leaf, value, f"file {path}")
    if use_env:
        for name in MOVED:
            if ENV_PREFIX + name.upper() in env:
                raise ConfigError(f"{ENV_PREFIX}{name.upper()}: no longer read; {MOVED[name]}")
        _check_env_names(env)
        for leaf in leaves():
            for var in (leaf.env, leaf.alias):
                if var is not None and var in env:
                    put(leaf, _convert(leaf, env[var], var), f"env {var}")
                    break
    for name, value in (overrides or {}).items():
        if value is None:  # a flag not given
            continue
        if name in TABLES:  # a whole table (Python callers)
            values[name] = value
            origins.update({lf.path: "flag" for lf in leaves() if lf.table == name})
            continue
        put(leaf_of(name), value, "flag")
    for field_name, given in tables.items():
        values[field_name] = _build_table(field_name, given, origins)
    try:
        settings = Settings(**values)
    except ConfigError as exc:
        raise ConfigError(_locate(exc.message, origins)) from None
    for leaf in leaves():
        if leaf.path not in origins and (leaf.table is None or getattr(settings, leaf.table) is not None):
            origins[leaf.path] = "data_dir" if leaf.table is None and settings.derived(leaf.name) else "default"
    return Loaded(settings=settings, origins=origins, file=path)


def _check_env_names(env: Mapping[str, str]) -> None:
    """A sectioned variable (``SWITCHBOARD_X__Y``) is ours by its form: one
    naming no setting is a typo, refused like an unknown key in the file.
    Flat ones cannot be told from other tools' SWITCHBOARD_* and are ignored."""
    known = {leaf.env for leaf in leaves()}
    for var in env:
        if var.startswith(ENV_PREFIX) and "__" in var and var not in known:
            close = difflib.get_close_matches(var, known, n=1)
            raise ConfigError(f"{var}: names no setting" + (f" (did you mean {close[0]}?)" if close else ""))


def environment(settings: Settings, names: Iterable[str] | None = None, *,
                base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment that gives a child process ``settings``: ``base``
    (default: empty) plus ``SWITCHBOARD_<SECTION>__<KEY>`` for the fields
    ``names`` (default: every field that differs from its default, derived
    paths left to the child), with every other spelling of those fields
    removed from ``base``, so nothing of the parent's shell overrides them."""
    default = Settings()
    if names is None:
        names = [f.name for f in dataclasses.fields(Settings)
                 if getattr(settings, f.name) != getattr(default, f.name) and not settings.derived(f.name)]
    out = dict(base or {})
    for name in names:
        chosen = [leaf for leaf in leaves() if leaf.name == name and leaf.table is None] or \
                 [leaf for leaf in leaves() if leaf.table == name]
        if not chosen:
            raise ConfigError(f"unknown setting {name!r}")
        for leaf in chosen:
            out.pop(leaf.env, None)
            if leaf.alias:
                out.pop(leaf.alias, None)
            value = getattr(settings, leaf.name) if leaf.table is None else \
                getattr(getattr(settings, leaf.table) or object(), leaf.name, None)
            if value is not None:
                out[leaf.env] = _env_text(value)
    return out


def _env_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)


# -- the file -----------------------------------------------------------------------
def _read_file(path: str) -> list[tuple[Leaf, Any]]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    out: list[tuple[Leaf, Any]] = []
    sections = {leaf.section for leaf in leaves() if leaf.section}
    tables = _tables()

    def walk(table: dict[str, Any], section: str) -> None:
        for key, value in table.items():
            path_ = f"{section}.{key}" if section else key
            if path_ in sections:
                if not isinstance(value, dict):
                    raise ConfigError(f"{path}: [{path_}] must be a table of keys, not a {type(value).__name__}")
                walk(value, path_)
            elif path_ in _by_path() and path_ not in tables:
                leaf = _by_path()[path_]
                out.append((leaf, _convert(leaf, value, path)))
            else:
                raise ConfigError(f"{path}: unknown key {_spell(section, key)}{_hint(section, key)}")

    walk(data, "")
    return out


def _spell(section: str, key: str) -> str:
    return f"[{section}] {key}" if section else key


def _hint(section: str, key: str) -> str:
    if not section and key in MOVED:
        return f" ({MOVED[key]})"
    if not section and key in _by_name():  # a flat key from before sections
        return f" (write it as {_by_name()[key].where})"
    known = [leaf.key for leaf in leaves() if leaf.section == section]
    known += [t.rpartition(".")[2] for t in _tables() if t.rpartition(".")[0] == section]
    close = difflib.get_close_matches(key, known, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


# -- values --------------------------------------------------------------------------
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _convert(leaf: Leaf, value: Any, source: str) -> Any:
    """``value`` (TOML, or a string from the environment) as the leaf's type.
    Strings are read like the environment's in both places."""
    kind = leaf.kind
    if isinstance(kind, types.UnionType):  # "str | None": TOML has no null, so a value is a str
        kind = next(k for k in typing.get_args(kind) if k is not type(None))
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
                return value.lower() in _TRUE
        elif kind is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if isinstance(value, str):
                return int(value)
        elif kind is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
            if isinstance(value, str):
                return float(value)
        elif kind is str:
            if isinstance(value, str):
                return value
        elif typing.get_origin(kind) is tuple:
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return tuple(value)
            if isinstance(value, str):  # the environment: a comma list
                return tuple(v.strip() for v in value.split(",") if v.strip())
    except ValueError:
        pass
    shown = "***" if leaf.secret else repr(value)
    raise ConfigError(f"{source}: {leaf.where} = {shown} is not {_kind_name(kind)}")


def _kind_name(kind: Any) -> str:
    if typing.get_origin(kind) is tuple:
        return "a list of strings"
    return {bool: "a boolean (true/false)", int: "an integer", float: "a number", str: "a string"}.get(kind, str(kind))


def _build_table(field_name: str, given: dict[str, Any], origins: dict[str, str]) -> Any:
    cls = TABLES[field_name]
    section = next(s for s, f in _tables().items() if f == field_name)
    where = next((o for p, o in origins.items() if p.startswith(section + ".")), "settings")
    missing = [f.name for f in dataclasses.fields(cls)
               if f.name not in given and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{where}: [{section}] is missing {', '.join(missing)}")
    try:
        return cls(**given)
    except ConfigError as exc:
        raise ConfigError(f"{where}: [{section}] {exc.message}") from None


def _locate(message: str, origins: dict[str, str]) -> str:
    """A validation message with where its first named field was set: the
    checks speak of fields (``port must be ...``), an operator of files."""
    for word in re.findall(r"[a-z_]+", message):
        leaf = _by_name().get(word)
        if leaf is not None:
            origin = origins.get(leaf.path, "default")
            spelled = f" ({leaf.where})" if leaf.where != leaf.name else ""
            return f"{origin}: {message}{spelled}" if origin not in ("default", "data_dir") else message
    return message


@cache
def _field_docs(cls: type) -> dict[str, str]:
    """The comment block above each field of ``cls`` (and a trailing ``# ...``
    on its line): the why of its default, for docs/operations.md."""
    import inspect

    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return {}
    docs: dict[str, str] = {}
    block: list[str] = []
    names = {f.name for f in dataclasses.fields(cls)}
    for line in lines[1:]:
        text = line.strip()
        if text.startswith("#"):
            block.append(text.lstrip("#").strip())
            continue
        m = re.match(r"(\w+)\s*:", text)
        if m and m.group(1) in names:
            _, hash_, tail = text.partition("  # ")
            docs[m.group(1)] = " ".join(block + ([tail.strip()] if hash_ else []))
        block = []
    return docs
