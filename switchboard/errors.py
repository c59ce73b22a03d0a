"""Errors: one root exception, stable codes for what reaches a client.

Every error a client can see is a :class:`SwitchboardError` with a stable
``code`` (documented in docs/protocol.md), a human ``message`` and a ``retry``
flag that says whether sending the same frame again may succeed.

The classes of the codes on the wire are defined once, in the client
distribution's ``switchboard_client.errors`` (the SDK raises them too), and
re-exported here; the errors that stay inside a deployment (a bad request
between services, configuration, an incompatible library) are defined here.
"""

from __future__ import annotations

from switchboard_client.errors import (
    BY_CODE as WIRE_CODES,
    AuthError,
    BadFrame,
    BadJson,
    Conflict,
    FrameTooLarge,
    Internal,
    InvalidId,
    LimitExceeded,
    NotFound,
    NotMember,
    RateLimited,
    SwitchboardError,
    Unavailable,
    UnknownType,
    from_code as _from_code,
)

__all__ = [
    "AuthError", "BadFrame", "BadJson", "BadRequest", "ConfigError", "Conflict", "FrameTooLarge",
    "IncompatibleLibrary", "Internal", "InvalidId", "LimitExceeded", "NotFound", "NotMember", "RateLimited",
    "SwitchboardError", "Unavailable", "UnknownType", "from_code",
]


class BadRequest(SwitchboardError):
    """A service could not decode a request sent to it over NATS (a caller's
    bug, or a caller of another version): sending it again fails again."""

    code = "bad_request"


class ConfigError(SwitchboardError):
    """The configuration is invalid."""

    code = "config"


class IncompatibleLibrary(ConfigError):
    """An installed library is outside the version range Switchboard is
    written against, or lacks an internal Switchboard relies on
    (switchboard/compat/): install the pinned range from pyproject.toml."""

    code = "incompatible_library"


# code -> class: the wire's and this module's.
_BY_CODE: dict[str, type[SwitchboardError]] = {
    **WIRE_CODES, **{c.code: c for c in (BadRequest, ConfigError, IncompatibleLibrary)}}


def from_code(code: str, message: str, retry: bool) -> SwitchboardError:
    """Rebuild an error received over the bus: an instance of the class of
    this module with that ``code`` (so ``except NotMember`` works on the far
    side of a request), keeping the sender's message and retry flag; an
    unknown code gives a plain :class:`SwitchboardError` carrying it."""
    return _from_code(code, message, retry, _BY_CODE)
