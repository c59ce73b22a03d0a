"""Wire protocol v1: the typed frames a client and an edge exchange.

One JSON object per WebSocket text frame, discriminated by ``type``. Field
names and frame types are fixed for v1; new fields and frame types may be
added, none renamed or removed (docs/protocol.md, the prose reference).

Decoding goes through :func:`decode_client_frame`, which maps every failure to
an error with a stable code (``bad_json``, ``unknown_type``, ``bad_frame``,
``invalid_id``) and keeps the frame's ``id`` as the error ``ref`` when it can.
Every failure means every one: JSON nested deeper than the decoder's
recursion limit (a ``RecursionError``, not a ``DecodeError``) is a
``bad_frame`` too, never an exception that would close the socket.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from switchboard import ids
from switchboard.errors import BadFrame, BadJson, InvalidId, LimitExceeded, UnknownType


class _Frame(msgspec.Struct, tag_field="type", omit_defaults=True, forbid_unknown_fields=False):
    pass


# Cursors and seqs are INBOX/stream sequences and conversation seqs: unsigned
# 64-bit on the server, stored as signed 64-bit integers by the stores. A
# client value outside [0, 2^63) cannot name anything real (and 2^64 used to
# reach the INBOX read and close the socket): bad_frame at decode.
INT63_MAX = 2**63 - 1
Position = Annotated[int, msgspec.Meta(ge=0, le=INT63_MAX)]
# history's before/after: any 64-bit signed value is harmless there, but not more.
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=INT63_MAX)]

# ---------------------------------------------------------------- client → server


class Hello(_Frame, tag="hello"):
    cursor: Position | None = None
    epoch: str | None = None


class Send(_Frame, tag="send"):
    id: str
    body: str
    conv: str | None = None
    to: str | None = None
    trace: bool = False  # record this message's hops (switchboard/trace.py, `switchboard trace`)


class Ack(_Frame, tag="ack"):
    cursor: Position


class Read(_Frame, tag="read"):
    conv: str
    seq: Position
    id: str | None = None


class Typing(_Frame, tag="typing"):
    conv: str


class HistoryRequest(_Frame, tag="history"):
    conv: str
    before: Int64 | None = None
    after: Int64 | None = None
    limit: Int64 = 50
    id: str | None = None


class ConvCreate(_Frame, tag="conv.create"):
    members: list[str]
    title: str = ""
    id: str | None = None


class PresenceWatch(_Frame, tag="presence.watch"):
    users: list[str]
    id: str | None = None


class PushRegister(_Frame, tag="push.register"):
    platform: str
    token: str
    id: str | None = None


class ReceiptsRequest(_Frame, tag="receipts"):
    """Ask for every member's current watermarks of ``conv`` (answered with
    one ``receipt`` frame per member), e.g. after a reconnect."""

    conv: str
    id: str | None = None


class ConvListRequest(_Frame, tag="conv.list"):
    """Ask for the caller's conversations, most recently active first
    (answered with ``conv.list``)."""

    id: str | None = None


ClientFrame = (Hello | Send | Ack | Read | Typing | HistoryRequest | ConvCreate | PresenceWatch | PushRegister
               | ReceiptsRequest | ConvListRequest)

# ---------------------------------------------------------------- server → client


class Welcome(_Frame, tag="welcome"):
    user: str
    epoch: str


class Synced(_Frame, tag="synced"):
    cursor: int
    # Large groups (pull mode, no INBOX copies) the user belongs to, each with
    # its last seq: fetch from history what you lack (docs/architecture.md).
    groups: list[ResyncRange] = []


class ResyncRange(msgspec.Struct, omit_defaults=True):
    """Fetch ``conv`` from history: every seq after ``after`` up to ``upto``."""

    conv: str
    after: int = 0
    upto: int = 0


class Resync(_Frame, tag="resync", omit_defaults=False):
    # Every field always on the wire: a client reads ``cursor`` (0 on an
    # empty INBOX) and ``ranges`` (empty: refetch what you know).
    reason: str
    ranges: list[ResyncRange] = []
    cursor: int = 0


class Sent(_Frame, tag="sent"):
    id: str
    conv: str
    seq: int
    ts: int


class Msg(_Frame, tag="msg"):
    """A message. Stored on the bus without ``cursor``; the edge adds the
    INBOX cursor when it sends it down a socket."""

    conv: str
    seq: int
    id: str
    from_: str = msgspec.field(name="from")
    body: str = ""
    ts: int = 0
    kind: str = "user"
    cursor: int | None = None


class Receipt(_Frame, tag="receipt"):
    conv: str
    user: str
    delivered: int
    read: int


class TypingEvent(_Frame, tag="typing"):
    conv: str
    user: str


class History(_Frame, tag="history"):
    conv: str
    messages: list[Msg]
    more: bool
    ref: str | None = None


class Conv(_Frame, tag="conv"):
    conv: str
    members: list[str]
    title: str = ""
    ref: str | None = None


class ConvSummary(msgspec.Struct, omit_defaults=False):
    """One conversation of a ``conv.list`` answer. ``read`` is the caller's
    own read watermark (unread = ``last_seq - read``; sending marks one's
    conversation read up to the message sent); ``last`` is the last message
    (a ``msg`` without cursor) or null when there is none yet."""

    conv: str
    members: list[str]
    title: str = ""
    last_seq: int = 0
    read: int = 0
    last: Msg | None = None


class ConvList(_Frame, tag="conv.list"):
    """The answer to ``conv.list``: newest activity first. ``more``: the
    caller has more conversations than the answer holds (conv_list_max, or
    half the socket's send queue in bytes)."""

    convs: list[ConvSummary]
    more: bool = False
    ref: str | None = None


class Presence(_Frame, tag="presence"):
    user: str
    online: bool
    last_seen: int | None = None


class Ok(_Frame, tag="ok"):
    """Success of a frame that has no other answer (``push.register``), or
    the end of a multi-frame answer (``receipts``: after the last ``receipt``);
    sent when the frame carried an ``id``."""

    ref: str


class Error(msgspec.Struct, tag_field="type", tag="error"):
    ref: str | None
    code: str
    message: str
    retry: bool


ServerFrame = (Welcome | Synced | Resync | Sent | Msg | Receipt | TypingEvent | History | Conv | ConvList | Presence
               | Ok | Error)

_encoder = msgspec.json.Encoder()
_client_decoder = msgspec.json.Decoder(ClientFrame)
_server_decoder = msgspec.json.Decoder(ServerFrame)


class _RefOnly(msgspec.Struct):
    """The ``id`` of a frame, and nothing else (other fields are skipped)."""

    id: str | None = None


_ref_decoder = msgspec.json.Decoder(_RefOnly)

encode = _encoder.encode
decode_server_frame = _server_decoder.decode


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
        if len(frame.body.encode()) > max_body:
            raise LimitExceeded(f"body exceeds {max_body} bytes")
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


Platform = Literal["apns", "fcm", "webpush"]
