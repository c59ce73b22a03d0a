"""structlog set-up: JSON in production, console for a developer.

Level policy (as websockets does it): connection lifecycle, service start/stop
and errors at INFO; per-message events only at DEBUG, never at INFO.
Bind ``conn`` and ``user`` on a connection's logger; never log a token.
"""

from __future__ import annotations

import logging
import sys

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure(level: str = "info", json: bool = False) -> None:
    lvl = _LEVELS.get(level.lower(), logging.INFO)
    logging.basicConfig(level=lvl, stream=sys.stderr, format="%(message)s")
    logging.getLogger("websockets").setLevel(max(lvl, logging.WARNING))
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


def get(name: str, **bind: object) -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger(name).bind(**bind)
