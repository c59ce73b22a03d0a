"""The websockets surface edge/transport.py drives (see :mod:`switchboard.compat`).

The edge does not use websockets' asyncio server: it runs the sans-I/O
``ServerProtocol`` under its own ``asyncio.Protocol`` (edge/transport.py says
why), so it depends on more of the library than an ordinary user does, and is
written against 17.x. What it borrows, checked at import:

- ``State.CONNECTING`` / ``State.OPEN``, exported here as :data:`CONNECTING`
  and :data:`OPEN` (compared by identity per frame: a module global, no
  call). websockets.protocol's module-level aliases of the same names are
  not in its ``__all__``, so the edge does not use them.
- ``SEND_EOF`` being ``b""``: the last chunk of ``data_to_send()`` when the
  protocol wants the TCP connection half-closed; the transport tests for an
  empty last chunk.
- the ``ServerProtocol`` methods and properties listed in
  :data:`PROTOCOL_SURFACE`;
- ``http11.Request``'s ``method`` and ``protocol`` fields (edge/httpreq.py
  builds requests for non-GET methods, which websockets does not parse).
- ``Protocol.writes``: the list of byte chunks ``data_to_send()`` hands out
  (and resets), to which ``send_frame`` appends each serialized frame. The
  edge appends its outgoing text frames there itself (:func:`text_frame`),
  in the very order websockets' own frames (pongs, the close) take: 3.6 µs
  per frame through ``send_text`` (a ``Frame``, its checks, ``serialize``)
  against ~0.6 µs, and a 1:1 message is three frames out of an edge.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from websockets.http11 import Request
from websockets.protocol import SEND_EOF, State
from websockets.server import ServerProtocol

from switchboard import compat

DIST = "websockets"
# Same specifier as pyproject.toml's requirement.
SUPPORTED = ">=17,<18"

PROTOCOL_SURFACE = (
    "receive_data", "receive_eof", "events_received", "data_to_send", "close_expected",
    "send_text", "send_ping", "send_close", "fail", "accept", "send_response", "state", "close_code",
)


def _send_eof() -> object:
    if SEND_EOF != b"":
        raise AttributeError("SEND_EOF is not b''")
    return SEND_EOF


def _writes_list() -> object:
    p = ServerProtocol()
    writes = vars(p).get("writes")
    if type(writes) is not list:
        raise AttributeError("no Protocol.writes list")
    hand_out = getattr(ServerProtocol, "data_to_send", None)  # if gone, its own probe names it
    if hand_out is not None and hand_out(p) is not writes:
        raise AttributeError("data_to_send() does not hand out Protocol.writes")
    return writes


def _protocol_attr(name: str) -> Callable[[], object]:
    return lambda: getattr(ServerProtocol, name)


def _request_field(name: str) -> Callable[[], object]:
    def probe() -> object:
        fields = {f.name for f in dataclasses.fields(Request)}
        if name not in fields:
            raise AttributeError(name)
        return name

    return probe


BORROWED: dict[str, Callable[[], object]] = {
    "websockets.protocol.State.CONNECTING": lambda: State.CONNECTING,
    "websockets.protocol.State.OPEN": lambda: State.OPEN,
    "websockets.protocol.SEND_EOF == b''": _send_eof,
    **{f"websockets.server.ServerProtocol.{n}": _protocol_attr(n) for n in PROTOCOL_SURFACE},
    "websockets.http11.Request.method": _request_field("method"),
    "websockets.http11.Request.protocol": _request_field("protocol"),
    "websockets.protocol.Protocol.writes (a list that data_to_send() hands out)": _writes_list,
}


def check() -> str:
    """Raise IncompatibleLibrary unless the installed websockets is supported
    and has everything borrowed; return its version."""
    return compat.check(DIST, SUPPORTED, BORROWED)


VERSION = check()

CONNECTING = State.CONNECTING
OPEN = State.OPEN

# First byte of an unfragmented text frame: FIN + opcode 1 (RFC 6455, 5.2).
_FIN_TEXT = 0x81


def text_frame(data: bytes) -> bytes:
    """One unfragmented, unmasked text frame carrying ``data`` (a server's
    frame: servers do not mask; no extension is negotiated by the edge, so
    no RSV bit is set). Byte for byte what ``Frame(TEXT, data).serialize(
    mask=False, extensions=[])`` produces (a unit test compares them)."""
    n = len(data)
    if n < 126:
        return bytes((_FIN_TEXT, n)) + data
    if n < 65536:
        return bytes((_FIN_TEXT, 126, n >> 8, n & 0xFF)) + data
    return bytes((_FIN_TEXT, 127)) + n.to_bytes(8, "big") + data


__all__ = ["CONNECTING", "OPEN", "ServerProtocol", "check", "text_frame"]
