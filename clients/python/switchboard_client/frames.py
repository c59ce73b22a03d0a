"""Wire protocol v1: the typed frames a client and an edge exchange.

One JSON object per WebSocket text frame, discriminated by ``type``. Field
names and frame types are fixed for v1; new fields and frame types may be
added, none renamed or removed (docs/protocol.md, the prose reference).

The frames are defined here, once: the SDK encodes client frames and decodes
server frames with them, and the server's ``switchboard.frames`` re-exports
them and adds what only an edge does (decoding and validating a client's
frame into coded errors, splicing a cursor into a stored message).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec


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
_server_decoder = msgspec.json.Decoder(ServerFrame)

encode = _encoder.encode
decode_server_frame = _server_decoder.decode

Platform = Literal["apns", "fcm", "webpush"]
