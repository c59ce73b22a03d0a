"""One client connection: hello, replay, live delivery, and the client's frames.

Delivery state of a socket is one number, ``cursor``: the INBOX sequence of
the last entry sent down this socket. INBOX entries reach the edge as
JetStream *republishes* (only after they are stored) carrying
``Nats-Sequence`` (the entry's cursor) and ``Nats-Last-Sequence`` (the
previous entry of the same user). So for every live entry the session knows:

- ``seq <= cursor``: already sent (the replay/live seam): dropped;
- ``last > cursor``: something between was missed: catch up from INBOX;
- otherwise: send it, ``cursor = seq``.

Catch-up reads INBOX from ``cursor + 1`` in batches until nothing is pending,
and repeats while live entries beyond the cursor were seen meanwhile; live
entries are not buffered (they are in INBOX anyway), so memory stays bounded.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from typing import TYPE_CHECKING

import msgspec
from nats.aio.msg import Msg as NatsMsg
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from switchboard import events, frames, ids
from switchboard.bus.direct import direct_batch
from switchboard.errors import BadFrame, FrameTooLarge, RateLimited, SwitchboardError
from switchboard.log import get as get_logger

from edge.outbox import CLOSE_SLOW_CONSUMER, Outbox, direct_writer
from edge.ratelimit import TokenBucket

if TYPE_CHECKING:
    from edge.server import Edge

CLOSE_HELLO_TIMEOUT = 4002
_conn_ids = itertools.count(1)
_send_reply = msgspec.json.Decoder(events.SendReply)
# Sends a connection may have in flight to the sequencer; beyond it the reader
# waits, which slows only this connection.
MAX_INFLIGHT_SENDS = 64


class Session:
    __slots__ = ("edge", "ws", "user", "conn_id", "cursor", "acked", "outbox", "bucket", "log",
                 "_live", "_catching_up", "_seen_beyond", "_inflight", "_tasks", "_unacked", "_groups",
                 "_conv_locks", "epoch")

    def __init__(self, *, edge: "Edge", ws: ServerConnection, user: str) -> None:
        self.edge = edge
        self.ws = ws
        self.user = user
        self.conn_id = f"{edge.edge_id}-{next(_conn_ids)}"
        self.cursor = 0
        self.acked = 0
        self.epoch = ""  # the INBOX epoch this socket's cursor belongs to (set at welcome)
        s = edge.settings
        self.outbox = Outbox(send=ws.send, limit=s.send_queue_frames, on_overflow=self._slow_consumer,
                             write_now=direct_writer(ws))
        self.bucket = TokenBucket(rate=s.rate_per_sec, burst=s.rate_burst)
        self.log = get_logger("edge.session", conn=self.conn_id, user=user)
        self._live = False
        self._catching_up = False
        self._seen_beyond = False
        self._inflight = asyncio.Semaphore(MAX_INFLIGHT_SENDS)
        self._tasks: set[asyncio.Task] = set()
        # (cursor, Nats-Msg-Id "conv:seq:user") of entries sent and not yet
        # acked, turned into delivered receipts on ack. Bounded like the
        # outbox: a client that never acks loses only old receipt detail
        # (watermarks are monotonic; a later ack covers it).
        self._unacked: deque[tuple[int, str]] = deque(maxlen=s.send_queue_frames * 2)
        self._groups: set[str] = set()  # large groups this socket reads directly
        # Sends of one socket to one conversation go to the sequencer one at a
        # time, in the order the client sent them (asyncio.Lock is FIFO), so
        # seq order = the device's order; different conversations overlap.
        self._conv_locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}  # conv -> (lock, [users])

    # -- lifecycle --------------------------------------------------------------
    async def run(self) -> None:
        hello = await self._await_hello()
        if hello is None:
            return
        await self.edge.hub.attach(self.user, self)
        try:
            self.edge.on_connect(self)
            await self._hello(hello)
            async for data in self.ws:
                await self._handle(data)
        finally:
            self._live = False
            for t in tuple(self._tasks):
                t.cancel()
            self.outbox.close()
            for conv in tuple(self._groups):
                await self.edge.hub.detach_conv(conv, self)
            await self.edge.hub.detach(self.user, self)
            self.edge.on_disconnect(self)

    async def _await_hello(self) -> frames.Hello | None:
        deadline = asyncio.get_running_loop().time() + self.edge.settings.hello_timeout
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            try:
                data = await asyncio.wait_for(self.ws.recv(), max(remaining, 0.001))
            except asyncio.TimeoutError:
                await self.ws.close(CLOSE_HELLO_TIMEOUT, "no hello frame in time")
                return None
            try:
                frame = self._decode(data)
                if not isinstance(frame, frames.Hello):
                    raise BadFrame("the first frame must be hello", code="hello_required")
                return frame
            except SwitchboardError as exc:
                self._send(frames.error_frame(exc, frames.guess_ref(data)))

    def _slow_consumer(self) -> None:
        self.edge.metrics.slow_consumers.inc()
        self.log.info("slow consumer disconnected", queued=self.edge.settings.send_queue_frames)
        self._spawn(self.ws.close(CLOSE_SLOW_CONSUMER, "slow consumer: reconnect and resume from your cursor"))

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _send(self, frame) -> None:
        self.outbox.put(frames.encode(frame))

    # -- hello, replay, resync ---------------------------------------------------
    async def _hello(self, hello: frames.Hello) -> None:
        edge = self.edge
        first_seq, last_seq = await edge.inbox_bounds()  # also notices a recreated INBOX
        epoch = self.epoch = edge.epoch
        self._send(frames.Welcome(user=self.user, epoch=epoch))
        if hello.epoch is not None and hello.epoch != epoch:
            await self._resync("epoch_changed", last_seq)
        elif hello.cursor is None:
            self.cursor = last_seq  # a new device starts from now; history is fetched on demand
            await self._catch_up()
        elif hello.cursor + 1 < first_seq:
            await self._resync("cursor_expired", last_seq)
        else:
            self.cursor = hello.cursor
            if not await self._catch_up(check_trimmed=True):
                await self._resync("cursor_expired", last_seq)
                return
        self._send(frames.Synced(cursor=self.cursor, groups=await self._join_groups()))

    async def _join_groups(self) -> list[frames.ResyncRange]:
        """Subscribe to the user's large groups, then say how far each is."""
        ranges = await self.edge.large_groups(self.user)
        for r in ranges:
            await self.join_group(r.conv)
        return ranges

    async def join_group(self, conv: str) -> None:
        if conv not in self._groups:
            self._groups.add(conv)
            await self.edge.hub.attach_conv(conv, self)

    def on_conv_message(self, msg: NatsMsg) -> None:
        if self._live:
            self.outbox.put(msg.data)  # a msg frame without cursor: not an INBOX entry

    async def _resync(self, reason: str, last_seq: int) -> None:
        self.cursor = last_seq
        ranges = await self.edge.resync_ranges(self.user)
        self._send(frames.Resync(reason=reason, ranges=ranges, cursor=last_seq))
        self.log.info("resync", reason=reason)
        await self._catch_up()
        self._send(frames.Synced(cursor=self.cursor, groups=await self._join_groups()))

    async def _catch_up(self, *, check_trimmed: bool = False) -> bool:
        """Send INBOX entries after ``cursor`` until none is pending, then go
        live. With ``check_trimmed``, return False (sending nothing) if the
        user's entries after the cursor may have been trimmed by the per-user
        limit."""
        edge = self.edge
        subject = edge.subjects.inbox(self.user)
        self._catching_up = True
        self._live = True  # live entries now only mark _seen_beyond
        try:
            while True:
                self._seen_beyond = False
                first_batch = True
                # Replay respects backpressure: a batch never exceeds half the
                # socket queue, and the next is read only once it has drained.
                size = max(1, min(edge.settings.replay_batch, self.outbox.limit // 2))
                while True:
                    await self.outbox.drained()
                    if self.outbox.closed:
                        return True
                    batch = await direct_batch(edge.nc, stream=edge.inbox_stream, subject=subject,
                                               start_seq=self.cursor + 1, batch=size,
                                               timeout=edge.settings.send_timeout)
                    if check_trimmed and first_batch and batch.entries:
                        total_after = len(batch.entries) + batch.num_pending
                        if total_after >= edge.settings.inbox_max_per_user and batch.entries[0][0] > self.cursor + 1:
                            return False
                    first_batch = False
                    for seq, headers, data in batch.entries:
                        if seq > self.cursor:
                            self._put_entry(seq, headers, data)
                    if not batch.entries or batch.num_pending == 0:
                        break
                if not self._seen_beyond:
                    return True
        finally:
            self._catching_up = False

    # -- bus → socket -------------------------------------------------------------
    def on_bus_message(self, msg: NatsMsg) -> None:
        if not self._live:
            return  # before hello: the replay will read it from INBOX
        h = msg.headers
        seq_s = h.get("Nats-Sequence") if h else None
        if seq_s is None:
            self.outbox.put(msg.data)  # an ephemeral event, already a wire frame
            large = h.get("Sb-Large-Conv") if h else None
            if large:
                self._spawn(self.join_group(large))
            return
        seq = int(seq_s)
        if seq <= self.cursor:
            return
        if self._catching_up:
            self._seen_beyond = True
            return
        if int(h.get("Nats-Last-Sequence", "0")) > self.cursor:
            self.edge.metrics.gaps.inc()
            self._spawn(self._catch_up())  # missed one: read it from INBOX
            self._catching_up = True
            return
        self._put_entry(seq, h, msg.data)

    def _put_entry(self, seq: int, headers: dict, data: bytes) -> None:
        self.outbox.put(frames.with_cursor(data, seq))
        self.cursor = seq
        msg_id = headers.get("Nats-Msg-Id")
        if msg_id:
            self._unacked.append((seq, msg_id))

    def take_acked(self, cursor: int) -> dict[str, int]:
        """Highest seq per conversation among the entries acked up to ``cursor``."""
        out: dict[str, int] = {}
        q = self._unacked
        while q and q[0][0] <= cursor:
            _, msg_id = q.popleft()
            conv, _, rest = msg_id.partition(":")
            seq = int(rest.partition(":")[0] or 0)
            if seq > out.get(conv, 0):
                out[conv] = seq
        return out

    # -- socket → bus ---------------------------------------------------------------
    def _decode(self, data: str | bytes) -> frames.ClientFrame:
        s = self.edge.settings
        if len(data) > s.max_frame_bytes:
            raise FrameTooLarge(f"frame exceeds {s.max_frame_bytes} bytes")
        return frames.decode_client_frame(data, max_body=s.max_body_bytes)

    async def _handle(self, data: str | bytes) -> None:
        self.edge.metrics.frames_in.inc()
        try:
            frame = self._decode(data)
            if not self.bucket.take():
                raise RateLimited(f"more than {self.edge.settings.rate_per_sec:g} frames/s")
        except SwitchboardError as exc:
            self._send(frames.error_frame(exc, frames.guess_ref(data)))
            return
        if isinstance(frame, frames.Send):
            await self._inflight.acquire()
            self._spawn(self._do_send(frame))
        elif isinstance(frame, frames.Ack):
            if frame.cursor > self.acked:
                self.acked = min(frame.cursor, self.cursor)
                self.edge.on_ack(self, self.acked)
        elif isinstance(frame, frames.Hello):
            self._send(frames.error_frame(BadFrame("hello was already received"), None))
        else:
            self._spawn(self._do_other(frame))

    async def _do_send(self, f: frames.Send) -> None:
        try:
            conv = f.conv if f.conv is not None else ids.dm_conv(self.user, f.to)  # type: ignore[arg-type]
            req = events.SendRequest(sender=self.user, id=f.id, conv=conv, body=f.body, to=f.to)
            entry = self._conv_locks.get(conv)
            if entry is None:
                entry = self._conv_locks[conv] = (asyncio.Lock(), [0])
            lock, users = entry
            users[0] += 1
            try:
                async with lock:
                    data = await self.edge.request(self.edge.subjects.send(conv), events.encode(req))
            finally:
                users[0] -= 1
                if users[0] == 0:
                    del self._conv_locks[conv]
            reply = _send_reply.decode(data)
            if reply.error is not None:
                self._send(frames.Error(ref=f.id, code=reply.error.code, message=reply.error.message,
                                        retry=reply.error.retry))
            else:
                self._send(frames.Sent(id=f.id, conv=reply.conv, seq=reply.seq, ts=reply.ts))
        except SwitchboardError as exc:
            self._send(frames.error_frame(exc, f.id))
        finally:
            self._inflight.release()

    async def _do_other(self, frame) -> None:
        ref = getattr(frame, "id", None)
        try:
            out = await self.edge.handle_frame(self, frame)
            if out is not None:
                self._send(out)
        except SwitchboardError as exc:
            self._send(frames.error_frame(exc, ref))
        except ConnectionClosed:
            pass

    async def close(self, code: int, reason: str) -> None:
        await self.ws.close(code, reason)

