"""The edge: a WebSocket gateway in front of NATS.

Authenticates at the handshake, holds sockets and per-user subscriptions, and
turns client frames into requests on NATS subjects. It keeps no other state:
an edge that dies loses nothing, its clients reconnect elsewhere and resume
from their cursors.

Close codes (docs/protocol.md): 4001 unauthorized (at the handshake, or
when the token expires: one edge-wide timer, :mod:`edge.deadlines`), 4002 no hello in time,
4008 slow consumer, 1009 frame far above the size limit, 1001 edge shutting
down, 1013 NATS or a service unavailable (reconnect with backoff), 4009
INBOX recreated (reconnect: you will be told to resync), 4010 replaced (the
user opened more than ``max_sockets_per_user`` sockets here: the oldest is
closed), 1011 bug. An over-limit connection rate is refused with HTTP 503
before upgrade.

Memory for clients that do not read is bounded in bytes: per socket
(``send_queue_bytes``, close 4008), per user (``max_sockets_per_user``) and
per edge (``edge_send_queue_bytes``: the socket holding the most is closed
4008), see :mod:`edge.transport`.

Sockets are served by :mod:`edge.transport` (websockets' sans-I/O protocol
under a plain asyncio.Protocol): the HTTP routes below answer before the
upgrade, :meth:`Edge._accept` authenticates after it. Plain HTTP: ``/`` and
the web app's files (:mod:`edge.static`, from the package directory
``edge/web/``), ``/dev/config`` and ``POST /dev/token`` (:mod:`edge.devsignin`),
``/healthz``, ``/metrics``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import signal
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

import nats.errors
from nats.aio.client import Client as NATS
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

import switchboard
from edge import pathtick
from edge.admission import BODY as ADMISSION_BODY, Admission
from edge.deadlines import Deadlines
from edge.devsignin import DevSignin
from edge.features import Features
from edge.hub import Hub
from edge.metrics import EdgeMetrics
from edge.pathtick import PathWatch
from edge.ratelimit import TokenBucket
from edge.sends import SendBudget
from edge.session import Session
from edge.static import StaticFiles
from edge.transport import WsConfig, WsConn, WsServer
from switchboard import api, auth, events, frames, log, rpc, tls
from switchboard.bus import streams
from switchboard.bus.conn import BusConnection, BusError, connect as bus_connect
from switchboard.bus.directread import DirectReader
from switchboard.bus.replies import Replies
from switchboard.config import Settings
from switchboard.errors import AuthError, ConfigError, RateLimited, SwitchboardError
from switchboard.rpc.endpoint import Rep, Req
from switchboard.trace import Tracer

# Pauses before asking the sequencer again for a hello's large groups after
# a quick retryable refusal (busy); at most 1.8 s in all, far inside the
# clients' 10 s open timeout. An answer slower than LARGE_GROUPS_QUICK_SEC
# was not a busy refusal, and is not retried.
LARGE_GROUPS_RETRY_SEC = (0.1, 0.3, 0.8)
LARGE_GROUPS_QUICK_SEC = 0.5
CLOSE_UNAUTHORIZED = 4001
CLOSE_GOING_AWAY = 1001
CLOSE_EPOCH_CHANGED = 4009
CLOSE_REPLACED = 4010
# websockets refuses (close 1009) frames above this; between max_frame_bytes
# and this the edge answers an error frame and keeps the connection.
HARD_FRAME_FACTOR = 4
# Seconds a closing handshake may take: a peer that does not answer close is cut off.
CLOSE_TIMEOUT = 2.0

Hook = Callable[..., Any]


class Edge:
    def __init__(self, *, settings: Settings, nc: NATS) -> None:
        self.settings = settings
        self.subjects = settings.subjects
        self.nc = nc
        self.js = nc.jetstream()
        self.edge_id = settings.edge_id or f"edge-{uuid.uuid4().hex[:8]}"
        _, self.inbox_stream, _ = streams.names(settings)
        # The hot path's NATS connection (user subscriptions, sends, receipts,
        # requests), made in start(); nats-py (nc) stays for JetStream (stream
        # info, INBOX direct get) and the micro service.
        self.bus: BusConnection = None  # type: ignore[assignment]
        self.direct: DirectReader = None  # type: ignore[assignment]  # from start()
        self.replies: Replies = None  # type: ignore[assignment]
        self.send_budget = SendBudget(settings.max_inflight_sends)  # every socket's sends in flight, together
        self.hub: Hub = None  # type: ignore[assignment]
        self.tracer: Tracer = None  # type: ignore[assignment]  # trace hops (switchboard/trace.py), on the bus
        self.metrics = EdgeMetrics()
        self.epoch = ""
        self.sessions: set[Session] = set()
        self.tls: ssl.SSLContext | None = None  # the wss:// server context (start), reloaded by reload_tls
        # Each user's sockets here, oldest first (max_sockets_per_user).
        self._user_sockets: dict[str, dict[Session, None]] = {}
        # conv.list budget per user (conv_list_per_min); kept after the user
        # disconnects (reconnecting must not refill it), pruned to the
        # connected users when it outgrows them.
        self._list_buckets: dict[str, TokenBucket] = {}
        self.log = log.get("edge", edge=self.edge_id)
        self.session_log = log.get("edge.session")  # each Session binds its connection and user to it
        self._bounds: tuple[float, int, int] = (0.0, 0, 0)
        self._bounds_ttl = settings.inbox_bounds_ttl  # hellos of a reconnect storm share one stream info
        self._bounds_read: asyncio.Task[tuple[int, int]] | None = None  # the one stream-info request in flight
        self._epoch_watch: asyncio.Task[None] | None = None
        self._recheck: asyncio.Task[None] | None = None  # sessions reading INBOX after a bus reconnect or path break
        self.path: PathWatch | None = None  # the path tick's chain (edge/pathtick.py), from start()
        # Who gets in (admit_per_sec, admit_max_opening, the lobby): edge/admission.py.
        self.admission = Admission(settings=settings, metrics=self.metrics)
        self._server: WsServer | None = None
        # sb-edge in `nats micro ls`: the edge's stats endpoint (switchboard/rpc/).
        self.rpc = rpc.RpcService(nc, name="sb-edge", version=switchboard.__version__,
                                  description="WebSocket gateway", subjects=self.subjects,
                                  metadata={"edge": self.edge_id})
        # When each socket's token expires (leeway included): close 4001.
        self._expiry: Deadlines[Session] = Deadlines(self._token_expired)
        # Extension hooks (presence reporter, receipts); defaults do nothing.
        self.connect_hooks: list[Callable[[Session], None]] = []
        self.disconnect_hooks: list[Callable[[Session], None]] = []
        self.ack_hooks: list[Callable[[Session, int], None]] = []
        self.frame_handlers: dict[type, Callable[[Session, Any], Awaitable[Any]]] = {
            frames.ConvCreate: self._conv_create,
            frames.HistoryRequest: self._history,
            frames.ConvListRequest: self._conv_list,
        }
        # Frames handled synchronously, without a task (read receipts).
        self.sync_handlers: dict[type, Callable[[Session, Any], None]] = {}
        self.static = StaticFiles()  # the web app at / (edge/web/)
        self.dev = DevSignin(settings)  # /dev/config, /dev/token
        self.features = Features(edge=self, presence_interval=settings.presence_heartbeat_sec,
                                 presence_ttl_factor=settings.presence_ttl_factor)

    # -- lifecycle ----------------------------------------------------------------
    async def start(self) -> None:
        s = self.settings
        self.bus = await bus_connect(servers=s.nats_servers, name=f"sb-edge-{self.edge_id}",
                                     tls=tls.nats_client_context(s), on_reconnected=self._bus_reconnected)
        self.replies = Replies(self.bus)
        self.replies.start()
        self.direct = DirectReader(self.bus)  # INBOX reads (hello, re-reads) on the lean client
        self.direct.start()
        self.tracer = Tracer(publish=self.bus.publish, prefix=self.subjects.prefix, role="edge",
                             instance=s.instance or self.edge_id, sample=s.trace_sample)
        self.hub = Hub(bus=self.bus, subjects=self.subjects, dropped=self.metrics.bus_dropped,
                       presence=self.metrics.presence_fanout)
        self.path = PathWatch(bus=self.bus, subject=self.subjects.tick_live, interval=s.tick_interval,
                              on_break=self._path_broke)
        self.path.start()
        self.epoch = await streams.epoch(self.js, self.inbox_stream)
        self._epoch_watch = asyncio.create_task(self._watch_epoch())
        # No compression (the transport offers no extension): permessage-deflate
        # costs ~100 KiB per socket and chat frames are small.
        config = WsConfig(max_size=s.max_frame_bytes * HARD_FRAME_FACTOR, outbox_bytes=s.send_queue_bytes,
                          edge_outbox_bytes=s.edge_send_queue_bytes, ping_interval=s.ping_interval,
                          ping_timeout=s.ping_timeout, close_timeout=CLOSE_TIMEOUT,
                          http_body_bytes=s.http_body_bytes, open_timeout=s.open_timeout)
        self._server = server = self.make_server(config)
        self.metrics.held_bytes.set_function(lambda: server.held)
        # wss:// when tls_cert/tls_key are set; SIGHUP re-reads them (reload_tls).
        self.tls = tls.server_context(s.tls_cert, s.tls_key) if s.tls_cert else None
        self.port = await self._server.listen(s.host, s.port, ssl=self.tls)
        if self.tls is not None:
            _reload_on_sighup(self)
        await self.features.start()
        await self.rpc.start()
        await self.rpc.add(api.EDGE_STATS, self._stats, edge=self.edge_id)
        self.log.info("edge listening", url=f"{'wss' if self.tls else 'ws'}://{s.host}:{self.port}/ws",
                      epoch=self.epoch)

    def reload_tls(self) -> bool:
        """Re-read ``tls_cert``/``tls_key`` into the listener's context (on
        SIGHUP): new connections get the renewed certificate, open ones keep
        theirs. A pair that does not load is logged and the previous one
        stays in use. True if reloaded."""
        s = self.settings
        if self.tls is None:
            return False
        try:
            tls.reload_server(self.tls, s.tls_cert, s.tls_key)
        except ConfigError as exc:
            self.log.error("TLS reload failed: still serving the previous certificate", error=exc.message)
            return False
        self.log.info("TLS certificate reloaded", cert=s.tls_cert)
        return True

    # -- bus reconnect: entries republished while it was down --------------------------
    def _bus_reconnected(self) -> None:
        """Live INBOX entries are core NATS republishes: those published while
        the bus was down (a NATS node lost, a slow-consumer cut) never reach
        this edge. A later entry of the same user shows the gap, but the last
        one would wait for the user's next message. So every session reads
        INBOX after its cursor, once the re-sent SUBs are in effect."""
        if self.path is not None:
            self.path.reset()  # this re-read covers what a tick chain would show
        self._start_recheck("nats reconnected")

    def _path_broke(self, reason: str) -> None:
        """The path tick (edge/pathtick.py) says entries republished to this
        edge were lost on the way (a route or gateway cut that this edge's
        own connection survived): the same re-read as after a reconnect, at
        once for a lost tick, once the ticks are back after a silence."""
        if reason == pathtick.RESUMED:
            self._start_recheck("path tick back after a silence")
            return
        self.metrics.path_breaks.labels(reason).inc()
        self.log.info("delivery path broke (path tick)", reason=reason, sessions=len(self.sessions))
        if reason == pathtick.TICK_LOST:
            self._start_recheck("delivery path broke")

    def _start_recheck(self, why: str) -> None:
        if self._recheck is not None:
            self._recheck.cancel()  # a newer reconnect or break: start over from it
        self._recheck = asyncio.get_running_loop().create_task(self._recheck_sessions(why))

    async def _recheck_sessions(self, why: str) -> None:
        try:
            await self.bus.flush(self.settings.send_timeout)  # the SUBs sent on reconnect are in effect
        except BusError:
            return  # down again: the next reconnect rechecks
        sessions = tuple(self.sessions)
        batch, pause = self.settings.recheck_batch, self.settings.recheck_pause_sec  # spread over time
        for i, sess in enumerate(sessions):
            sess.recheck()
            if i % batch == batch - 1:
                await asyncio.sleep(pause)
        self.log.info("sessions read INBOX after their cursor", after=why, sessions=len(sessions))

    async def stop(self) -> None:
        _stop_reloading(self)
        self.admission.close()
        if self._server is not None:
            await self._server.close(CLOSE_GOING_AWAY, "edge shutting down; reconnect")
            self._server = None
        await self.rpc.stop(timeout=CLOSE_TIMEOUT)
        if self._epoch_watch is not None:
            self._epoch_watch.cancel()
        if self._bounds_read is not None:
            self._bounds_read.cancel()
        if self._recheck is not None:
            self._recheck.cancel()
        if self.path is not None:
            await self.path.stop()
        self._expiry.close()
        await self.features.stop()
        if self.bus is not None:
            self.replies.stop()
            self.direct.stop()
            await self.bus.close()
        self.log.info("edge stopped")

    async def _stats(self, _: None) -> api.EdgeStats:
        return api.EdgeStats(edge=self.edge_id, connections=len(self.sessions), users=self.hub.users)

    # -- HTTP: the web app, dev sign-in, metrics, admission, auth ---------------------
    def make_server(self, config: WsConfig) -> WsServer:
        """The WebSocket server wired to this edge: its HTTP routes, its
        authentication at the upgrade, its plain-HTTP handlers. ``start``
        listens with one; unit tests drive one without sockets."""
        return WsServer(config=config, route=self._process_request, accept=self._accept, http=self._http,
                        refuse=self.admission.refuse)

    def opened(self, took: float | None = None) -> None:
        """A session left its opening (edge/admission.py): synced ``took``
        seconds after its upgrade, or (None) closed before."""
        self.admission.opened(took)

    def _process_request(self, request: Request) -> Response | None:
        """GET requests (websockets' parser reads only those): a plain answer,
        or None to upgrade ``/ws``."""
        path = request.path.split("?", 1)[0]
        if path == "/ws":
            wait = self.admission.check()
            if wait is not None:
                return _response(HTTPStatus.SERVICE_UNAVAILABLE, ADMISSION_BODY, "text/plain", retry_after=str(wait))
            return None
        if path == "/metrics":
            return _response(HTTPStatus.OK, self.metrics.render(), "text/plain; version=0.0.4")
        if path == "/healthz":
            return _response(HTTPStatus.OK, b"ok\n", "text/plain")
        if path == "/dev/config":
            return self.dev.config()
        if path == "/dev/token":
            return self.dev.token(request, b"")  # 405 (POST only), or 404 while dev sign-in is off
        static = self.static.response(path, request.headers.get("If-None-Match"))
        if static is not None:
            return static
        return _response(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")

    def _http(self, request: Request, body: bytes) -> Response:
        """Requests with another method than GET (edge.httpreq reads their body)."""
        path = request.path.split("?", 1)[0]
        if path == "/dev/token":
            return self.dev.token(request, body)
        if request.method == "HEAD" and path != "/ws":
            got = self._process_request(dataclasses.replace(request, method="GET"))
            if got is not None:
                return dataclasses.replace(got, body=b"")  # Content-Length stays: that of a GET
        return _response(HTTPStatus.METHOD_NOT_ALLOWED, b"method not allowed\n", "text/plain", allow="GET, HEAD")

    def _authenticate(self, request: Request) -> auth.Identity:
        token = None
        header = request.headers.get("Authorization")
        if header and header.lower().startswith("bearer "):
            token = header[7:].strip()
        if token is None and "?" in request.path:
            from urllib.parse import parse_qs
            tokens = parse_qs(request.path.split("?", 1)[1]).get("token")
            token = tokens[0] if tokens else None
        return auth.authenticate(self.settings.jwt_secret, token)

    def _accept(self, conn: WsConn) -> Session | None:
        """Upgraded: authenticate (close 4001 if not), then a session takes the socket."""
        assert conn.request is not None
        try:
            ident = self._authenticate(conn.request)
        except AuthError as exc:
            self.metrics.rejected.labels("auth").inc()
            self.log.info("connection refused", reason=exc.message)
            conn.close(CLOSE_UNAUTHORIZED, exc.message)
            return None
        sess = Session(edge=self, conn=conn, user=ident.user)
        self.admission.began()  # an opening until the session calls opened()
        self._expiry.add(sess, ident.expires_at)
        self._hold_socket(sess)
        self.sessions.add(sess)
        self.metrics.connections.inc()
        self.metrics.accepted.inc()
        return sess

    def _hold_socket(self, sess: Session) -> None:
        """Count the user's sockets; beyond max_sockets_per_user the oldest
        one is closed (4010): the device in use is the newest, and a client
        that opens sockets in a loop holds at most that many."""
        socks = self._user_sockets.get(sess.user)
        if socks is None:
            socks = self._user_sockets[sess.user] = {}
        while len(socks) >= self.settings.max_sockets_per_user:
            oldest = next(iter(socks))
            del socks[oldest]
            self.metrics.replaced.inc()
            oldest.log.info("too many sockets for this user: closing the oldest",
                            limit=self.settings.max_sockets_per_user)
            oldest.close(CLOSE_REPLACED, "too many connections for this user: this, the oldest, was closed")
        socks[sess] = None

    def session_closed(self, sess: Session) -> None:
        self.sessions.discard(sess)
        self._expiry.discard(sess)
        socks = self._user_sockets.get(sess.user)
        if socks is not None:
            socks.pop(sess, None)
            if not socks:
                del self._user_sockets[sess.user]
        self.metrics.connections.dec()
        self.metrics.users.set(self.hub.users)
        sess.log.info("disconnected", code=sess.conn.close_code, sent=sess.conn.frames_out)

    def _token_expired(self, sess: Session) -> None:
        """The socket's token expired (leeway included): it ends as an
        unauthorized one would; the client reconnects with a fresh token and
        its cursor (docs/protocol.md, close 4001)."""
        self.metrics.tokens_expired.inc()
        sess.log.info("token expired: closing")
        sess.close(CLOSE_UNAUTHORIZED, "token expired")

    # -- hooks called by sessions ------------------------------------------------------
    def on_connect(self, sess: Session) -> None:
        self.metrics.users.set(self.hub.users)
        sess.log.info("connected")
        for hook in self.connect_hooks:
            hook(sess)

    def on_disconnect(self, sess: Session) -> None:
        for hook in self.disconnect_hooks:
            hook(sess)

    def on_ack(self, sess: Session, cursor: int) -> None:
        for hook in self.ack_hooks:
            hook(sess, cursor)

    # -- helpers for sessions -------------------------------------------------------
    async def inbox_bounds(self, *, fresh: bool = False) -> tuple[int, int]:
        """(first_seq, last_seq) of INBOX, cached for inbox_bounds_ttl seconds;
        ``fresh``: from a stream-info answer that comes after this call. Also
        notices a recreated stream (see :meth:`_check_epoch`).

        One request at a time, joined by every caller meanwhile: in a
        reconnect storm most hellos carry a cursor newer than the cached
        bounds, and each read its own (a JetStream API request for the
        server, ~3.5 % of a storm edge's CPU). A joined request may have been
        sent before the call; since only one is ever in flight, a caller that
        asks again after it gets one sent after its first call."""
        at, first, last = self._bounds
        if not fresh and time.monotonic() - at <= self._bounds_ttl:
            return first, last
        task = self._bounds_read
        if task is None or task.done():
            task = self._bounds_read = asyncio.get_running_loop().create_task(self._read_bounds())
            task.add_done_callback(_retrieve)
        return await asyncio.shield(task)  # a caller cancelled does not cancel the others' read

    async def _read_bounds(self) -> tuple[int, int]:
        info = await self.js.stream_info(self.inbox_stream)
        first, last = info.state.first_seq, info.state.last_seq
        self._bounds = (time.monotonic(), first, last)
        self._check_epoch(streams.epoch_of(info))
        return first, last

    async def _watch_epoch(self) -> None:
        while True:
            await asyncio.sleep(self.settings.epoch_check_sec)
            try:
                await self.inbox_bounds()
            except (TimeoutError, nats.errors.Error) as exc:
                self.log.info("INBOX check failed", error=type(exc).__name__)

    def _check_epoch(self, epoch: str) -> None:
        """INBOX was recreated: every connected socket holds cursors of the old
        stream, and the new one's sequences start again at 1, so its live
        entries would look like duplicates. Close them all; each reconnects
        with the old epoch and is told to resync."""
        if epoch == self.epoch:
            return
        self.log.warning("INBOX epoch changed: closing every connection", old=self.epoch, new=epoch)
        self.epoch = epoch
        for sess in tuple(self.sessions):
            if sess.epoch and sess.epoch != epoch:  # not yet welcomed: it will get the new one
                sess.close(CLOSE_EPOCH_CHANGED, "stream epoch changed: reconnect and resync")

    async def resync_ranges(self, user: str) -> list[frames.ResyncRange]:
        """What a resyncing client should fetch from history: each of the
        user's conversations up to its last seq (the client knows how far it
        got). Empty when the sequencer cannot say: refetch what you know."""
        try:
            return (await self.call(api.CONV_RANGES, events.RangesQuery(user=user))).ranges
        except SwitchboardError:
            return []

    async def large_groups(self, user: str) -> list[frames.ResyncRange]:
        """The user's large groups (pull mode). Empty when the sequencer
        cannot say; the client then learns of them from their messages.

        Asked again after a quick retryable refusal: a sequencer over
        [sequencer] api_max_inflight answers `unavailable` at once, and in a
        reconnect storm (1,600 hellos in progress) it did so for 394 of
        20,000 hellos, which then went live without their large groups. An
        answer that took longer (a timeout: the sequencer is away) is not
        waited for again: the hello goes on."""
        loop = asyncio.get_running_loop()
        pauses = iter(LARGE_GROUPS_RETRY_SEC)
        while True:
            t0 = loop.time()
            try:
                return (await self.call(api.CONV_LARGE, events.RangesQuery(user=user))).ranges
            except SwitchboardError as exc:
                pause = next(pauses, None)
                if pause is None or not exc.retry or loop.time() - t0 > LARGE_GROUPS_QUICK_SEC:
                    return []
            # jittered: the hellos refused together do not come back together
            await asyncio.sleep(pause * (0.5 + random.random()))

    async def call(self, endpoint: rpc.Endpoint[Req, Rep], request: Req) -> Rep:
        """A service's reply (switchboard/rpc/) over the lean bus, or the error
        it answered, typed; :class:`Unavailable` (retry) when nobody answers
        within ``send_timeout``."""
        return await rpc.call(self.replies, endpoint, request, subjects=self.subjects,
                              timeout=self.settings.send_timeout)

    async def handle_frame(self, sess: Session, frame: Any) -> Any:
        handler = self.frame_handlers.get(type(frame))
        if handler is None:
            raise SwitchboardError(f"{type(frame).__name__} is not supported by this edge", code="unsupported")
        return await handler(sess, frame)

    async def _conv_create(self, sess: Session, f: frames.ConvCreate) -> frames.Conv:
        reply = await self.call(api.CONV_CREATE,
                                events.ConvCreateRequest(creator=sess.user, members=f.members, title=f.title))
        return frames.Conv(conv=reply.conv, members=reply.members, title=reply.title, ref=f.id)

    async def _history(self, sess: Session, f: frames.HistoryRequest) -> frames.History:
        q = events.HistoryQuery(conv=f.conv, user=sess.user, before=f.before, after=f.after, limit=f.limit)
        reply = await self.call(api.HISTORY, q)
        return frames.History(conv=f.conv, messages=reply.messages, more=reply.more, ref=f.id)

    async def _conv_list(self, sess: Session, f: frames.ConvListRequest) -> frames.ConvList:
        per_min = self.settings.conv_list_per_min
        bucket = self._list_buckets.get(sess.user)
        if bucket is None:
            if len(self._list_buckets) > 2 * len(self._user_sockets) + 1024:
                self._list_buckets = {u: b for u, b in self._list_buckets.items() if u in self._user_sockets}
            bucket = self._list_buckets[sess.user] = TokenBucket(rate=per_min / 60, burst=max(1, per_min // 2))
        if not bucket.take():
            raise RateLimited(f"more than {per_min} conv.list per minute; ask again later")
        reply = await self.call(api.CONV_LIST, events.ConvListQuery(user=sess.user))
        return frames.ConvList(convs=reply.convs, more=reply.more, ref=f.id)


# Edges (of this process) whose certificate SIGHUP reloads; one handler for all.
_RELOAD_ON_SIGHUP: set[Edge] = set()


def _reload_on_sighup(edge: Edge) -> None:
    if not _RELOAD_ON_SIGHUP:
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, _sighup)
        except (NotImplementedError, RuntimeError, ValueError):  # no signals here (not the main thread, Windows)
            edge.log.info("no SIGHUP handler in this thread: reload the certificate with Edge.reload_tls()")
            return
    _RELOAD_ON_SIGHUP.add(edge)


def _stop_reloading(edge: Edge) -> None:
    if edge in _RELOAD_ON_SIGHUP:
        _RELOAD_ON_SIGHUP.discard(edge)
        if not _RELOAD_ON_SIGHUP:  # the default again: SIGHUP ends a process that has nothing to reload
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)


def _sighup() -> None:
    for edge in tuple(_RELOAD_ON_SIGHUP):
        edge.reload_tls()


def _response(status: HTTPStatus, body: bytes, ctype: str, retry_after: str | None = None,
              allow: str | None = None) -> Response:
    # Connection: close: the transport ends the connection after a plain answer.
    headers = Headers([("Content-Type", ctype), ("Content-Length", str(len(body))), ("Connection", "close")])
    if retry_after:
        headers["Retry-After"] = retry_after
    if allow:
        headers["Allow"] = allow
    return Response(status.value, status.phrase, headers, body)


def _retrieve(task: asyncio.Task[tuple[int, int]]) -> None:
    """Mark a shared read's failure seen: its callers may all have gone."""
    if not task.cancelled():
        task.exception()
