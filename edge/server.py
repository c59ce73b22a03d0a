"""The edge: a WebSocket gateway in front of NATS.

Authenticates at the handshake, holds sockets and per-user subscriptions, and
turns client frames into requests on NATS subjects. It keeps no other state:
an edge that dies loses nothing, its clients reconnect elsewhere and resume
from their cursors.

Close codes (docs/protocol.md): 4001 unauthorized, 4002 no hello in time,
4008 slow consumer, 1009 frame far above the size limit, 1001 edge shutting
down, 1013 NATS or a service unavailable (reconnect with backoff), 4009
INBOX recreated (reconnect: you will be told to resync), 1011 bug. An over-limit connection rate is refused with HTTP 503 before upgrade.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from http import HTTPStatus
from pathlib import Path
from typing import Any, Awaitable, Callable

import msgspec
import nats.errors
from nats.aio.client import Client as NATS
from nats.micro import add_service
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

import switchboard
from switchboard import auth, events, frames, log
from switchboard.bus import streams
from switchboard.config import Settings
from switchboard.errors import AuthError, SwitchboardError, Unavailable, from_code

from edge.features import Features
from edge.hub import Hub
from switchboard.bus.requester import Requester
from edge.metrics import EdgeMetrics
from edge.ratelimit import TokenBucket
from edge.session import Session

CLOSE_UNAUTHORIZED = 4001
CLOSE_GOING_AWAY = 1001
CLOSE_TRY_AGAIN = 1013
CLOSE_EPOCH_CHANGED = 4009
# How often a running edge checks that INBOX is still the same stream.
EPOCH_CHECK_SEC = 5.0
# websockets refuses (close 1009) frames above this; between max_frame_bytes
# and this the edge answers an error frame and keeps the connection.
HARD_FRAME_FACTOR = 4
# Epoch and INBOX bounds are re-read at most this often (seconds): hellos in a
# reconnect storm share one stream-info request.
BOUNDS_TTL = 0.5

_conv_reply = msgspec.json.Decoder(events.ConvReply)
_history_reply = msgspec.json.Decoder(events.HistoryReply)

Hook = Callable[..., Any]


class Edge:
    def __init__(self, *, settings: Settings, nc: NATS) -> None:
        self.settings = settings
        self.subjects = settings.subjects
        self.nc = nc
        self.js = nc.jetstream()
        self.edge_id = settings.edge_id or f"edge-{uuid.uuid4().hex[:8]}"
        _, self.inbox_stream, _ = streams.names(settings)
        self.hub = Hub(nc=nc, subjects=self.subjects)
        self.requester = Requester(nc=nc)
        self.metrics = EdgeMetrics()
        self.epoch = ""
        self.sessions: set[Session] = set()
        self.log = log.get("edge", edge=self.edge_id)
        self._bounds: tuple[float, int, int] = (0.0, 0, 0)
        self._epoch_watch: asyncio.Task | None = None
        self._admission = TokenBucket(rate=settings.admit_per_sec, burst=settings.admit_per_sec)
        self._server: Server | None = None
        self._service = None
        # Extension hooks (presence reporter, receipts); defaults do nothing.
        self.connect_hooks: list[Callable[[Session], None]] = []
        self.disconnect_hooks: list[Callable[[Session], None]] = []
        self.ack_hooks: list[Callable[[Session, int], None]] = []
        self.frame_handlers: dict[type, Callable[[Session, Any], Awaitable[Any]]] = {
            frames.ConvCreate: self._conv_create,
            frames.HistoryRequest: self._history,
        }
        self.features = Features(edge=self, presence_interval=settings.presence_heartbeat_sec,
                                 presence_ttl_factor=settings.presence_ttl_factor)

    # -- lifecycle ----------------------------------------------------------------
    async def start(self) -> None:
        self.epoch = await streams.epoch(self.js, self.inbox_stream)
        self._epoch_watch = asyncio.create_task(self._watch_epoch())
        await self.requester.start()
        s = self.settings
        self._server = await serve(
            self._handler, s.host, s.port,
            process_request=self._process_request,
            max_size=s.max_frame_bytes * HARD_FRAME_FACTOR,
            max_queue=8,  # frames read ahead per socket; the reader is never slow
            compression=None,  # permessage-deflate costs ~100 KiB per socket; chat frames are small
            ping_interval=s.ping_interval, ping_timeout=s.ping_timeout,
            close_timeout=2.0,  # a peer that does not answer close is cut off quickly
            server_header=None,
        )
        if s.port == 0:
            sock = next(iter(self._server.sockets))
            self.port = sock.getsockname()[1]
        else:
            self.port = s.port
        await self.features.start()
        self._service = await add_service(self.nc, name="sb-edge", version=switchboard.__version__,
                                          description="WebSocket gateway", metadata={"edge": self.edge_id})
        await self._service.add_endpoint(name="stats", subject=f"{self.subjects.prefix}.api.edge.{self.edge_id}.stats",
                                         handler=self._stats)
        self.log.info("edge listening", url=f"ws://{s.host}:{self.port}/ws", epoch=self.epoch)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close(close_connections=False)
            for sess in tuple(self.sessions):
                sess._spawn(sess.close(CLOSE_GOING_AWAY, "edge shutting down; reconnect"))
            await asyncio.sleep(0)
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if self._service is not None:
            await self._service.stop()
            self._service = None
        if self._epoch_watch is not None:
            self._epoch_watch.cancel()
        await self.features.stop()
        await self.requester.stop()
        self.log.info("edge stopped")

    async def _stats(self, req) -> None:
        await req.respond(msgspec.json.encode({"edge": self.edge_id, "connections": len(self.sessions),
                                               "users": self.hub.users}))

    # -- HTTP: demo page, metrics, admission, auth ------------------------------------
    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == "/metrics":
            return _response(HTTPStatus.OK, self.metrics.render(), "text/plain; version=0.0.4")
        if path in ("/", "/index.html"):
            return _response(HTTPStatus.OK, _demo_page(), "text/html; charset=utf-8")
        if path == "/healthz":
            return _response(HTTPStatus.OK, b"ok\n", "text/plain")
        if path != "/ws":
            return _response(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")
        if not self._admission.take():
            self.metrics.rejected.labels("admission").inc()
            return _response(HTTPStatus.SERVICE_UNAVAILABLE, b"too many new connections; retry with backoff\n",
                             "text/plain", retry_after="1")
        return None

    def _authenticate(self, conn: ServerConnection) -> str:
        request = conn.request
        assert request is not None
        token = None
        header = request.headers.get("Authorization")
        if header and header.lower().startswith("bearer "):
            token = header[7:].strip()
        if token is None and "?" in request.path:
            from urllib.parse import parse_qs
            token = (parse_qs(request.path.split("?", 1)[1]).get("token") or [None])[0]
        return auth.verify(self.settings.jwt_secret, token)

    async def _handler(self, ws: ServerConnection) -> None:
        try:
            user = self._authenticate(ws)
        except AuthError as exc:
            self.metrics.rejected.labels("auth").inc()
            self.log.info("connection refused", reason=exc.message)
            await ws.close(CLOSE_UNAUTHORIZED, exc.message)
            return
        sess = Session(edge=self, ws=ws, user=user)
        self.sessions.add(sess)
        self.metrics.connections.inc()
        self.metrics.accepted.inc()
        try:
            await sess.run()
        except ConnectionClosed:
            pass
        except (Unavailable, nats.errors.Error, asyncio.TimeoutError) as exc:
            # NATS or a service behind it is slow or away (e.g. the INBOX read
            # of a hello): the client should come back shortly, elsewhere if need be.
            sess.log.info("connection closed: backend unavailable", error=type(exc).__name__)
            try:
                await ws.close(CLOSE_TRY_AGAIN, "service unavailable; reconnect with backoff")
            except ConnectionClosed:
                pass
        except Exception:  # noqa: BLE001 - one connection's bug must not take the edge down
            sess.log.exception("connection failed")
            try:
                await ws.close(1011, "internal error")
            except ConnectionClosed:
                pass
        finally:
            self.sessions.discard(sess)
            self.metrics.connections.dec()
            self.metrics.users.set(self.hub.users)
            sess.log.info("disconnected", code=ws.close_code, sent=sess.outbox.sent)

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
    async def inbox_bounds(self) -> tuple[int, int]:
        """(first_seq, last_seq) of INBOX, cached for BOUNDS_TTL seconds; also
        notices a recreated stream (see :meth:`_check_epoch`)."""
        at, first, last = self._bounds
        now = time.monotonic()
        if now - at > BOUNDS_TTL:
            info = await self.js.stream_info(self.inbox_stream)
            first, last = info.state.first_seq, info.state.last_seq
            self._bounds = (now, first, last)
            self._check_epoch(streams.epoch_of(info))
        return first, last

    async def _watch_epoch(self) -> None:
        while True:
            await asyncio.sleep(EPOCH_CHECK_SEC)
            try:
                await self.inbox_bounds()
            except (nats.errors.Error, asyncio.TimeoutError) as exc:
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
                sess._spawn(sess.close(CLOSE_EPOCH_CHANGED, "stream epoch changed: reconnect and resync"))

    async def resync_ranges(self, user: str) -> list[frames.ResyncRange]:
        """What a resyncing client should fetch from history: each of the
        user's conversations up to its last seq (the client knows how far it
        got). Empty when the sequencer cannot say: refetch what you know."""
        try:
            data = await self.request(self.subjects.api("conv", "ranges"), events.encode(events.RangesQuery(user=user)))
            reply = msgspec.json.decode(data, type=events.RangesReply)
        except (SwitchboardError, msgspec.DecodeError):
            return []
        return reply.ranges

    async def large_groups(self, user: str) -> list[frames.ResyncRange]:
        """The user's large groups (pull mode). Empty when the sequencer
        cannot say; the client then learns of them from their messages."""
        try:
            data = await self.request(self.subjects.api("conv", "large"), events.encode(events.RangesQuery(user=user)))
            reply = msgspec.json.decode(data, type=events.RangesReply)
        except (SwitchboardError, msgspec.DecodeError):
            return []
        return reply.ranges

    async def request(self, subject: str, payload: bytes) -> bytes:
        """Request/reply; :class:`Unavailable` (retry) when nobody answers in time."""
        return (await self.requester.request(subject, payload, self.settings.send_timeout)).data

    async def handle_frame(self, sess: Session, frame: Any) -> Any:
        handler = self.frame_handlers.get(type(frame))
        if handler is None:
            raise SwitchboardError(f"{type(frame).__name__} is not supported by this edge", code="unsupported")
        return await handler(sess, frame)

    async def _conv_create(self, sess: Session, f: frames.ConvCreate) -> frames.Conv:
        req = events.ConvCreateRequest(creator=sess.user, members=f.members, title=f.title)
        reply = _conv_reply.decode(await self.request(self.subjects.api("conv", "create"), events.encode(req)))
        _raise(reply.error)
        return frames.Conv(conv=reply.conv, members=reply.members, title=reply.title, ref=f.id)

    async def _history(self, sess: Session, f: frames.HistoryRequest) -> frames.History:
        q = events.HistoryQuery(conv=f.conv, user=sess.user, before=f.before, after=f.after, limit=f.limit)
        reply = _history_reply.decode(await self.request(self.subjects.api("history"), events.encode(q)))
        _raise(reply.error)
        return frames.History(conv=f.conv, messages=reply.messages, more=reply.more, ref=f.id)


def _raise(err: events.ErrorBody | None) -> None:
    if err is not None:
        raise from_code(err.code, err.message, err.retry)


def _response(status: HTTPStatus, body: bytes, ctype: str, retry_after: str | None = None) -> Response:
    headers = Headers([("Content-Type", ctype), ("Content-Length", str(len(body)))])
    if retry_after:
        headers["Retry-After"] = retry_after
    return Response(status.value, status.phrase, headers, body)


def _demo_page() -> bytes:
    return (Path(__file__).parent / "demo.html").read_bytes()


