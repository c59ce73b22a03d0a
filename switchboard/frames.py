"""Wire protocol v1 on the server: the client's frames, and what only an edge does with them.

The frames themselves (msgspec Structs, one per ``type``; docs/protocol.md is
the prose reference) are defined once, in the client distribution's
``switchboard_client.frames``, which the SDK uses too, and re-exported here:
``frames.Msg`` is the same class on both sides.

Decoding a client's frame goes through :func:`decode_client_frame`, which maps
every failure to an error with a stable code (``bad_json``, ``unknown_type``,
``bad_frame``, ``invalid_id``) and keeps the frame's ``id`` as the error
``ref`` when it can. Every failure means every one: JSON nested deeper than
the decoder's recursion limit (a ``RecursionError``, not a ``DecodeError``) is
a ``bad_frame`` too, never an exception that would close the socket.
"""

from __future__ import annotations

import msgspec

from switchboard import ids
from switchboard.errors import BadFrame, BadJson, InvalidId, LimitExceeded, UnknownType
from switchboard_client.frames import (
    INT63_MAX,
    Ack,
    ClientFrame,
    Conv,
    ConvCreate,
    ConvList,
    ConvListRequest,
    ConvSummary,
    Error,
    Hello,
    History,
    HistoryRequest,
    Int64,
    Msg,
    Ok,
    Platform,
    Position,
    Presence,
    PresenceWatch,
    PushRegister,
    Read,
    Receipt,
    ReceiptsRequest,
    Resync,
    ResyncRange,
    Send,
    Sent,
    ServerFrame,
    Synced,
    Typing,
    TypingEvent,
    Welcome,
    decode_server_frame,
    encode,
)

__all__ = [
    "INT63_MAX", "Ack", "ClientFrame", "Conv", "ConvCreate", "ConvList", "ConvListRequest", "ConvSummary", "Error",
    "Hello", "History", "HistoryRequest", "Int64", "Msg", "Ok", "Platform", "Position", "Presence", "PresenceWatch",
    "PushRegister", "Read", "Receipt", "ReceiptsRequest", "Resync", "ResyncRange", "Send", "Sent", "ServerFrame",
    "Synced", "Typing", "TypingEvent", "Welcome", "decode_client_frame", "decode_server_frame", "encode",
    "error_frame", "guess_ref", "with_cursor",
]

_client_decoder = msgspec.json.Decoder(ClientFrame)


class _RefOnly(msgspec.Struct):
    """The ``id`` of a frame, and nothing else (other fields are skipped)."""

    id: str | None = None


_ref_decoder = msgspec.json.Decoder(_RefOnly)


def error_frame(exc: Exception, ref: str | None = None) -> Error:
    code = getattr(exc, "code", "internal")
    retry = bool(getattr(exc, "retry", False))
    message = getattr(exc, "message", None) or str(exc)
    return Error(ref=ref, code=code, message=message, retry=retry)


def guess_ref(data: bytes | str) -> str | None:
    """The ``id`` of a frame that failed validation, if it has a usable one.

    Never raises: it runs on the error path of any bad input (not an object,
    nested too deep, ``id`` not a string: no ref)."""
    try:
        ref = _ref_decoder.decode(data).id
    except (msgspec.DecodeError, RecursionError, UnicodeEncodeError):  # ValidationError is a DecodeError
        return None
    return None if ref is None else ref[:128]  # echoed so the client can match it, even when invalid


def decode_client_frame(data: bytes | str, *, max_body: int = 16 * 1024) -> ClientFrame:
    """Decode and validate one client frame; raise a coded error otherwise."""
    try:
        frame = _client_decoder.decode(data)
    except msgspec.ValidationError as exc:
        text = str(exc)
        if "at `$.type`" in text or "missing required field `type`" in text:
            raise UnknownType(f"unknown or missing frame type: {text}") from None
        raise BadFrame(text) from None
    except msgspec.DecodeError as exc:
        raise BadJson(f"malformed JSON: {exc}") from None
    except RecursionError:
        raise BadFrame("JSON nested too deeply") from None
    except UnicodeEncodeError:  # a str holding a lone surrogate: not valid UTF-8 text
        raise BadJson("frame is not valid UTF-8 text") from None
    _validate(frame, max_body)
    return frame


def _validate(frame: ClientFrame, max_body: int) -> None:
    # Ids are checked here, at the edge, before they reach any subject.
    if isinstance(frame, Send):
        ids.check(frame.id, "message id")
        if (frame.conv is None) == (frame.to is None):
            raise BadFrame("send needs exactly one of 'conv' or 'to'")
        if frame.conv is not None:
            ids.check(frame.conv, "conv")
        if frame.to is not None:
            ids.check(frame.to, "user")
        # At most 4 UTF-8 bytes per character: most bodies need no encode to measure.
        if len(frame.body) * 4 > max_body and len(frame.body.encode()) > max_body:
            raise LimitExceeded(f"body exceeds {max_body} bytes")
        return  # frame.id is checked above
    elif isinstance(frame, (Read, Typing, HistoryRequest, ReceiptsRequest)):
        ids.check(frame.conv, "conv")
    elif isinstance(frame, ConvCreate):
        if not frame.members:
            raise BadFrame("conv.create needs at least one member")
        for m in frame.members:
            ids.check(m, "user")
    elif isinstance(frame, PresenceWatch):
        for u in frame.users:
            ids.check(u, "user")
    if isinstance(frame, HistoryRequest) and frame.limit < 1:
        raise BadFrame("limit must be >= 1")
    ref = getattr(frame, "id", None)
    if ref is not None and not ids.is_valid(ref):
        raise InvalidId(f"frame id {ref!r} is not a valid id")


def with_cursor(stored_msg: bytes, cursor: int) -> bytes:
    """Splice ``"cursor":N`` into a stored ``msg`` frame (encoded without one).

    Cheaper than decode + encode on the hot path: the stored frame is a JSON
    object produced by :data:`encode`, so it ends with ``}``.
    """
    return b"%s,\"cursor\":%d}" % (stored_msg[:-1], cursor)

