"""One load-generator process of ``bench delivery``: lean raw WebSocket clients.

Speaks wire protocol v1 directly over :mod:`sbctl.bench.wsclient`
(hand-written frames, one socket write per event-loop tick, frames handled
inline in ``data_received``: no task, future or queue per message), so its
own CPU per message stays far below the fabric's:

1. connect every client, ``hello`` with no cursor, wait for ``synced``;
   groups above two members are created with ``conv.create``;
2. tell the parent it is ready, wait for the common start time;
3. every TICK_SEC send what is due at this process's share of the total
   rate, round-robin over its clients (so each client sends an even
   rate/clients per second, under the edge's per-connection limit), each
   body being the send time (``time.monotonic_ns()``: one clock for the
   whole host, so every process agrees);
4. for every ``msg`` from another member record now - body, and check that
   each client sees each conversation's seqs contiguous (no gap, no duplicate);
   every second report progress (sent, confirmed, delivered) to the parent;
5. stop sending, wait until every confirmed send has reached every other
   member (or nothing arrives for ``drain_idle`` seconds), report.

Clients ack their cursor every ACK_EVERY_SEC (batched, as the SDK does; the
ack rides in the write of the client's next send when there is one),
resend the same id after a ``retry: true`` error (jittered backoff, as
docs/protocol.md tells clients to), and reconnect (counted) with their
cursor if the edge closes them, resending what was unanswered.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

import msgspec

from sbctl.bench.report import WorkerResult
from sbctl.bench.wsclient import Flusher, HandshakeError, WsConn

TICK_SEC = 0.002  # sender wake-up period: 2 ms keeps the send schedule smooth at 10k/s
ACK_EVERY_SEC = 0.25  # clients ack their cursor this often (batched, like the SDK)
# The loop polls its sockets at most this often instead of waking for every
# frame: a wake-up (epoll, context switch) costs ~30 µs here, more than the
# frame itself, and at 2k msgs/s frames arrive ~6k times a second. Adds at
# most this much to a measured latency. 0: wake for every event.
POLL_SEC = 0.0
PROGRESS_EVERY_SEC = 1.0  # progress report to the parent (one small pipe write)
CONNECT_CONCURRENCY = 200  # handshakes in flight per process
# Setup steps wait this long: a busy 2-core box answers in well under a second.
SETUP_TIMEOUT_SEC = 60.0


class In(msgspec.Struct):
    """The fields the load generator reads from any server frame."""

    type: str
    body: str = ""
    from_: str = msgspec.field(name="from", default="")
    conv: str = ""
    seq: int = 0
    cursor: int | None = None
    code: str = ""
    id: str = ""
    ref: str | None = None
    retry: bool = False
    reason: str = ""  # a resync's (read by sbctl/bench/faultload.py)


_decode = msgspec.json.Decoder(In).decode


@dataclass(kw_only=True)
class WorkerSpec:
    index: int
    ws_url: str
    users: list[tuple[str, str]]  # (user id, token)
    groups: list[list[int]]  # indices into users; every user in exactly one group
    rate: float  # messages/s this process sends
    duration: float  # measured seconds of sending (after the warm-up)
    warmup: float = 0.0  # seconds of sending first whose latencies are not in the percentiles
    drain_idle: float = 12.0  # stop waiting once nothing arrived for this long (> the edge's 5 s send timeout)
    drain_max: float = 60.0
    poll_sec: float = POLL_SEC
    source_addrs: list[str] = field(default_factory=lambda: ["127.0.0.1"])


class BenchClient(WsConn):
    """One user's socket; its frames are handled inline."""

    def __init__(self, w: Worker, i: int, user: str, token: str) -> None:
        super().__init__(w.flusher)
        self.w = w
        self.r = w.result
        self.i = i
        self.user = user
        self.token = token
        self.cursor: int | None = None
        self.acked = 0
        self.last_seq: dict[str, int] = {}
        self.target = ""  # the send frame's addressing part: "to":"u" or "conv":"c"
        self.group_size = 2
        self.synced: asyncio.Future[None] | None = None
        self.ack_due = False  # the ack timer found a new cursor; the next send carries the ack

    # -- hot path ----------------------------------------------------------------------------------
    def on_text(self, payload: bytes) -> None:
        f = _decode(payload)
        t = f.type
        if t == "msg":
            r = self.r
            cur = f.cursor
            if cur is not None and (self.cursor is None or cur > self.cursor):
                self.cursor = cur
            conv = f.conv
            last = self.last_seq.get(conv)
            if last is not None:
                if f.seq <= last:
                    r.duplicates += 1
                    return
                if f.seq != last + 1:
                    r.gaps += 1
            self.last_seq[conv] = f.seq
            if f.from_ == self.user:
                r.self_echo += 1
                return
            body = f.body
            if not body.isdigit():
                return  # a system message (e.g. group created)
            now = time.monotonic_ns()
            sent_ns = int(body)
            w = self.w
            r.delivered += 1
            w.tick_lat.append(now - sent_ns)
            if sent_ns >= w.measure_from_ns:
                r.latencies_ns.append(now - sent_ns)
            w.last_delivery_ns = now
        elif t == "sent":
            w = self.w
            w.attempts.pop(f.id, None)
            if w.pending.pop(f.id, None) is not None:  # else: an answer to a resend already answered
                self.r.confirmed += 1
                self.r.expected += self.group_size - 1
                if f.seq > w.conv_top.get(f.conv, 0):
                    w.conv_top[f.conv] = f.seq
        elif t == "receipt":
            self.r.receipts += 1
        elif t == "error":
            self.w.on_error(f)
        elif t == "synced":  # (a resync is followed by synced too)
            if self.cursor is None or (f.cursor or 0) > self.cursor:
                self.cursor = f.cursor
            if self.synced is not None and not self.synced.done():
                self.synced.set_result(None)
        elif t == "conv":
            self.w.on_conv(f)

    def send(self, mid: str, body: str) -> None:
        text = '{"type":"send","id":"%s",%s,"body":"%s"}' % (mid, self.target, body)
        self.w.pending[mid] = (self, text)
        if self.ack_due:
            self.write_ack()
        self.send_text(text)

    def write_ack(self) -> None:
        self.ack_due = False
        if self.cursor is not None and self.cursor > self.acked:
            self.acked = self.cursor
            self.send_text('{"type":"ack","cursor":%d}' % self.cursor)

    # -- cold path: connect, hello, reconnect ----------------------------------------------------
    async def open(self) -> None:
        """Connect (retrying the edge's 503 admission answers) and hello until synced."""
        delay = 0.05
        src = self.w.spec.source_addrs[self.i % len(self.w.spec.source_addrs)]
        while True:
            try:
                await self.connect(f"{self.w.spec.ws_url}?token={self.token}", local_addr=(src, 0),
                                   timeout=SETUP_TIMEOUT_SEC)
                break
            except HandshakeError as exc:  # 503: the edge's admission limit; back off with jitter
                self.w.count_error(f"http_{exc.status}")
                if exc.status not in (503, 0):
                    raise
            except (TimeoutError, OSError) as exc:
                self.w.count_error(type(exc).__name__)
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 2.0)
        self.synced = asyncio.get_running_loop().create_future()
        self.send_text('{"type":"hello","cursor":%s}' % ("null" if self.cursor is None else self.cursor))
        await asyncio.wait_for(self.synced, SETUP_TIMEOUT_SEC)

    def on_closed(self) -> None:
        if self.w.closing:
            return
        self.r.reconnects += 1
        self.w.count_error(f"close_{self.close_code}")
        self.w.spawn(self._reopen())

    async def _reopen(self) -> None:
        while not self.w.closing:
            await asyncio.sleep(0.1 * (0.5 + random.random()))
            try:
                await self.open()
                break
            except (TimeoutError, OSError, HandshakeError):
                continue
        for c, text in list(self.w.pending.values()):  # unanswered sends: same id again
            if c is self:
                self.r.resends += 1
                self.send_text(text)


class Worker:
    def __init__(self, spec: WorkerSpec, progress: Connection | None = None) -> None:
        self.spec = spec
        self.progress = progress
        self.loop = asyncio.get_running_loop()
        self.flusher = Flusher(self.loop)
        self.result = WorkerResult(clients=len(spec.users))
        self.clients = [BenchClient(self, i, u, t) for i, (u, t) in enumerate(spec.users)]
        self.first_send_ns = 0
        self.last_delivery_ns = 0
        self.measure_from_ns = 0  # sends from here on count in the latency percentiles
        self.tick_lat: list[int] = []  # latencies since the last progress report
        self.conv_top: dict[str, int] = {}  # conv -> highest seq confirmed by a `sent`
        self.pending: dict[str, tuple[BenchClient, str]] = {}  # id -> unanswered send frame
        self.attempts: dict[str, int] = {}
        self.closing = False
        self._conv_waiters: dict[str, asyncio.Future[str]] = {}
        self._tasks: set[asyncio.Task] = set()
        self._sent = 0
        self._k = 0
        self._offered = 0

    def count_error(self, key: str) -> None:
        self.result.errors[key] = self.result.errors.get(key, 0) + 1

    def spawn(self, coro) -> None:
        t = self.loop.create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    def on_error(self, f: In) -> None:
        self.count_error(f.code)
        ref = f.ref or ""
        entry = self.pending.get(ref)
        if entry is None:
            return
        if f.retry:
            n = self.attempts[ref] = self.attempts.get(ref, 0) + 1
            delay = min(0.1 * 2 ** n, 5.0) * (0.5 + random.random())
            self.loop.call_later(delay, self._resend, ref)
        else:
            del self.pending[ref]  # a final answer: not owed to anyone

    def _resend(self, mid: str) -> None:
        entry = self.pending.get(mid)
        if entry is not None and entry[0].is_open:
            self.result.resends += 1
            entry[0].send_text(entry[1])

    def on_conv(self, f: In) -> None:
        fut = self._conv_waiters.pop(f.ref or "", None)
        if fut is not None and not fut.done():
            fut.set_result(f.conv)

    # -- phases -----------------------------------------------------------------------------
    async def setup(self) -> None:
        sem = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def open_one(c: BenchClient) -> None:
            async with sem:
                await c.open()

        await asyncio.gather(*(open_one(c) for c in self.clients))
        for group in self.spec.groups:
            members = [self.clients[i] for i in group]
            for m in members:
                m.group_size = len(group)
            if len(group) == 2:
                a, b = members
                a.target = '"to":"%s"' % b.user
                b.target = '"to":"%s"' % a.user
            else:
                creator = members[0]
                ref = f"g{creator.i}"
                fut = self.loop.create_future()
                self._conv_waiters[ref] = fut
                users = ",".join('"%s"' % m.user for m in members)
                creator.send_text('{"type":"conv.create","id":"%s","members":[%s]}' % (ref, users))
                conv = await asyncio.wait_for(fut, SETUP_TIMEOUT_SEC)
                for m in members:
                    m.target = '"conv":"%s"' % conv
        await asyncio.sleep(0.5)  # let group-created system messages arrive before measuring
        r = self.result
        r.errors.clear()
        r.self_echo = r.receipts = r.duplicates = r.gaps = 0

    async def run(self, start_ns: int) -> None:
        spec = self.spec
        await asyncio.sleep(max(0, (start_ns - time.monotonic_ns()) / 1e9))
        self.first_send_ns = start_ns
        self._start_ns = start_ns
        self.measure_from_ns = start_ns + int(spec.warmup * 1e9)
        self._end_ns = self.measure_from_ns + int(spec.duration * 1e9)
        self._prefix = f"w{spec.index}m"
        self._done = self.loop.create_future()
        acker = self.loop.call_later(ACK_EVERY_SEC, self._ack)
        self._acker = acker
        self._progress_n = 0
        self.loop.call_later(PROGRESS_EVERY_SEC, self._report_progress)
        if spec.poll_sec > 0:
            self._nap_at = time.monotonic()
            self.loop.call_soon(self._nap)
        self._tick()
        await self._done
        r = self.result
        r.sent = self._sent
        r.offered = self._offered
        r.delivered_in_window = r.delivered
        await self._drain()
        self._acker.cancel()

    def _tick(self) -> None:
        now = time.monotonic_ns()
        if now >= self._end_ns or self.spec.rate <= 0:
            if not self._done.done():
                self._done.set_result(None)
            return
        due = int((now - self._start_ns) * self.spec.rate / 1e9) - self._sent
        if due > 0:
            body = str(now)
            senders = self.clients
            n = len(senders)
            k, sent, prefix = self._k, self._sent, self._prefix
            offered = 0
            for _ in range(due):
                c = senders[k]
                c.send(f"{prefix}{sent}", body)
                offered += c.group_size - 1
                k = k + 1 if k + 1 < n else 0
                sent += 1
            self._k, self._sent = k, sent
            self._offered += offered
        self.loop.call_later(TICK_SEC, self._tick)

    def _nap(self) -> None:
        """Sleep out the rest of the poll period, then let the loop handle
        whatever arrived meanwhile (never blocking in epoll: this callback is
        always pending). A busy loop (a period's worth of work) does not nap."""
        if self.closing:
            return
        self.flusher.flush()  # this tick's frames go out before the nap, not after it
        now = time.monotonic()
        rest = self.spec.poll_sec - (now - self._nap_at)
        if rest > 0:
            time.sleep(rest)
            now += rest
        self._nap_at = now
        self.loop.call_soon(self._nap)

    def _ack(self) -> None:
        """Every ACK_EVERY_SEC: a client with a new cursor owes an ack. It rides
        in the same write as the client's next send; one still owed a period
        later (the client sent nothing) is written on its own. Saves a socket
        write per ack at the cost of acks up to 2 x ACK_EVERY_SEC late."""
        for c in self.clients:
            if not c.is_open:
                continue
            if c.ack_due:
                c.write_ack()
            elif c.cursor is not None and c.cursor > c.acked:
                c.ack_due = True
        self._acker = self.loop.call_later(ACK_EVERY_SEC, self._ack)

    def _report_progress(self) -> None:
        if self._done.done() or self.progress is None:
            return
        self._progress_n += 1
        r = self.result
        lat, self.tick_lat = self.tick_lat, []
        self.progress.send(("tick", self._progress_n, self._sent, self._offered, r.confirmed, r.delivered, lat))
        self.loop.call_later(PROGRESS_EVERY_SEC, self._report_progress)

    async def _drain(self) -> None:
        r = self.result
        deadline = time.monotonic() + self.spec.drain_max
        last_progress, last_seen = time.monotonic(), (-1, -1)
        while time.monotonic() < deadline:
            if not self.pending and r.delivered >= r.expected:
                break
            if (r.delivered, len(self.pending)) != last_seen:
                last_seen, last_progress = (r.delivered, len(self.pending)), time.monotonic()
            elif time.monotonic() - last_progress > self.spec.drain_idle:
                break
            await asyncio.sleep(0.05)
        r.unconfirmed = len(self.pending)
        if r.delivered < r.expected:
            r.missing = self.missing()

    def missing(self, limit: int = 5) -> list[str]:
        """Where deliveries are missing: members whose last seq is below the
        conversation's highest confirmed seq (a loss at the tail, which the
        gap check cannot see). For the fabric's developers, not the totals."""
        out = []
        for c in self.clients:
            for conv, top in self.conv_top.items():
                if conv in c.last_seq:
                    last = c.last_seq.get(conv, 0)
                    if last < top:
                        out.append(f"{c.user} in {conv}: last seq {last}, confirmed up to {top}")
                        if len(out) >= limit:
                            return out
        return out

    async def close(self) -> None:
        self.closing = True
        for c in self.clients:
            c.close()
        await asyncio.sleep(0.1)  # let the close frames go out
        for t in list(self._tasks):
            t.cancel()


def worker_main(spec: WorkerSpec, conn: Connection) -> None:
    """Entry point of a load-generator process (multiprocessing target)."""
    from sbctl.bench.fabric import prepare_client_process

    prepare_client_process()

    async def main() -> None:
        w = Worker(spec, conn)
        await w.setup()
        conn.send(("ready", len(w.clients)))
        msg = await w.loop.run_in_executor(None, conn.recv)
        await w.run(msg[1])
        conn.send(("done", w.result, w.first_send_ns, w.last_delivery_ns))
        await w.close()

    try:
        asyncio.run(main())
    except BaseException as exc:  # report, so the parent does not wait forever
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        raise
