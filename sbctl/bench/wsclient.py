"""A lean WebSocket client for the load generator: RFC 6455 by hand.

Why by hand: the load generator shares the 2 cores with the fabric it
measures, so its own cost per message must be small. websockets' asyncio
client (a task per connection, a future per send, a queue per read) cost
90-160 µs of CPU per message here; this costs a fraction (figures in
docs/benchmarks.md). What it does:

- HTTP/1.1 upgrade written and parsed by hand (``Sec-WebSocket-Accept``
  checked), no extensions offered (the edge then sends no compressed frames);
- client frames are text frames, masked as RFC 6455 §5.3 requires, with
  websockets' C ``apply_mask``; they are appended to a per-socket buffer and
  :class:`Flusher` writes every dirty socket once per event-loop tick;
- server frames are parsed out of one buffer per ``data_received`` and handed
  to :meth:`WsConn.on_text` inline (no task, no queue); fragmented messages
  are joined; pings answered with pongs; a close frame is answered and its
  code kept.

Subclasses implement ``on_open``, ``on_text`` and ``on_closed``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import random
from urllib.parse import urlsplit

try:  # the C version ships with websockets (a hard dependency)
    from websockets.speedups import apply_mask
except ImportError:  # a pure-Python fallback
    def apply_mask(data: bytes, mask: bytes) -> bytes:
        n = len(data)
        key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
        return (int.from_bytes(data, "big") ^ key).to_bytes(n, "big")

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# A server's upgrade response is a few hundred bytes; anything this large
# without an end of headers is not a WebSocket server.
MAX_HANDSHAKE_BYTES = 64 * 1024

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


class HandshakeError(Exception):
    """The server did not switch protocols; ``status`` is its HTTP status (0:
    not HTTP), ``retry_after`` its Retry-After header (None: none)."""

    def __init__(self, status: int, reason: str, retry_after: str | None = None) -> None:
        super().__init__(f"HTTP {status}: {reason}")
        self.status = status
        self.retry_after = retry_after


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked client frame."""
    n = len(payload)
    mask = random.randbytes(4)  # any 4 bytes the server cannot predict; randbytes is ~5x cheaper than urandom
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + mask + apply_mask(payload, mask)


class Flusher:
    """One ``transport.write`` per socket per event-loop tick.

    Frames are appended to a socket's buffer; the first frame of a tick marks
    the socket dirty and (once per tick) schedules :meth:`flush`.
    """

    __slots__ = ("_loop", "_dirty", "_scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._dirty: list[WsConn] = []
        self._scheduled = False

    def mark(self, conn: WsConn) -> None:
        self._dirty.append(conn)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        for c in dirty:
            out = c._out
            c._out = []
            t = c.transport
            if t is not None and out:
                t.write(out[0] if len(out) == 1 else b"".join(out))


class WsConn(asyncio.Protocol):
    """One client WebSocket connection (reusable: :meth:`connect` again after a close)."""

    def __init__(self, flusher: Flusher) -> None:
        self.flusher = flusher
        self.transport: asyncio.Transport | None = None
        self.is_open = False
        self.close_code: int | None = None
        self._out: list[bytes] = []
        self._buf = b""
        self._frag: list[bytes] = []
        self._handshake: asyncio.Future[None] | None = None
        self._request = b""
        self._accept = b""

    # -- to implement ---------------------------------------------------------------------------
    def on_text(self, payload: bytes) -> None:  # abstract: a subclass implements it
        raise NotImplementedError

    def on_closed(self) -> None:
        """The connection is gone (after open; not called for a failed handshake)."""

    # -- connect / write / close ---------------------------------------------------------------
    async def connect(self, url: str, *, local_addr: tuple[str, int] | None = None, timeout: float = 60.0) -> None:
        """TCP connect and upgrade; raises :class:`HandshakeError` or ``OSError``."""
        u = urlsplit(url)
        host, port = u.hostname or "127.0.0.1", u.port or 80
        path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        key = base64.b64encode(os.urandom(16))
        self._accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
        self._request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                         f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\n"
                         f"Sec-WebSocket-Version: 13\r\n\r\n").encode()
        loop = asyncio.get_running_loop()
        self._handshake = loop.create_future()
        transport, _ = await asyncio.wait_for(
            loop.create_connection(lambda: self, host, port, local_addr=local_addr), timeout)
        try:
            await asyncio.wait_for(asyncio.shield(self._handshake), timeout)
        except BaseException:
            transport.abort()
            raise

    def send_text(self, text: str) -> None:
        """Queue a text frame; written with this tick's other frames."""
        if self.transport is None:
            return
        if not self._out:
            self.flusher.mark(self)
        self._out.append(client_frame(OP_TEXT, text.encode()))

    def close(self, code: int = 1000) -> None:
        if self.transport is not None and self.is_open:
            self._out.append(client_frame(OP_CLOSE, code.to_bytes(2, "big")))
            self.transport.write(b"".join(self._out))
            self._out = []
            self.is_open = False
            self.transport.close()

    # -- asyncio.Protocol ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.is_open = False
        self.close_code = None
        self._buf = b""
        self._frag = []
        self._out = []
        transport.write(self._request)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        was_open = self.is_open
        self.is_open = False
        self.transport = None
        self._out = []
        hs = self._handshake
        if hs is not None and not hs.done():
            hs.set_exception(ConnectionError("closed during the handshake"))
        if was_open or self.close_code is not None:
            self.on_closed()

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        if not self.is_open:
            buf = self._upgrade(buf)
            if buf is None:
                return
        n = len(buf)
        pos = 0
        while n - pos >= 2:
            b0 = buf[pos]
            ln = buf[pos + 1] & 0x7F
            hdr = 2
            if ln == 126:
                if n - pos < 4:
                    break
                ln = int.from_bytes(buf[pos + 2:pos + 4], "big")
                hdr = 4
            elif ln == 127:
                if n - pos < 10:
                    break
                ln = int.from_bytes(buf[pos + 2:pos + 10], "big")
                hdr = 10
            masked = buf[pos + 1] & 0x80  # servers do not mask; tolerate one that does
            if masked:
                hdr += 4
            end = pos + hdr + ln
            if end > n:
                break
            payload = buf[pos + hdr:end]
            if masked:
                payload = apply_mask(payload, buf[pos + hdr - 4:pos + hdr])
            pos = end
            op = b0 & 0x0F
            if op == OP_TEXT and b0 & 0x80:
                self.on_text(payload)
            elif op in (OP_TEXT, OP_BINARY, OP_CONT):
                self._frag.append(payload)
                if b0 & 0x80:
                    whole, self._frag = b"".join(self._frag), []
                    self.on_text(whole)
            elif op == OP_PING:
                if not self._out:
                    self.flusher.mark(self)
                self._out.append(client_frame(OP_PONG, payload))
            elif op == OP_CLOSE:
                self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                self.close(self.close_code if self.close_code not in (1005, 1006) else 1000)
                return
        self._buf = buf[pos:] if pos < n else b""

    def _upgrade(self, buf: bytes) -> bytes | None:
        """Parse the upgrade response; the bytes after it, or ``None`` while incomplete/failed."""
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HANDSHAKE_BYTES:
                self._fail(0, "no end of headers")
            else:
                self._buf = buf
            return None
        head = buf[:end].decode("latin-1").split("\r\n")
        parts = head[0].split(" ", 2)
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
        if status != 101:
            self._fail(status, parts[2] if len(parts) > 2 else head[0], headers.get("retry-after"))
            return None
        if headers.get("sec-websocket-accept", "").encode() != self._accept:
            self._fail(101, "bad Sec-WebSocket-Accept")
            return None
        self.is_open = True
        hs = self._handshake
        if hs is not None and not hs.done():
            hs.set_result(None)
        self.on_open()
        return buf[end + 4:]

    def on_open(self) -> None:
        """The upgrade succeeded (frames may follow in the same read)."""

    def _fail(self, status: int, reason: str, retry_after: str | None = None) -> None:
        self._buf = b""
        hs = self._handshake
        if hs is not None and not hs.done():
            hs.set_exception(HandshakeError(status, reason, retry_after))
        if self.transport is not None:
            self.transport.close()
