"""The lean NATS connection of the hot path: publish, subscribe, keepalive,
reconnect, auth and TLS over :mod:`switchboard.bus.proto`.

Why: nats-py pays a coroutine per publish and a task plus a queue per
subscription; measured here 1.6 µs per publish, 4.1 µs per delivered message
and 19.6 µs per request/reply, against 0.33 / 0.9 / 2.1 µs for a minimal
``asyncio.Protocol`` client (shared/notes/hot-path-measured.md). The edge and
the sequencer do a few of these per chat message, so this is their largest
single cost. How:

- ``publish`` is synchronous: it appends PUB/HPUB to one output buffer, and one
  ``loop.call_soon`` flush writes the buffer once per event-loop tick.
- handlers run inline in ``data_received`` (no task, no queue, no future); they
  must not block. An exception is logged and the read goes on.
- keepalive: server PINGs are answered; the client PINGs every
  ``ping_interval`` and treats ``max_pings_out`` unanswered PINGs as a dead
  connection (a peer gone without FIN/RST is otherwise never noticed).
- reconnect across the seeds plus the servers the cluster advertises
  (``connect_urls`` in INFO, also in async INFO), ``reconnect_wait`` between
  attempts on one server plus jitter; CONNECT and every SUB are re-sent, and
  publishes made while disconnected are buffered up to ``pending_limit`` bytes
  and sent after the SUBs. A server in lame-duck mode is logged and moved to
  the back of the list; it closes us and we reconnect elsewhere.
- auth: user/password or token (arguments or URL), nkey seed or a ``.creds``
  file (JWT + seed; the server's nonce is signed with the ``nkeys`` package);
  TLS with an ``ssl.SSLContext``, a ``tls://`` URL or the server's
  ``tls_required`` (upgraded with ``loop.start_tls`` after INFO; the
  ``tls_first`` handshake is not supported).
- ``-ERR``: an authorization error fails the connect with a :class:`BusError`
  that says so; a "Permissions Violation" is logged and counted and the
  connection stays; other errors are logged (the server closes the socket
  after them, and the client reconnects).

Not here: JetStream API, KV, object store, micro services, drain: nats-py
stays for those (cold paths). Subjects given to ``publish`` are not checked
(hot path; they come from validated ids); ``subscribe`` checks its subject.
"""

from __future__ import annotations

import asyncio
import base64
import random
import secrets
import ssl
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from switchboard import log
from switchboard.bus.proto import (
    OP_ERR,
    OP_INFO,
    OP_PING,
    OP_PONG,
    PING,
    PONG,
    BusError,
    BusMsg,
    BusUnavailable,
    Handler,
    Parser,
    ProtocolError,
    check_subject,
    encode_connect,
    encode_headers,
    encode_sub,
    encode_unsub,
    hpub_line,
    pub_line,
)

__all__ = ["connect", "BusConnection", "BusMsg", "BusStats", "encode_headers", "BusError", "BusUnavailable"]

_log = log.get("bus.conn")

DEFAULT_PORT = 4222
# A dead peer that sent no FIN/RST is noticed after about
# ping_interval * (max_pings_out + 1); 20 s x 2 is nats-py's order of magnitude
# (2 min x 2) made tighter because a stuck hot path costs more than a PING.
PING_INTERVAL = 20.0
MAX_PINGS_OUT = 2
# Random extra wait before a reconnect attempt, so a fleet of edges does not
# hit a restarted server in the same millisecond.
RECONNECT_JITTER = 0.1
RECONNECT_JITTER_TLS = 0.5  # a TLS handshake is costlier for the server
# Until INFO says otherwise (nats-server's default max_payload).
DEFAULT_MAX_PAYLOAD = 1024 * 1024
# How long close() waits for the server to confirm what was written.
CLOSE_FLUSH_TIMEOUT = 1.0

_AUTH_ERRORS = ("authorization violation", "authentication", "user authentication expired",
                "account authentication expired")


@dataclass(slots=True, frozen=True)
class BusStats:
    """Counters since the connection was made. Bytes are wire bytes (protocol
    lines included); ``permission_errors`` counts -ERR Permissions Violation."""

    in_msgs: int
    out_msgs: int
    in_bytes: int
    out_bytes: int
    reconnects: int
    permission_errors: int


class _Server:
    __slots__ = ("url", "host", "port", "tls", "user", "password", "token", "discovered", "failures", "last_attempt")

    def __init__(self, url: str, *, discovered: bool = False) -> None:
        full = url if "://" in url else "nats://" + url
        u = urlsplit(full)
        if u.scheme not in ("nats", "tls"):
            raise BusError(f"unsupported NATS URL scheme {u.scheme!r} in {url!r}")
        self.host = u.hostname or "127.0.0.1"
        try:
            self.port = u.port or DEFAULT_PORT
        except ValueError:
            raise BusError(f"bad port in NATS URL {url!r}") from None
        self.tls = u.scheme == "tls"
        self.user = self.password = self.token = None
        if u.username is not None and u.password is not None:
            self.user, self.password = unquote(u.username), unquote(u.password)
        elif u.username:
            self.token = unquote(u.username)
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"{u.scheme}://{host}:{self.port}"  # never with credentials (it is logged)
        self.discovered = discovered
        self.failures = 0  # failed attempts in a row
        self.last_attempt = 0.0

    @property
    def key(self) -> tuple[str, int]:
        return (self.host, self.port)


class _Sub:
    __slots__ = ("sid", "subject", "queue", "handler")

    def __init__(self, sid: int, subject: str, queue: str | None, handler: Handler) -> None:
        self.sid = sid
        self.subject = subject
        self.queue = queue
        self.handler = handler


def _settle(fut: asyncio.Future[Any], result: object = None, exc: BaseException | None = None) -> None:
    if fut.done():
        return
    if exc is None:
        fut.set_result(result)
    else:
        fut.set_exception(exc)
        fut.exception()  # mark retrieved: nobody may be waiting any more


class _Socket(asyncio.Protocol):
    """One TCP (or TLS) connection to one server. A fresh object per attempt,
    so a late callback from a socket given up on never touches the next one."""

    def __init__(self, conn: BusConnection) -> None:
        self.conn = conn
        self.transport: asyncio.Transport | None = None
        self.parser = Parser(conn._handlers, self.on_op)
        loop = conn._loop
        self.info: asyncio.Future[object] = loop.create_future()  # the first INFO
        self.ready: asyncio.Future[None] = loop.create_future()  # the PONG answering CONNECT+PING
        self.handshaking = True
        self.active = False  # this is the connection's current socket
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio types the argument as BaseTransport; a stream connection's is a Transport.
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.conn._in_bytes += len(data)
        try:
            self.parser.feed(data)
        except ProtocolError as exc:
            _log.error("nats protocol error, dropping the connection", error=str(exc))
            _settle(self.info, exc=exc)
            _settle(self.ready, exc=exc)
            self.abort()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        err = BusUnavailable(f"connection closed: {exc}" if exc else "connection closed by the server")
        _settle(self.info, exc=err)
        _settle(self.ready, exc=err)
        if self.active:
            self.conn._socket_lost(self, exc)

    def abort(self) -> None:
        if self.transport is not None and not self.lost:
            self.transport.abort()

    def on_op(self, op: int, arg: object) -> None:
        if self.handshaking:
            if op == OP_INFO:
                _settle(self.info, arg)
            elif op == OP_PONG:
                _settle(self.ready)
            elif op == OP_ERR:
                text = str(arg)
                if any(a in text.lower() for a in _AUTH_ERRORS):
                    err = BusError(f"nats server refused the credentials: {text}", code="bus_auth")
                else:
                    err = BusError(f"nats server refused the connection: {text}")
                _settle(self.info, exc=err)
                _settle(self.ready, exc=err)
            elif op == OP_PING and self.transport is not None:
                self.transport.write(PONG)
            return
        if self.active:
            self.conn._on_op(op, arg)


def _read_creds(path: str) -> tuple[str, bytes]:
    """(user JWT, nkey seed) from a ``.creds`` file (the nsc format: each value
    on the first non-empty line after its ``-----BEGIN ...-----`` marker)."""
    jwt = seed = None
    want = None
    for raw in Path(path).read_text().splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("---"):
            want = ("jwt" if "BEGIN NATS USER JWT" in line
                    else "seed" if "NKEY SEED" in line and "BEGIN" in line else None)
            continue
        if want == "jwt" and jwt is None:
            jwt = line
        elif want == "seed" and seed is None:
            seed = line
        want = None
    if not jwt or not seed:
        raise BusError(f"{path}: not a NATS .creds file (user JWT and nkey seed expected)")
    return jwt, seed.encode()


def _sign_nonce(seed: bytes, nonce: str) -> tuple[str, str]:
    """(public key, signature of the nonce) for nkey / JWT auth."""
    import nkeys  # cold path: once per (re)connect, and it brings PyNaCl

    kp = nkeys.from_seed(seed)
    sig = base64.urlsafe_b64encode(kp.sign(nonce.encode())).rstrip(b"=").decode()
    return kp.public_key.decode(), sig


class BusConnection:
    """A NATS connection; make it with :func:`connect`."""

    def __init__(
        self,
        servers: Sequence[str],
        *,
        name: str,
        user: str | None,
        password: str | None,
        token: str | None,
        nkey_seed: str | None,
        creds: str | None,
        tls: ssl.SSLContext | None,
        connect_timeout: float,
        reconnect_wait: float,
        max_reconnect_attempts: int,
        pending_limit: int,
        on_disconnected: Callable[[], None] | None,
        on_reconnected: Callable[[], None] | None,
        ping_interval: float = PING_INTERVAL,
        max_pings_out: int = MAX_PINGS_OUT,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._servers = [_Server(s) for s in servers]
        if not self._servers:
            raise BusError("no NATS server given")
        self._name = name
        self._user, self._password, self._token = user, password, token
        self._nkey_seed, self._creds, self._tls = nkey_seed, creds, tls
        self._connect_timeout = connect_timeout
        self._reconnect_wait = reconnect_wait
        self._max_reconnect_attempts = max_reconnect_attempts
        self._pending_limit = pending_limit
        self._on_disconnected = on_disconnected
        self._on_reconnected = on_reconnected
        self._ping_interval = ping_interval
        self._max_pings_out = max_pings_out

        self._out = bytearray()  # this tick's output, or what waits for a reconnect
        self._flush_scheduled = False  # a _flush is queued with call_soon
        self._connected = False
        self._closed = False
        self._sock: _Socket | None = None
        self._transport: asyncio.Transport | None = None
        self._server: _Server | None = None
        self._info: dict[str, Any] = {}  # the server's INFO (JSON)
        self._max_payload = DEFAULT_MAX_PAYLOAD
        self._subs: dict[int, _Sub] = {}
        self._handlers: dict[bytes, Handler] = {}  # shared with every socket's parser
        self._next_sid = 0
        self._pongs: deque[asyncio.Future[None] | None] = deque()  # one per PING in flight, None for keepalive
        # PINGs queued in _out but not written yet: if the connection drops
        # first they go out after the reconnect, and their PONGs must not be
        # taken for the answer to a newer flush().
        self._unflushed_pings = 0
        self._pings_out = 0
        self._ping_timer: asyncio.TimerHandle | None = None
        self._reconnect_task: asyncio.Task[None] | None = None
        self._inbox_prefix = "_INBOX." + secrets.token_hex(11)
        self._inbox_counter = 0
        # counters
        self._in_bytes = 0
        self._in_msgs_done = 0  # messages of sockets already closed
        self._out_msgs = 0
        self._out_bytes = 0
        self._reconnects = 0
        self._permission_errors = 0

    # --- the hot path -----------------------------------------------------------

    def publish(self, subject: str, data: bytes, *, reply: str | None = None, headers: bytes | None = None) -> None:
        """Queue a PUB (HPUB with ``headers``, a raw block from
        :func:`encode_headers`); written with everything else of this tick.
        While reconnecting, buffered up to ``pending_limit`` bytes, else
        :class:`BusUnavailable`; after ``close()``, :class:`BusError`."""
        n = len(data)
        if not self._flush_scheduled:
            self._first_write(n)
        out = self._out
        if not headers:
            if n > self._max_payload:
                raise BusError(f"payload of {n} bytes exceeds the server's max_payload {self._max_payload}")
            out += pub_line(subject, reply, n)
            out += data
        else:
            hl = len(headers)
            if n + hl > self._max_payload:
                raise BusError(f"message of {n + hl} bytes exceeds the server's max_payload {self._max_payload}")
            out += hpub_line(subject, reply, hl, hl + n)
            out += headers
            out += data
        out += b"\r\n"
        self._out_msgs += 1

    def _first_write(self, size: int) -> None:
        """The first write of a tick schedules the flush; while disconnected,
        every write checks the pending limit."""
        if self._connected:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        elif self._closed:
            raise BusError("the NATS connection is closed")
        elif len(self._out) + size > self._pending_limit:
            raise BusUnavailable(f"NATS is reconnecting and {len(self._out)} bytes are already waiting; retry")

    def _write(self, frame: bytes) -> None:
        if not self._flush_scheduled:
            self._first_write(0)
        self._out += frame

    def _flush(self) -> None:
        self._flush_scheduled = False
        out = self._out
        if not out or not self._connected:
            return
        self._out = bytearray()  # the transport may keep the old one; it is never touched again
        self._unflushed_pings = 0
        self._out_bytes += len(out)
        self._transport.write(out)  # type: ignore[union-attr]  # set whenever _connected (_activate, _socket_lost)

    # --- subscriptions ------------------------------------------------------------

    def subscribe(self, subject: str, handler: Callable[[BusMsg], None], *, queue: str | None = None) -> int:
        """Deliver messages on ``subject`` to ``handler``, inline in the read
        (it must not block). Returns the sid for :meth:`unsubscribe`."""
        check_subject(subject)
        if queue is not None:
            check_subject(queue, "queue group")
        if self._closed:
            raise BusError("the NATS connection is closed")
        self._next_sid += 1
        sid = self._next_sid
        self._subs[sid] = _Sub(sid, subject, queue, handler)
        self._handlers[str(sid).encode()] = handler
        if self._connected:  # else sent with every other SUB when connected again
            self._write(encode_sub(subject, sid, queue))
        return sid

    def unsubscribe(self, sid: int) -> None:
        if self._subs.pop(sid, None) is None:
            return
        self._handlers.pop(str(sid).encode(), None)
        if not self._closed:
            # Also while disconnected: the pending output may hold this SUB.
            self._out += encode_unsub(sid)
            if self._connected and not self._flush_scheduled:
                self._first_write(0)

    def new_inbox(self) -> str:
        self._inbox_counter += 1
        return f"{self._inbox_prefix}{self._inbox_counter}"

    async def flush(self, timeout: float = 2.0) -> None:
        """Write what is queued and wait until the server has processed it
        (a PING/PONG round trip). BusUnavailable when not connected or no PONG
        within ``timeout``."""
        if not self._connected:
            raise BusUnavailable("NATS is not connected")
        fut: asyncio.Future[None] = self._loop.create_future()
        self._pongs.append(fut)
        self._write(PING)
        self._unflushed_pings += 1
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise BusUnavailable(f"no PONG from the NATS server within {timeout:g}s") from None

    # --- state ------------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        return self._connected

    @property
    def is_closed(self) -> bool:
        return self._closed

    @property
    def connected_url(self) -> str | None:
        return self._server.url if self._connected and self._server else None

    @property
    def servers(self) -> list[str]:
        """Known servers (seeds and discovered), in reconnect order."""
        return [s.url for s in self._servers]

    @property
    def server_info(self) -> dict[str, Any]:
        return self._info

    @property
    def stats(self) -> BusStats:
        sock = self._sock
        return BusStats(
            in_msgs=self._in_msgs_done + (sock.parser.msgs if sock else 0),
            out_msgs=self._out_msgs, in_bytes=self._in_bytes, out_bytes=self._out_bytes,
            reconnects=self._reconnects, permission_errors=self._permission_errors,
        )

    # --- connecting ---------------------------------------------------------------

    async def _connect_first(self) -> None:
        """Try every seed once; an authorization failure ends it at once."""
        errors: list[str] = []
        for srv in list(self._servers):
            try:
                sock, info = await self._handshake(srv)
            except BusError as exc:
                if exc.code == "bus_auth":
                    raise
                errors.append(f"{srv.url}: {exc.message}")
            except (TimeoutError, OSError) as exc:
                errors.append(f"{srv.url}: {exc!r}")
            else:
                self._activate(sock, srv, info)
                _log.info("nats connected", server=srv.url, name=self._name)
                return
        raise BusUnavailable("could not connect to NATS: " + "; ".join(errors))

    async def _handshake(self, srv: _Server) -> tuple[_Socket, dict[str, Any]]:
        srv.last_attempt = time.monotonic()
        sock = _Socket(self)
        try:
            # One bound for TCP connect + INFO + TLS + CONNECT/PONG: a server
            # that accepts but never answers must not hold a reconnect forever.
            async with asyncio.timeout(self._connect_timeout):
                transport, _ = await self._loop.create_connection(lambda: sock, srv.host, srv.port)
                info = await sock.info
                if not isinstance(info, dict):
                    raise BusError("bad INFO from the NATS server")
                want_tls = self._tls is not None or srv.tls
                if info.get("tls_required") or (want_tls and info.get("tls_available")):
                    ctx = self._tls or ssl.create_default_context()
                    tls_transport = await self._loop.start_tls(transport, sock, ctx, server_hostname=srv.host)
                    if tls_transport is None:
                        raise BusUnavailable("connection closed during the TLS handshake")
                    sock.transport = transport = tls_transport
                    used_tls = True
                elif want_tls:
                    raise BusError(f"{srv.url} does not offer TLS")
                else:
                    used_tls = False
                transport.write(encode_connect(self._connect_options(srv, info, used_tls)) + PING)
                await sock.ready
        except BaseException:
            sock.abort()
            raise
        if sock.lost:
            raise BusUnavailable("connection closed right after the handshake")
        return sock, info

    def _connect_options(self, srv: _Server, info: dict[str, Any], used_tls: bool) -> dict[str, object]:
        opts: dict[str, object] = {
            "verbose": False, "pedantic": False, "tls_required": used_tls, "name": self._name,
            "lang": "python3", "version": "switchboard-bus-1", "protocol": 1,
            "headers": True, "no_responders": True, "echo": True,
        }
        nonce = info.get("nonce")
        if self._creds:
            jwt, seed = _read_creds(self._creds)
            opts["jwt"] = jwt
            if nonce:
                opts["sig"] = _sign_nonce(seed, nonce)[1]
        elif self._nkey_seed:
            public, sig = _sign_nonce(self._nkey_seed.encode(), nonce or "")
            opts["nkey"] = public
            if nonce:
                opts["sig"] = sig
        user = srv.user or self._user
        if user:
            opts["user"] = user
            opts["pass"] = (srv.password if srv.user else self._password) or ""
        token = srv.token or self._token
        if token:
            opts["auth_token"] = token
        return opts

    def _activate(self, sock: _Socket, srv: _Server, info: dict[str, Any]) -> None:
        sock.handshaking = False
        sock.active = True
        self._sock, self._transport, self._server = sock, sock.transport, srv
        srv.failures = 0
        # The server in use goes to the back: a reconnect tries the others first.
        if srv in self._servers:
            self._servers.remove(srv)
        self._servers.append(srv)
        self._info = info
        self._max_payload = int(info.get("max_payload") or DEFAULT_MAX_PAYLOAD)
        self._add_connect_urls(info)
        # Every SUB first, then what was published while disconnected.
        out = bytearray()
        for sub in self._subs.values():
            out += encode_sub(sub.subject, sub.sid, sub.queue)
        out += self._out
        self._out = bytearray()
        if out:
            self._out_bytes += len(out)
            sock.transport.write(out)  # type: ignore[union-attr]  # set: the socket went through _handshake
        self._connected = True
        self._pings_out = 0
        self._pongs = deque([None] * self._unflushed_pings)  # stale PINGs just sent with the pending output
        self._unflushed_pings = 0
        self._ping_timer = self._loop.call_later(self._ping_interval, self._ping_tick)

    def _add_connect_urls(self, info: dict[str, Any]) -> None:
        known = {s.key for s in self._servers}
        for url in info.get("connect_urls") or ():
            try:
                srv = _Server(url, discovered=True)
            except BusError:
                continue
            if srv.key not in known:
                known.add(srv.key)
                self._servers.insert(0, srv)  # before the current server (kept last)

    def _on_op(self, op: int, arg: object) -> None:
        if op == OP_PING:
            self._write(PONG)
        elif op == OP_PONG:
            self._pings_out = 0
            if self._pongs:
                fut = self._pongs.popleft()
                if fut is not None:
                    _settle(fut)
        elif op == OP_INFO:
            info = arg if isinstance(arg, dict) else {}
            self._add_connect_urls(info)
            if info.get("ldm") and self._server is not None:
                _log.warning("nats server entering lame duck mode; will reconnect elsewhere", server=self._server.url)
        elif op == OP_ERR:
            text = str(arg)
            if "permissions violation" in text.lower():
                self._permission_errors += 1
                _log.warning("nats permissions violation", error=text)
            else:
                _log.error("nats server error", error=text, server=self._server.url if self._server else None)

    def _ping_tick(self) -> None:
        self._ping_timer = None
        if not self._connected:
            return
        if self._pings_out >= self._max_pings_out:
            _log.warning("nats connection stale (PINGs unanswered), reconnecting",
                         server=self._server.url if self._server else None)
            if self._sock is not None:
                self._sock.abort()
            return
        self._pings_out += 1
        self._pongs.append(None)
        self._write(PING)
        self._unflushed_pings += 1
        self._ping_timer = self._loop.call_later(self._ping_interval, self._ping_tick)

    def _socket_lost(self, sock: _Socket, exc: Exception | None) -> None:
        if sock is not self._sock:
            return
        self._sock = self._transport = None
        self._connected = False
        self._in_msgs_done += sock.parser.msgs
        if self._ping_timer is not None:
            self._ping_timer.cancel()
            self._ping_timer = None
        self._fail_pongs(BusUnavailable("NATS connection lost"))
        if self._closed:
            return
        _log.warning("nats disconnected", server=self._server.url if self._server else None,
                     error=repr(exc) if exc else None)
        self._callback(self._on_disconnected)
        self._reconnect_task = self._loop.create_task(self._reconnect())

    def _fail_pongs(self, exc: BaseException) -> None:
        pongs, self._pongs = self._pongs, deque()
        for fut in pongs:
            if fut is not None:
                _settle(fut, exc=exc)

    @staticmethod
    def _callback(cb: Callable[[], None] | None) -> None:
        if cb is None:
            return
        try:
            cb()
        except Exception:  # a user callback must not stop the reconnect
            _log.exception("nats connection callback failed")

    async def _reconnect(self) -> None:
        while not self._closed:
            srv = self._next_server()
            if srv is None:
                _log.error("nats reconnect gave up: no server left to try")
                await self._shutdown(BusUnavailable("NATS reconnect attempts exhausted"))
                return
            wait = srv.last_attempt + self._reconnect_wait - time.monotonic()
            if wait > 0:
                jitter = RECONNECT_JITTER_TLS if (self._tls or srv.tls) else RECONNECT_JITTER
                await asyncio.sleep(wait + random.uniform(0, jitter))
                if self._closed:
                    return
            try:
                sock, info = await self._handshake(srv)
            except (TimeoutError, BusError, OSError) as exc:
                srv.failures += 1
                _log.debug("nats reconnect attempt failed", server=srv.url, error=repr(exc))
                continue
            if self._closed:
                sock.abort()
                return
            self._reconnects += 1
            self._activate(sock, srv, info)
            _log.info("nats reconnected", server=srv.url, name=self._name)
            self._callback(self._on_reconnected)
            return

    def _next_server(self) -> _Server | None:
        """The server tried least recently, dropping those out of attempts."""
        if self._max_reconnect_attempts >= 0:
            self._servers = [s for s in self._servers if s.failures <= self._max_reconnect_attempts]
        if not self._servers:
            return None
        srv = min(self._servers, key=lambda s: s.last_attempt)
        return srv

    # --- closing ------------------------------------------------------------------

    async def close(self) -> None:
        """Write what is queued, wait briefly for the server to take it, close."""
        if self._closed:
            return
        if self._connected:
            try:
                await self.flush(CLOSE_FLUSH_TIMEOUT)
            except BusError:
                pass  # closing anyway
        await self._shutdown(BusError("the NATS connection is closed"))

    async def _shutdown(self, exc: BusError) -> None:
        self._closed = True
        self._connected = False
        task, self._reconnect_task = self._reconnect_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        if self._ping_timer is not None:
            self._ping_timer.cancel()
            self._ping_timer = None
        self._fail_pongs(exc)
        self._handlers.clear()
        self._subs.clear()
        self._out = bytearray()
        sock, self._sock = self._sock, None
        self._transport = None
        if sock is not None:
            self._in_msgs_done += sock.parser.msgs
            sock.active = False
            if sock.transport is not None and not sock.lost:
                sock.transport.close()


async def connect(
    servers: str | Sequence[str] = ("nats://127.0.0.1:4222",),
    *,
    name: str = "switchboard",
    user: str | None = None,
    password: str | None = None,
    token: str | None = None,
    nkey_seed: str | None = None,
    creds: str | None = None,
    tls: ssl.SSLContext | None = None,
    connect_timeout: float = 2.0,
    reconnect_wait: float = 0.5,
    max_reconnect_attempts: int = -1,
    pending_limit: int = 8 * 1024 * 1024,
    on_disconnected: Callable[[], None] | None = None,
    on_reconnected: Callable[[], None] | None = None,
    ping_interval: float = PING_INTERVAL,
    max_pings_out: int = MAX_PINGS_OUT,
) -> BusConnection:
    """Connect to the first reachable server of ``servers`` (a list, or one
    comma-separated string). Credentials may be in the URL
    (``nats://user:pw@host:port``, ``nats://token@host``). Raises BusError on
    refused credentials, BusUnavailable when no server could be reached.

    ``max_reconnect_attempts``: failed attempts in a row per server before it
    is dropped (-1: never); with none left the connection closes.
    ``pending_limit``: bytes of publishes buffered while disconnected.
    """
    if isinstance(servers, str):
        servers = [s.strip() for s in servers.split(",") if s.strip()]
    conn = BusConnection(
        servers, name=name, user=user, password=password, token=token, nkey_seed=nkey_seed, creds=creds,
        tls=tls, connect_timeout=connect_timeout, reconnect_wait=reconnect_wait,
        max_reconnect_attempts=max_reconnect_attempts, pending_limit=pending_limit,
        on_disconnected=on_disconnected, on_reconnected=on_reconnected,
        ping_interval=ping_interval, max_pings_out=max_pings_out,
    )
    await conn._connect_first()
    return conn
