"""One client connection: hello, replay, live delivery, and the client's frames.

Delivery state of a socket is one number, ``cursor``: the INBOX sequence of
the last entry sent down this socket. INBOX entries reach the edge as
JetStream *republishes* (only after they are stored) carrying
``Nats-Sequence`` (the entry's cursor) and ``Nats-Last-Sequence`` (the
previous entry of the same user). What to do with each live entry, when to
read INBOX (hello, a gap, a bus reconnect) and from where is decided by
:class:`edge.catchup.Catchup`, which does no I/O; this module does the reads
and the writes it asks for.

Frames arrive by callback (:meth:`Session.on_frame`, from edge.transport)
and are handled synchronously: sends (:mod:`edge.sends`), acks and reads make
no task, future or lock. The hello and its catch-up run as one coroutine per
connection; reading is paused meanwhile (frames that were already read wait
in a short list). Less frequent requests (history, conv.create, presence
watches...) are one coroutine each.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, cast

import nats.errors

from edge.catchup import DELIVER, FROM_NOW, GAP, REPLAY, Catchup, stale_bounds
from edge.hub import NATS_SEQUENCE_LINE
from edge.ratelimit import TokenBucket
from edge.sends import Sends
from edge.transport import WsConn
from switchboard import frames
from switchboard.backoff import Backoff
from switchboard.bus.conn import BusMsg
from switchboard.bus.direct import DirectGetError
from switchboard.bus.proto import header_at, header_key
from switchboard.errors import BadFrame, FrameTooLarge, RateLimited, SwitchboardError, Unavailable
from switchboard.trace import TRACE_HEADER, TRACE_HEADER_BYTES

if TYPE_CHECKING:
    from edge.server import Edge

CLOSE_HELLO_TIMEOUT = 4002
CLOSE_TRY_AGAIN = 1013
# What a hello or a re-read raises when NATS or a service behind it is slow
# or away (DirectGetError: INBOX answered no direct get, as while its leader
# is elected): the client should come back (try again), not an internal error.
BACKEND_AWAY = (TimeoutError, Unavailable, DirectGetError, nats.errors.Error)
# A failed INBOX re-read of a live socket is tried again after 0.25 s,
# doubling to 2 s, jittered (every socket of an edge may fail at once),
# until Settings.reread_retry_sec.
REREAD_RETRY_FIRST_SEC = 0.25
REREAD_RETRY_CAP_SEC = 2.0
_conn_ids = itertools.count(1)
# The three fields of an INBOX republish a delivery reads, as searched for
# in its raw header block (switchboard.bus.proto.header_at); the first is
# the line edge.hub checks every live delivery for.
SEQUENCE_KEY = NATS_SEQUENCE_LINE
LAST_SEQUENCE_KEY = header_key(b"Nats-Last-Sequence")
MSG_ID_KEY = header_key(b"Nats-Msg-Id")
# Session states.
WAIT_HELLO, HELLO, LIVE, CLOSED = range(4)


class Session:
    __slots__ = ("edge", "conn", "user", "conn_id", "catchup", "acked", "bucket", "log", "epoch", "state",
                 "sends", "_tasks", "_unacked", "_groups", "_early", "_hello_timer", "_attached", "_traced",
                 "_opening", "_held")

    def __init__(self, *, edge: Edge, conn: WsConn, user: str) -> None:
        self.edge = edge
        self.conn = conn
        self.user = user
        self.conn_id = f"{edge.edge_id}-{next(_conn_ids)}"
        self.catchup = Catchup(max_per_user=edge.settings.inbox_max_per_user)  # the cursor and when to read INBOX
        self.acked = 0
        self.epoch = ""  # the INBOX epoch this socket's cursor belongs to (set at welcome)
        self.state = WAIT_HELLO
        s = edge.settings
        self.bucket = TokenBucket(rate=s.rate_per_sec, burst=s.rate_burst)
        # bind() on the edge's logger: 1.1 µs, where a new logger per socket
        # cost 6.3 µs (4 % of a storm edge's CPU, py-spy)
        self.log = edge.session_log.bind(conn=self.conn_id, user=user)
        self.sends = Sends(user=user, write=conn.send, replies=edge.replies, subjects=edge.subjects,
                           partitions=s.partitions, timeout=s.send_timeout,
                           pause=self._hold, resume=self._release,
                           tracer=edge.tracer, device=self.conn_id, budget=edge.send_budget)
        self._tasks: set[asyncio.Task[None]] = set()
        # (cursor, Nats-Msg-Id "conv:seq:user") of entries sent and not yet
        # acked, turned into delivered receipts on ack. Bounded like the
        # outbox: a client that never acks loses only old receipt detail
        # (watermarks are monotonic; a later ack covers it).
        self._unacked: deque[tuple[int, str]] = deque(maxlen=s.send_queue_frames * 2)
        self._groups: set[str] = set()  # large groups this socket reads directly
        # Frames read in the same chunk as hello, handled once the session is live
        # (reading is paused meanwhile, so this holds at most one read's worth).
        self._early: list[bytes] = []
        self._attached = False
        # Traced messages delivered on this socket and not yet acked: cursor
        # -> the message (conv, seq, id, sender), for edge.acked. None until
        # the first traced delivery (untraced traffic never allocates it).
        self._traced: dict[int, tuple[str, int, str, str]] | None = None
        # When the upgrade was accepted: counted in edge.opening (admission)
        # until synced or closed (None since); how long it took feeds Retry-After.
        self._opening: float | None = time.monotonic()
        # Frames read while sends are paused (edge/sends.py): reading stops,
        # but what one read already brought in waits here, in order, so the
        # in-flight bounds are hard. At most one socket read (~256 KiB).
        self._held: deque[bytes] | None = None
        # hello_timeout: a socket that never says hello only costs memory.
        self._hello_timer = asyncio.get_running_loop().call_later(s.hello_timeout, self._no_hello)

    @property
    def cursor(self) -> int:
        """INBOX sequence of the last entry sent down this socket."""
        return self.catchup.cursor

    @cursor.setter
    def cursor(self, value: int) -> None:
        self.catchup.cursor = value

    # -- lifecycle (called by edge.transport) ----------------------------------------
    def on_frame(self, data: bytes) -> None:
        state = self.state
        if state == LIVE:
            if self._held is None:
                self._handle(data)
            else:
                self._held.append(data)
        elif state == HELLO:
            self._early.append(data)
        elif state == WAIT_HELLO:
            self._first_frame(data)

    def _hold(self) -> None:
        """Sends paused: stop reading, and hold what was read already."""
        if self._held is None:
            self._held = deque()
        self.conn.pause_reading("sends")

    def _held_now(self) -> deque[bytes] | None:
        """``self._held`` as it is now: ``_handle`` may have paused the sends again."""
        return self._held

    def _release(self) -> None:
        """Sends may go on: handle what was held (until they pause again), then read."""
        held = self._held
        self._held = None
        while held:
            self._handle(held.popleft())
            again = self._held_now()  # (read through a call: mypy narrowed self._held to None above)
            if again is not None:  # paused again: the rest waits, in front of anything newer
                again.extendleft(reversed(held))
                return
        if self.state == LIVE:
            self.conn.resume_reading("sends")

    def on_slow_consumer(self) -> None:
        self.edge.metrics.slow_consumers.inc()
        self.log.info("slow consumer disconnected", held_bytes_limit=self.conn.server.config.outbox_bytes)

    def on_close(self) -> None:
        self.state = CLOSED
        self._opened()
        self.catchup.close()
        self._hello_timer.cancel()
        self.sends.close()
        for t in tuple(self._tasks):
            t.cancel()
        self.edge.session_closed(self)
        if self._attached:
            hub = self.edge.hub
            for conv in self._groups:
                hub.detach_conv(conv, self)
            hub.detach(self.user, self)
            self.edge.on_disconnect(self)

    def _step(self, step: str, since: float | None) -> float:
        """Time an opening step that began at ``since`` (None: no opening to
        time); the time it ended, which the next step begins at."""
        now = time.monotonic()
        if since is not None and self._opening is not None:
            self.edge.metrics.opening_steps[(step,)].observe(now - since)
        return now

    def _opened(self, *, synced: bool = False) -> None:
        if self._opening is not None:
            took, self._opening = time.monotonic() - self._opening, None
            # Only a synced opening says how long one takes: a client that gave
            # up (its open timeout) held its place ~10 s and would drag the
            # estimate, and every appointment, down (bench storm: a 28 s stall).
            self.edge.opened(took if synced else None)

    def _no_hello(self) -> None:
        if self.state == WAIT_HELLO:
            self.conn.close(CLOSE_HELLO_TIMEOUT, "no hello frame in time")

    def _first_frame(self, data: bytes) -> None:
        try:
            frame = self._decode(data)
            if not isinstance(frame, frames.Hello):
                raise BadFrame("the first frame must be hello", code="hello_required")
        except SwitchboardError as exc:
            self._send(frames.error_frame(exc, frames.guess_ref(data)))
            return
        self._hello_timer.cancel()
        t = self._step("hello", self._opening)
        self.state = HELLO
        self.conn.pause_reading("hello")  # the client's next frames wait until the replay is done
        self._spawn(self._start(frame, t))

    async def _start(self, hello: frames.Hello, t: float) -> None:
        try:
            self._attached = True  # from here on, on_close detaches
            # The user's SUB (if this is their first socket here) is queued
            # on the connection the INBOX read goes over, before the read: the
            # server processes both in that order (switchboard/bus/directread.py),
            # so an entry stored in between is replayed or delivered live.
            self.edge.hub.attach(self.user, self)
            t = self._step("subscribe", t)
            self.edge.on_connect(self)
            await self._hello(hello, t)
        except asyncio.CancelledError:
            raise
        except BACKEND_AWAY as exc:
            # e.g. the INBOX read of a hello: the client should come back
            # shortly, elsewhere if need be.
            self._try_again("connection closed: backend unavailable", error=type(exc).__name__)
            return
        except Exception:  # noqa: BLE001 - one connection's bug must not take the edge down
            self._internal_error("connection failed")
            return
        if self.state != HELLO:
            return
        self.state = LIVE
        self._opened(synced=True)
        early, self._early = self._early, []
        for data in early:
            if self.state == LIVE:
                self._handle(data)
        self.conn.resume_reading("hello")

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _send(self, frame: frames.ServerFrame) -> None:
        self.conn.send(frames.encode(frame))

    # -- hello, replay, resync ---------------------------------------------------
    async def _hello(self, hello: frames.Hello, t: float) -> None:
        """welcome, then the replay or a resync, then exactly one synced."""
        edge = self.edge
        first_seq, last_seq = await edge.inbox_bounds()  # also notices a recreated INBOX
        epoch = self.epoch = edge.epoch
        self._send(frames.Welcome(user=self.user, epoch=epoch))
        if stale_bounds(hello.cursor, last_seq):
            # The bounds are cached (inbox_bounds_ttl): an entry stored since, which
            # this client may already have had live, is not in them yet.
            first_seq, last_seq = await edge.inbox_bounds(fresh=True)
            if stale_bounds(hello.cursor, last_seq):  # the read joined may have been sent before this hello
                first_seq, last_seq = await edge.inbox_bounds(fresh=True)
        plan = self.catchup.hello(hello.cursor, hello.epoch, epoch, first_seq, last_seq)
        if plan == FROM_NOW:
            await self._catch_up()
        elif plan == REPLAY:
            if not await self._catch_up(check_trimmed=True):
                await self._resync("cursor_expired", last_seq)
        else:
            await self._resync(plan, last_seq)
        t = self._step("replay", t)
        groups = await self._join_groups()
        self._step("groups", t)
        self._send(frames.Synced(cursor=self.catchup.cursor, groups=groups))

    async def _join_groups(self) -> list[frames.ResyncRange]:
        """Subscribe to the user's large groups, then say how far each is
        (once the SUBs are in effect: nothing after ``upto`` is missed)."""
        ranges = await self.edge.large_groups(self.user)
        if [r for r in ranges if self.join_group(r.conv)]:
            await self.edge.bus.flush(self.edge.settings.send_timeout)
        return ranges

    def join_group(self, conv: str) -> bool:
        """Read a large group's messages on this socket; True if it made a new SUB."""
        if conv in self._groups:
            return False
        self._groups.add(conv)
        return self.edge.hub.attach_conv(conv, self)

    def on_conv_message(self, msg: BusMsg) -> None:
        if self.catchup.live:
            self.conn.send(msg.data)  # a msg frame without cursor: not an INBOX entry
            if msg.hdr and msg.hdr.find(TRACE_HEADER_BYTES) >= 0:  # untraced: published without headers
                self._trace_delivered(msg.data, None)

    def on_event(self, data: bytes, large_conv: str | None) -> None:
        """An ephemeral event (typing, presence, receipt, conversation
        notice), already a wire frame whose type edge.hub checked against its
        subject; ``large_conv``: a notice of a large group to read directly."""
        if not self.catchup.live:
            return  # before hello: ephemeral, like everything before the socket is live
        self.conn.send(data)
        if large_conv:
            self.join_group(large_conv)

    async def _resync(self, reason: str, last_seq: int) -> None:
        """resync (what to fetch from history), then live from ``last_seq``;
        the caller sends the one ``synced``."""
        self.catchup.resync(last_seq)
        ranges = await self.edge.resync_ranges(self.user)
        self._send(frames.Resync(reason=reason, ranges=ranges, cursor=last_seq))
        self.log.info("resync", reason=reason)
        await self._catch_up()

    async def _catch_up(self, *, check_trimmed: bool = False) -> bool:
        """Send INBOX entries after the cursor until none is pending (and
        again while live ones arrived meanwhile), then go live. With
        ``check_trimmed``, return False (sending nothing) if the user's
        entries after the cursor may have been trimmed by the per-user limit."""
        edge, core = self.edge, self.catchup
        subject = edge.subjects.inbox(self.user)
        # Replay respects backpressure: a batch is at most half the socket
        # queue, in frames and in bytes (send_queue_bytes: the server stops
        # the batch there), and it is written only once the socket has
        # drained (right after the check: no await between, so the batch goes
        # to the transport in this tick's flush, where it counts against the
        # socket's byte bound).
        size = max(1, min(edge.settings.replay_batch, edge.settings.send_queue_frames // 2))
        max_bytes = edge.settings.send_queue_bytes // 2
        core.start_read(check_trimmed=check_trimmed)
        try:
            while True:
                batch = await edge.direct.batch(stream=edge.inbox_stream, subject=subject,
                                                start_seq=core.cursor + 1, batch=size, max_bytes=max_bytes,
                                                timeout=edge.settings.send_timeout)
                entries = batch.entries
                if core.trimmed(entries[0][0] if entries else 0, len(entries) + batch.num_pending):
                    return False
                await self.conn.drained()
                if not self.conn.is_open:
                    return True
                for seq, headers, data in entries:
                    if core.on_replay(seq):
                        self._put_entry(seq, headers.get("Nats-Msg-Id"), TRACE_HEADER in headers, data)
                if not core.after_batch(len(entries), batch.num_pending):
                    return True
        finally:
            core.end_read()

    # -- bus → socket -------------------------------------------------------------
    def on_bus_message(self, msg: BusMsg) -> None:
        """A stored entry (INBOX republish, with Nats-Sequence: edge.hub
        forwards nothing else from the live subject)."""
        core = self.catchup
        if not core.live:
            return  # before hello: the replay will read it from INBOX
        # Three header fields looked up in the raw block (no parse of the
        # other four the republish carries: ~3 µs per delivery saved).
        hdr = msg.hdr
        seq_b = header_at(hdr, SEQUENCE_KEY)
        if seq_b is None:
            return  # not a stored entry (edge.hub drops and counts these first)
        seq = int(seq_b)
        action = core.on_live(seq, int(header_at(hdr, LAST_SEQUENCE_KEY) or 0))
        if action == DELIVER:
            msg_id = header_at(hdr, MSG_ID_KEY)
            self._put_entry(seq, msg_id.strip().decode() if msg_id else None, hdr.find(TRACE_HEADER_BYTES) >= 0,
                            msg.data)
        elif action == GAP:
            self.edge.metrics.gaps.inc()
            self._spawn(self._fill())  # missed one: read it from INBOX

    def recheck(self) -> None:
        """The edge's bus connection was lost and is back: INBOX entries
        republished meanwhile never reached this edge (core NATS), and the
        last of them leaves no gap for :meth:`on_bus_message` to notice.
        Read INBOX after the cursor, as for a gap (or once more, if a read is
        running; before hello its own read will)."""
        if self.conn.is_open and self.catchup.on_reconnect():
            self._spawn(self._fill())

    async def _fill(self) -> None:
        """An INBOX read of a live socket (a gap, a bus reconnect, a lost
        path tick). A failed read is retried with backoff for
        ``reread_retry_sec`` (an INBOX leader election or a gateway
        re-forming passes in seconds); if it still fails, the socket cannot
        be told what it missed, and no later entry may come to reveal the gap
        again: close it (try again), so the client replays from its cursor.
        Unhandled, the failure was a task exception nobody retrieved and a
        gap left open."""
        retry = Backoff(initial=REREAD_RETRY_FIRST_SEC, cap=REREAD_RETRY_CAP_SEC)
        give_up = asyncio.get_running_loop().time() + self.edge.settings.reread_retry_sec
        while True:
            try:
                await self._catch_up()
                return
            except asyncio.CancelledError:
                raise
            except BACKEND_AWAY as exc:
                pause = retry.delay()
                if not self.conn.is_open:
                    return
                if asyncio.get_running_loop().time() + pause < give_up:
                    await asyncio.sleep(pause)
                    continue
                self._try_again("connection closed: INBOX read failed", error=type(exc).__name__,
                                tries=retry.attempt)
                return
            except Exception:  # noqa: BLE001 - one connection's bug must not take the edge down
                self._internal_error("INBOX read failed")
                return

    def _try_again(self, event: str, **kw: object) -> None:
        """Close with 1013: NATS or a service behind it is away; the client
        comes back with backoff and replays from its cursor, elsewhere if
        need be."""
        self.log.info(event, **kw)
        self.conn.close(CLOSE_TRY_AGAIN, "service unavailable; reconnect with backoff")

    def _internal_error(self, event: str) -> None:
        """Close with 1011 after a bug; called from an ``except`` block (the traceback is logged)."""
        self.log.exception(event)
        self.conn.close(1011, "internal error")

    def _put_entry(self, seq: int, msg_id: str | None, traced: bool, data: bytes) -> None:
        self.conn.send(frames.with_cursor(data, seq))
        if msg_id:
            self._unacked.append((seq, msg_id))
        if traced:
            self._trace_delivered(data, seq)

    # -- trace (switchboard/trace.py): traced messages only ------------------------
    def _trace_delivered(self, data: bytes, cursor: int | None) -> None:
        """edge.delivered for a traced message written to this socket; its
        cursor is remembered for edge.acked (pull-mode messages have none)."""
        try:
            m = frames.decode_server_frame(data)
        except Exception:  # noqa: BLE001 - a trace never fails a delivery
            return
        if not isinstance(m, frames.Msg):
            return
        self.edge.tracer.record("edge.delivered", conv=m.conv, id=m.id, sender=m.from_, seq=m.seq,
                                user=self.user, device=self.conn_id, cursor=cursor)
        if cursor is not None:
            if self._traced is None:
                self._traced = {}
            elif len(self._traced) >= self.edge.settings.send_queue_frames:
                self._traced.pop(next(iter(self._traced)))  # bounded like _unacked: the oldest goes
            self._traced[cursor] = (m.conv, m.seq, m.id, m.from_)

    def _trace_acked(self, cursor: int) -> None:
        traced = self._traced
        assert traced is not None
        for c in [c for c in traced if c <= cursor]:
            conv, seq, id_, sender = traced.pop(c)
            self.edge.tracer.record("edge.acked", conv=conv, id=id_, sender=sender, seq=seq, user=self.user,
                                    device=self.conn_id, cursor=c)
        if not traced:
            self._traced = None

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
        try:
            return frames.decode_client_frame(data, max_body=s.max_body_bytes)
        except SwitchboardError:
            raise
        except Exception:  # noqa: BLE001 - a decoder surprise costs this frame an error, never the socket (1011)
            self.log.exception("frame decode failed")
            raise BadFrame("unreadable frame") from None

    def _handle(self, data: bytes) -> None:
        """One client frame, synchronously: sends and acks (the hot path) and
        reads never make a task; other requests are one coroutine each."""
        self.edge.metrics.frames_in += 1
        try:
            frame = self._decode(data)
            if not self.bucket.take():
                raise RateLimited(f"more than {self.edge.settings.rate_per_sec:g} frames/s")
        except SwitchboardError as exc:
            if isinstance(exc, RateLimited) and type(frame) is frames.Send:  # a refused traced send: recorded
                self.sends.refused(frame, exc.code)
            self._send(frames.error_frame(exc, frames.guess_ref(data)))
            return
        kind = type(frame)
        if kind is frames.Send:
            self.sends.send(frame)  # type: ignore[arg-type]
        elif kind is frames.Ack:
            cursor = cast(frames.Ack, frame).cursor  # type() is, not isinstance: the hot path
            if cursor > self.acked:
                self.acked = min(cursor, self.catchup.cursor)
                self.edge.on_ack(self, self.acked)
                if self._traced is not None:
                    self._trace_acked(self.acked)
        elif kind is frames.Hello:
            self._send(frames.error_frame(BadFrame("hello was already received"), None))
        else:
            handler = self.edge.sync_handlers.get(kind)
            if handler is not None:
                try:
                    handler(self, frame)
                except SwitchboardError as exc:
                    self._send(frames.error_frame(exc, getattr(frame, "id", None)))
            else:
                self._spawn(self._do_other(frame))

    async def _do_other(self, frame: frames.ClientFrame) -> None:
        ref = getattr(frame, "id", None)
        try:
            out = await self.edge.handle_frame(self, frame)
            if out is not None:
                self._send(out)
        except SwitchboardError as exc:
            self._send(frames.error_frame(exc, ref))

    def close(self, code: int, reason: str) -> None:
        self.conn.close(code, reason)

