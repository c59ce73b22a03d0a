"""WebSocket server: websockets' sans-I/O ``ServerProtocol`` under a plain ``asyncio.Protocol``.

Why not ``websockets.asyncio.server``: it costs a task per connection and a
future plus several awaits per frame (24 µs per frame in and out, against
5 µs here when reads batch; shared/notes/hot-path-measured.md). Here:

- bytes in -> ``ServerProtocol.receive_data`` -> each complete text (or
  binary) message goes synchronously to ``handler.on_frame(data)``;
- frames out are serialized here (:func:`switchboard.compat.websockets.text_frame`)
  and appended to the protocol's own write list, in order with its pongs and
  close (``send_text`` costs 6x as much per frame), and the bytes from
  ``data_to_send()`` are written with ONE ``transport.write`` per socket per
  loop tick (one edge-wide ``call_soon`` flush over the sockets written to);
- backpressure: above the transport's high-water mark (``pause_writing``) new
  frames are held in the connection's outbox. A backed-up socket holds what
  its transport had buffered when it paused plus its outbox; past
  ``outbox_bytes`` the client is too slow and is closed with 4008 (it resumes
  from its cursor). All backed-up sockets together hold at most
  ``edge_outbox_bytes``: over it the one holding the most is closed (4008),
  then the next, until under (rare: no scan on the way there, one sum kept);
- keepalive: one edge-wide timer pings sockets idle for ``ping_interval`` and
  fails those that send nothing within ``ping_timeout``: no task per socket;
- HTTP: ``route(request)`` answers plain requests (or refuses the upgrade);
  ``None`` means upgrade, then ``accept(conn)`` makes the handler (or closes).
  ``refuse(conn, head)``, if given, sees a whole GET request's bytes before
  they are parsed and may answer them with canned bytes (the connection
  then closes): the edge's admission refusals in a reconnect storm, where
  parsing each request and serializing each 503 cost more than the rest.
  Or it returns ``HOLD``: the request waits unanswered (bytes that follow
  are kept) until the edge calls ``conn.proceed()`` or answers it with
  ``conn.answer_raw()`` (edge/lobby.py).
  A request whose method is not GET (websockets parses only body-less GETs)
  is read by :class:`edge.httpreq.BodyReader` and answered by
  ``http(request, body)``; without ``http`` it goes to websockets (400).
"""

from __future__ import annotations

import asyncio
import enum
import ssl as ssl_
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Protocol

from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response

from edge.httpreq import BodyReader, error_response
from switchboard.compat.websockets import (  # checked against the pinned range
    CONNECTING,
    OPEN,
    ServerProtocol,
    text_frame,
)
from switchboard.log import get as get_logger

CLOSE_SLOW_CONSUMER = 4008
# Transport buffer sizes (bytes) at which writing pauses / resumes: above
# 64 KiB the kernel's socket buffer is full and the peer is not reading;
# frames then wait in the connection's own byte-bounded outbox.
HIGH_WATER = 64 * 1024
LOW_WATER = 16 * 1024
# The keepalive sweep runs this many times per min(ping_interval,
# ping_timeout): a dead peer is noticed at most a quarter late.
SWEEPS_PER_INTERVAL = 4
# Slowest sweep (seconds); also bounds how stale the "idle since" clock gets.
MAX_SWEEP = 5.0
PING_DATA = b"sb"
# Bytes a held request (refuse() said HOLD) may grow to while it waits: the
# request itself (a few hundred bytes) plus whatever a client sends before
# its 101, which a well-behaved one does not.
MAX_HELD_BYTES = 16 * 1024
OP_TEXT, OP_BINARY, OP_CONT, OP_PING, OP_CLOSE = Opcode.TEXT, Opcode.BINARY, Opcode.CONT, Opcode.PING, Opcode.CLOSE

_log = get_logger("edge.transport")


class Verdict(enum.Enum):
    HOLD = "hold"  # refuse(): keep the request unanswered; the caller lets it proceed later


HOLD = Verdict.HOLD


class Handler(Protocol):
    """What a connection delivers to once upgraded (the session)."""

    def on_frame(self, data: bytes) -> None: ...

    def on_slow_consumer(self) -> None: ...

    def on_close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class WsConfig:
    max_size: int  # bytes of one incoming message; above: close 1009 by the protocol
    outbox_bytes: int  # bytes a backed-up socket may hold (transport buffer + outbox) before close 4008
    ping_interval: float  # seconds without input before a ping (<= 0: no keepalive)
    ping_timeout: float  # seconds to answer it (any input counts) before close 1011
    close_timeout: float  # seconds the closing handshake may take before the TCP connection is cut
    # Bytes all backed-up sockets may hold together; over it the one holding
    # the most is closed 4008. 0: no edge-wide bound.
    edge_outbox_bytes: int = 0
    # Bytes of body a plain (non-GET) HTTP request may carry; above: 413.
    http_body_bytes: int = 4096
    # Seconds a new TCP connection has to finish its TLS handshake and send
    # its HTTP request: a socket that never speaks would otherwise hold a
    # file descriptor forever (the edge passes Settings.open_timeout).
    open_timeout: float = 10.0


class WsServer:
    """Listens, owns the connections, flushes their writes once per tick and pings idle ones."""

    def __init__(self, *, config: WsConfig, route: Callable[[Request], Response | None],
                 accept: Callable[[WsConn], Handler | None],
                 http: Callable[[Request, bytes], Response] | None = None,
                 refuse: Callable[[WsConn, bytes], bytes | Verdict | None] | None = None) -> None:
        self.config = config
        self.route = route
        self.refuse = refuse
        self.accept = accept
        self.http = http
        self.conns: set[WsConn] = set()
        # Backed-up (write-paused) connections and the bytes they hold together.
        self.backed: set[WsConn] = set()
        self.held = 0
        self.loop = asyncio.get_running_loop()
        self._dirty: list[WsConn] = []
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._empty: asyncio.Future[None] | None = None  # set when the last connection goes (shutdown)

    async def listen(self, host: str, port: int, *, ssl: ssl_.SSLContext | None = None) -> int:
        """Start serving; returns the bound port (``port`` 0 picks one).

        ``ssl``: serve ``wss://`` with this server context. It stays the
        listener's for good, so loading a renewed certificate into it
        (switchboard.tls.reload_server) changes what new handshakes present
        without touching open connections. A TCP connection that does not
        finish its handshake within ``config.open_timeout`` is dropped, like one that
        sends no HTTP request."""
        # backlog 4096: a reconnect storm queues in the kernel, admission control then sheds it.
        self._server = await self.loop.create_server(
            lambda: WsConn(self), host, port, backlog=4096, ssl=ssl,
            ssl_handshake_timeout=self.config.open_timeout if ssl is not None else None)
        self.start_keepalive()
        bound: int = self._server.sockets[0].getsockname()[1]
        return bound

    def start_keepalive(self) -> None:
        """Start pinging idle connections and dropping silent ones (``listen``
        does; a server driven without a listener, as in the unit tests, calls
        it itself). Off when ``config.ping_interval`` is 0."""
        if self.config.ping_interval > 0 and self._sweeper is None:
            self._sweeper = self.loop.call_later(self._sweep_every(), self._sweep)

    def stop_keepalive(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    async def close(self, code: int, reason: str) -> None:
        """Stop listening, close every connection with ``code``, wait for them
        up to ``close_timeout`` (then cut them off)."""
        if self._server is not None:
            self._server.close()
        self.stop_keepalive()
        for c in tuple(self.conns):
            c.close(code, reason)
        if self.conns:
            self._empty = self.loop.create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._empty), self.config.close_timeout + 0.5)
            except TimeoutError:
                for c in tuple(self.conns):
                    c.transport.abort()
        if self._server is not None:
            try:  # every connection is gone or aborted by now; do not hang on a straggler
                await asyncio.wait_for(self._server.wait_closed(), self.config.close_timeout)
            except TimeoutError:
                pass
            self._server = None

    # -- called by connections -------------------------------------------------
    def dirty(self, conn: WsConn) -> None:
        if not self._dirty:
            self.loop.call_soon(self._flush)
        self._dirty.append(conn)

    def gone(self, conn: WsConn) -> None:
        self.conns.discard(conn)
        if not self.conns and self._empty is not None and not self._empty.done():
            self._empty.set_result(None)

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        for c in dirty:
            try:
                c.flush()
            except Exception:  # noqa: BLE001 - one socket's failed write must not leave the rest of the tick unwritten
                _log.exception("socket write failed")
                c.transport.abort()

    def shed(self) -> None:
        """Over ``edge_outbox_bytes``: close the open backed-up connections
        holding the most (4008) until under it."""
        limit = self.config.edge_outbox_bytes
        while self.held > limit:
            victim = max((c for c in self.backed if c.proto.state is OPEN), key=_held_bytes, default=None)
            if victim is None:
                return
            _log.info("edge send queue bound: closing the socket holding the most", held=victim.held_bytes,
                      edge_held=self.held, limit=limit)
            victim._slow_consumer()

    # -- keepalive -----------------------------------------------------------------
    def _sweep_every(self) -> float:
        c = self.config
        return min(MAX_SWEEP, max(0.01, min(c.ping_interval, c.ping_timeout) / SWEEPS_PER_INTERVAL))

    def _sweep(self) -> None:
        now = self.loop.time()
        interval, timeout = self.config.ping_interval, self.config.ping_timeout
        for c in tuple(self.conns):
            if c.rx:  # heard from since the last sweep: alive
                c.rx = False
                c.idle_since = now
                c.ping_at = 0.0
            elif c.proto.state is not OPEN or c.reading_paused:
                continue  # closing (close_timeout applies), or not read on purpose (hello replay)
            elif not c.ping_at:
                if now - c.idle_since >= interval:
                    c.ping_at = now
                    c.proto.send_ping(PING_DATA)
                    c.mark_dirty()
            elif now - c.ping_at >= timeout:
                c.fail(1011, "keepalive ping timeout")
                c.transport.close()  # a dead peer will not answer the close either
        self._sweeper = self.loop.call_later(self._sweep_every(), self._sweep)


class WsConn(asyncio.Protocol):
    """One socket. ``send`` appends a text frame; the write happens at the end of the tick."""

    __slots__ = ("server", "proto", "transport", "handler", "request", "rx", "idle_since", "ping_at",
                 "frames_out", "_pause_reasons", "_dirty", "_paused", "_held", "_tbuf", "_frags", "_timer",
                 "_drain", "_pre", "_body", "_waiting")

    def __init__(self, server: WsServer) -> None:
        self.server = server
        self.proto = ServerProtocol(max_size=server.config.max_size)  # no extensions: no compression
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.handler: Handler | None = None
        self.request: Request | None = None
        self.rx = True  # something arrived since the last keepalive sweep
        self.idle_since = server.loop.time()
        self.ping_at = 0.0  # when the outstanding ping was sent; 0: none
        self.frames_out = 0
        # Why the handler paused reading ("hello", "sends"): its pongs cannot
        # be read meanwhile; reading resumes when no reason is left.
        self._pause_reasons: set[str] = set()
        self._dirty = False
        self._paused = False
        self._held = bytearray()  # frames waiting while the transport is paused
        # Bytes the transport had buffered when it paused (counted as held
        # until it resumes: it only shrinks meanwhile, nothing more is written).
        self._tbuf = 0
        self._frags: list[bytes] | None = None  # a fragmented message being assembled
        self._timer: asyncio.TimerHandle | None = None  # handshake deadline, then close deadline
        self._drain: asyncio.Future[None] | None = None
        # Before the first request is known to be a GET: its first bytes
        # (``_pre``), or the reader of a request with a body (``_body``).
        self._pre: bytes | None = b"" if server.http is not None else None
        self._body: BodyReader | None = None
        self._waiting: bytes | None = None  # a held request's bytes (refuse() said HOLD)

    # -- held requests (edge/lobby.py) ------------------------------------------------------
    @property
    def gone(self) -> bool:
        """The peer closed or the connection was cut."""
        return self.transport.is_closing()

    def proceed(self) -> None:
        """Go on with a held request: parse it and answer it now."""
        data, self._waiting = self._waiting, None
        if data and not self.transport.is_closing():
            self._receive(data)

    def answer_raw(self, answer: bytes) -> None:
        """Answer a held request with ``answer`` and close."""
        self._waiting = None
        if not self.transport.is_closing():
            self._refused(answer)

    # -- what the session uses ---------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self.proto.state is OPEN

    @property
    def close_code(self) -> int | None:
        """The code the peer closed with (1006 if it did not), None while open."""
        return self.proto.close_code

    def send(self, data: bytes) -> bool:
        """Queue one text frame (UTF-8 bytes); False if the socket is closing."""
        proto = self.proto
        if proto.state is not OPEN:
            return False
        proto.writes.append(text_frame(data))  # what send_text(data) appends, at a sixth of its cost
        self.frames_out += 1
        if not self._dirty:
            self._dirty = True
            self.server.dirty(self)
        return True

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake (after what is queued); cut off after close_timeout."""
        state = self.proto.state
        if state is OPEN:
            self.proto.send_close(code, reason)
            self.flush()
            self._release()  # gone within close_timeout: no longer counted against the bounds
            self._close_deadline()
        elif state is CONNECTING:
            self.transport.abort()

    def fail(self, code: int, reason: str) -> None:
        """Close at once with ``code``, dropping what is held (slow or dead peer)."""
        self._release()
        if self.proto.state is OPEN:
            self.proto.fail(code, reason)
            self.flush()
            self._close_deadline()

    async def drained(self) -> None:
        """Wait until the transport takes writes again and nothing is held."""
        while (self._paused or self._held) and self.proto.state is OPEN:
            self._drain = self.server.loop.create_future()
            await self._drain

    @property
    def held_bytes(self) -> int:
        """Bytes held for this socket while it is backed up (0 otherwise)."""
        return len(self._held) + self._tbuf

    @property
    def reading_paused(self) -> bool:
        return bool(self._pause_reasons)

    def pause_reading(self, reason: str = "handler") -> None:
        if not self._pause_reasons:
            self.transport.pause_reading()
        self._pause_reasons.add(reason)

    def resume_reading(self, reason: str = "handler") -> None:
        if reason not in self._pause_reasons:
            return
        self._pause_reasons.discard(reason)
        if not self._pause_reasons and not self.transport.is_closing():
            self.transport.resume_reading()

    # -- writing -----------------------------------------------------------------------------
    def mark_dirty(self) -> None:
        if not self._dirty:
            self._dirty = True
            self.server.dirty(self)

    def flush(self) -> None:
        """Write what the protocol produced since the last flush, in one write."""
        self._dirty = False
        chunks = self.proto.data_to_send()
        if not chunks:
            return
        eof = not chunks[-1]  # SEND_EOF (b""): half-close after writing
        if eof:
            chunks.pop()
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if self._paused and not eof and self.proto.state is OPEN:
            self._held += data
            self.server.held += len(data)
            self._check_held()
            return
        t = self.transport
        if t.is_closing():  # gone (uvloop raises on a write to a closed transport); connection_lost cleans up
            return
        if self._held:  # closing while backed up: the close frame goes after them
            self.server.held -= len(self._held)
            data = bytes(self._held) + data
            self._held.clear()
        if data:
            t.write(data)
            if self._paused and self.proto.state is OPEN:
                self._check_held()  # this write backed the socket up
        if eof and not t.is_closing():
            if t.can_write_eof():
                t.write_eof()
            else:
                t.close()

    def _check_held(self) -> None:
        """A backed-up socket grew: enforce its bound, then the edge's."""
        server = self.server
        if len(self._held) + self._tbuf > server.config.outbox_bytes:
            self._slow_consumer()
        elif server.config.edge_outbox_bytes and server.held > server.config.edge_outbox_bytes:
            server.shed()

    def _release(self) -> None:
        """No longer counted as backed up (resumed, closing or gone)."""
        n = len(self._held) + self._tbuf
        if n:
            self.server.held -= n
            self._held.clear()
            self._tbuf = 0
        self.server.backed.discard(self)

    def _slow_consumer(self) -> None:
        self._release()
        if self.handler is not None:
            self.handler.on_slow_consumer()
        self.close(CLOSE_SLOW_CONSUMER, "slow consumer: reconnect and resume from your cursor")

    def pause_writing(self) -> None:
        # Called from inside transport.write: only account here; the bounds
        # are checked by the writer once the write returned (_check_held).
        self._paused = True
        if self.proto.state is OPEN:
            tbuf = self.transport.get_write_buffer_size()
            self.server.held += tbuf - self._tbuf
            self._tbuf = tbuf
            self.server.backed.add(self)

    def resume_writing(self) -> None:
        self._paused = False
        data = bytes(self._held) if self._held else b""
        self._release()
        if data:
            self.transport.write(data)
            if self._paused and self.proto.state is OPEN:
                self._check_held()
        self._wake()

    def _wake(self) -> None:
        d, self._drain = self._drain, None
        if d is not None and not d.done():
            d.set_result(None)

    # -- timers ---------------------------------------------------------------------------------
    def _close_deadline(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.server.loop.call_later(self.server.config.close_timeout, self._cut)

    def _cut(self) -> None:
        self._timer = None
        self.transport.abort()

    # -- asyncio.Protocol ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)
        self.server.conns.add(self)
        self._timer = self.server.loop.call_later(self.server.config.open_timeout, self._cut)

    def data_received(self, data: bytes) -> None:
        self.rx = True
        if self._waiting is not None:  # held: nothing is parsed until it proceeds
            self._waiting += data
            if len(self._waiting) > MAX_HELD_BYTES:  # a client does not speak before its 101
                self.transport.abort()
            return
        if self._pre is not None:  # the connection's first bytes only
            data = self._before_request(data)
            if not data:
                return
        self._receive(data)

    def _receive(self, data: bytes) -> None:
        proto = self.proto
        proto.receive_data(data)
        try:
            for ev in proto.events_received():
                if ev.__class__ is not Frame:
                    self._handshake(ev)  # type: ignore[arg-type]
                    continue
                op = ev.opcode
                # ev.data: websockets types it bytes-like (for frames one
                # builds); its parser gives bytes for received frames.
                if op is OP_TEXT or op is OP_BINARY:
                    if ev.fin:
                        if self.handler is not None:
                            self.handler.on_frame(ev.data)  # type: ignore[arg-type]
                    else:
                        self._frags = [ev.data]  # type: ignore[list-item]
                elif op is OP_CONT:
                    if self._frags is not None:
                        self._frags.append(ev.data)  # type: ignore[arg-type]
                        if ev.fin:
                            whole, self._frags = b"".join(self._frags), None
                            if self.handler is not None:
                                self.handler.on_frame(whole)
                elif op is OP_PING or op is OP_CLOSE:
                    self.mark_dirty()  # the protocol queued a pong, or the close echo
        except Exception:  # noqa: BLE001 - one connection's bug must not take the edge down
            _log.exception("connection handler failed")
            self.fail(1011, "internal error")
        if proto.state is not OPEN:  # closing: failed parse (1002/1007/1009) or a close frame
            self.mark_dirty()
            if proto.close_expected() and self._timer is None:
                self._close_deadline()

    def _before_request(self, data: bytes) -> bytes:
        """Bytes for websockets' parser once the request is a GET; a request
        with another method is read and answered here (returns b"")."""
        if self._body is None:
            pre = self._pre + data  # type: ignore[operator]
            if len(pre) < 4 and b" " not in pre:
                self._pre = pre  # too short to tell the method yet
                return b""
            if pre.startswith(b"GET "):
                self._pre = None
                # A whole request and nothing after it (closing with unread
                # bytes would reset the connection and lose the answer).
                if self.server.refuse is not None and pre.endswith(b"\r\n\r\n"):
                    answer = self.server.refuse(self, pre)
                    if answer is HOLD:
                        self._waiting = pre
                        return b""
                    if answer is not None:
                        self._refused(answer)
                        return b""
                return pre
            self._body = BodyReader(self.server.config.http_body_bytes)
            data = pre
        got = self._body.feed(data)
        if got is None:
            return b""
        self._pre = self._body = None
        if not isinstance(got, Response):
            self.request = got[0]
            try:
                got = self.server.http(*got)  # type: ignore[misc]
            except Exception:  # noqa: BLE001 - one request's bug must not take the edge down
                _log.exception("HTTP handler failed")
                got = error_response(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error")
        self._answer(got)
        return b""

    def _refused(self, answer: bytes) -> None:
        """Write ``answer`` and close (FIN after it): no parser, no handler."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.transport.write(answer)
        self.transport.close()

    def _handshake(self, request: Request) -> None:
        self.request = request
        response = self.server.route(request)
        if response is None:
            response = self.proto.accept(request)  # 101, or an error status for a bad upgrade
        self._answer(response)

    def _answer(self, response: Response) -> None:
        proto = self.proto
        proto.send_response(response)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.mark_dirty()
        if proto.state is OPEN:
            self.handler = self.server.accept(self)
        elif proto.close_expected():
            self._close_deadline()

    def eof_received(self) -> bool | None:
        self.proto.receive_eof()
        self.flush()
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.proto.receive_eof()  # idempotent: the protocol is CLOSED now
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._release()
        self._wake()
        self.server.gone(self)
        h, self.handler = self.handler, None
        if h is not None:
            try:
                h.on_close()
            except Exception:  # noqa: BLE001
                _log.exception("connection close handler failed")


def _held_bytes(c: WsConn) -> int:
    return c.held_bytes


__all__ = ["CLOSE_SLOW_CONSUMER", "HOLD", "Handler", "Verdict", "WsConfig", "WsConn", "WsServer"]
