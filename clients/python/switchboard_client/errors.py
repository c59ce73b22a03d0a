"""Errors: one root exception, stable codes for what reaches a client.

Every error a client can see is a :class:`SwitchboardError` with a stable
``code`` (documented in docs/protocol.md), a human ``message`` and a ``retry``
flag that says whether sending the same frame again may succeed.

This module holds the classes of the codes on the wire: the server's
``switchboard.errors`` re-exports them (one class per code on both sides, so
``except NotMember`` catches the server's and the SDK's alike) and adds the
errors that stay inside a deployment (configuration, bus requests).
"""

from __future__ import annotations

from collections.abc import Mapping


class SwitchboardError(Exception):
    """Root of every Switchboard exception."""

    # A class's own code and retry flag; one instance may carry others (__init__).
    code: str = "internal"
    retry: bool = False

    def __init__(self, message: str = "", *, code: str | None = None, retry: bool | None = None):
        super().__init__(message or self.__class__.__doc__ or self.code)
        self.message = message or (self.__class__.__doc__ or self.code).strip()
        if code is not None:
            self.code = code
        if retry is not None:
            self.retry = retry


class BadFrame(SwitchboardError):
    """The frame is not a valid protocol frame."""

    code = "bad_frame"


class BadJson(BadFrame):
    """The frame is not valid JSON."""

    code = "bad_json"



class UnknownType(BadFrame):
    """The frame type is not known."""

    code = "unknown_type"


class FrameTooLarge(BadFrame):
    """The frame exceeds the size limit."""

    code = "frame_too_large"


class InvalidId(SwitchboardError):
    """An id does not match [A-Za-z0-9_-]{1,64}."""

    code = "invalid_id"


class NotMember(SwitchboardError):
    """The user is not a member of that conversation."""

    code = "not_member"


class NotFound(SwitchboardError):
    """No such conversation."""

    code = "not_found"


class RateLimited(SwitchboardError):
    """Too many frames; slow down and resend."""

    code = "rate_limited"
    retry = True


class Unavailable(SwitchboardError):
    """A service behind the edge is not answering; resend the same frame."""

    code = "unavailable"
    retry = True


class Conflict(SwitchboardError):
    """The request conflicts with existing state."""

    code = "conflict"


class LimitExceeded(SwitchboardError):
    """A configured limit (group size, body size, ...) was exceeded."""

    code = "limit_exceeded"


class Internal(SwitchboardError):
    """An unexpected server error."""

    code = "internal"
    retry = True


class AuthError(SwitchboardError):
    """The token is missing, malformed, forged or expired."""

    code = "unauthorized"




def from_code(code: str, message: str, retry: bool,
              known: Mapping[str, type[SwitchboardError]] | None = None) -> SwitchboardError:
    """Rebuild an error received from the server (an ``error`` frame, or a
    reply over the bus): an instance of the class with that ``code`` in
    ``known`` (default: this module's, :data:`BY_CODE`), so ``except
    NotMember`` works on the far side, keeping the sender's message and retry
    flag; an unknown code gives a plain :class:`SwitchboardError` carrying it."""
    cls = (BY_CODE if known is None else known).get(code)
    if cls is None:
        return SwitchboardError(message, code=code, retry=retry)
    return cls(message, retry=retry)


# code -> class, for from_code; "internal" is Internal (the root shares its code).
BY_CODE: dict[str, type[SwitchboardError]] = {
    c.code: c for c in list(globals().values())
    if isinstance(c, type) and issubclass(c, SwitchboardError) and c is not SwitchboardError
}
