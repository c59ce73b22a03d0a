"""structlog set-up: JSON in production, console for a developer.

Level policy (as websockets does it): connection lifecycle, service start/stop
and errors at INFO; per-message events only at DEBUG, never at INFO.
Bind ``conn`` and ``user`` on a connection's logger; never log a token.

Credentials never reach a log line: every line, ours (structlog) and the
libraries' (stdlib logging), passes through :func:`redact`, which masks the
password of ``scheme://user:password@host`` URLs (``user:***@``), a bare
token (``nats://TOKEN@host`` -> ``***@``), secrets in query strings
(``?password=``, ``&token=`` ...) and values of keys named like secrets.
Anything that prints a URL from the settings (the CLI's "is up" lines, the
metrics pages) uses :func:`redact_url` / :func:`redact` too.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable
from typing import Any

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, WrappedLogger

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}

MASK = "***"

# scheme://userinfo@ : the userinfo runs to the LAST "@" before the host ends
# ("/", "?", "#", whitespace or a quote), as URL parsers read it, so a
# password holding an unescaped "@" is masked whole. Several URLs in one
# string (a comma list of seeds) are matched one by one, each stopping at the
# next URL's "//".
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]{0,30}://)(?P<info>[^\s/?#\"'<>`]*)@")
# Secrets in a query string or a key=value list: ?password=..., &token=...
_SECRET_PARAM = re.compile(
    r"(?P<key>(?:^|(?<=[?&;\s,(]))(?:password|passwd|pass|pwd|token|auth_token|access_token|secret|"
    r"client_secret|api_key|apikey|sasl_password|credentials?)=)(?P<value>[^&;\s#\"'<>,)]*)",
    re.IGNORECASE)
# Keys of log events whose value is a secret whatever it looks like.
_SECRET_KEYS = frozenset({"password", "passwd", "pass", "pwd", "token", "secret", "jwt_secret", "auth_token",
                          "access_token", "api_key", "authorization", "credentials"})
# Keys whose value is a URL (or a comma list of them): also masked when the
# URL has no scheme (``user:pw@host:4222`` is a valid --nats).
_URL_KEYS = frozenset({"nats", "nats_url", "url", "server", "servers", "store", "store_url", "presence",
                       "presence_url", "redis", "redis_url", "cassandra"})

# A structlog processor that renders the event as the line to write.
Renderer = Callable[[WrappedLogger, str, EventDict], str]


def _mask_info(m: re.Match[str]) -> str:
    scheme: str = m.group("scheme")
    info: str = m.group("info")
    if "," in info:  # a comma list whose later item has no scheme: mask it all rather than guess
        return scheme + MASK + "@"
    user, colon, _ = info.partition(":")
    # user:password -> user:***  (the user helps an operator; the password never shows)
    # token         -> ***       (a lone userinfo is a token: NATS token auth)
    return scheme + (f"{user}:{MASK}" if colon else MASK) + "@"


def redact(text: str) -> str:
    """``text`` with credentials in URLs and query strings masked."""
    if "@" in text:
        text = _USERINFO.sub(_mask_info, text)
    if "=" in text:
        text = _SECRET_PARAM.sub(lambda m: m.group("key") + MASK, text)
    return text


def redact_url(url: str) -> str:
    """A URL (or a comma list of them, schemes optional) safe to print.

    Stricter than :func:`redact`: the userinfo is everything up to the last
    "@" before the query, even when an unescaped "/" in a password would end
    the host for a URL parser."""
    out = []
    for item in url.split(","):
        scheme, sep, rest = item.rpartition("://")
        cut = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
        head, tail = rest[:cut], rest[cut:]
        if "@" in head:
            info, _, host = head.rpartition("@")
            user, colon, _ = info.partition(":")
            head = (f"{user}:{MASK}" if colon and "/" not in user else MASK) + "@" + host
        out.append(scheme + sep + head + tail)
    return redact(",".join(out))


def _scrub(key: str | None, value: Any) -> Any:
    if isinstance(value, str):
        if key is not None:
            k = key.lower()
            if k in _SECRET_KEYS:
                return MASK if value else value
            if k in _URL_KEYS:
                return redact_url(value)
        return redact(value)
    if isinstance(value, dict):
        return {k: _scrub(k if isinstance(k, str) else None, v) for k, v in value.items()}
    if type(value) in (list, tuple, set, frozenset):
        return type(value)(_scrub(key, v) for v in value)
    return value


def redact_event(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: every string value of the event, redacted."""
    return {k: _scrub(k, v) for k, v in event_dict.items()}


class _Redacting(logging.Formatter):
    """The stdlib formatter of our handlers (nats-py, websockets, redis, cassandra log through it):
    the handler's own formatter (kept whole: format, date format, style), then :func:`redact`."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__("%(message)s")
        self._inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return redact(self._inner.format(record) if self._inner is not None else super().format(record))


def _redacted_renderer(renderer: Renderer) -> Renderer:
    """The final renderer, then :func:`redact` over its output: catches what
    the processor cannot see (reprs of objects, exception text)."""

    def render(logger: WrappedLogger, method: str, event_dict: EventDict) -> str:
        return redact(renderer(logger, method, event_dict))

    return render


def configure(level: str = "info", json: bool = False) -> None:
    lvl = _LEVELS.get(level.lower(), logging.INFO)
    logging.basicConfig(level=lvl, stream=sys.stderr, format="%(message)s")
    for h in logging.getLogger().handlers:  # ours, not a test runner's capture handlers
        if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) in (sys.stderr, sys.stdout) \
                and not isinstance(h.formatter, _Redacting):
            h.setFormatter(_Redacting(h.formatter))
    logging.getLogger("websockets").setLevel(max(lvl, logging.WARNING))
    # JSONRenderer is typed str | bytes: bytes come only from a serializer that
    # returns them, and its default (json.dumps) returns str.
    renderer: Renderer = (structlog.processors.JSONRenderer()  # type: ignore[assignment]
                          if json else structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_event,
            _redacted_renderer(renderer),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


def get(name: str, **bind: object) -> FilteringBoundLogger:
    # structlog types get_logger() Any; bind() returns the configured wrapper
    # class (make_filtering_bound_logger, in configure() and by default).
    logger: FilteringBoundLogger = structlog.get_logger(name).bind(**bind)
    return logger
