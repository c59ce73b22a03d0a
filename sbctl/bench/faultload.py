"""One load-generator process of ``bench faults``: clients that outlive a fault.

Like :mod:`sbctl.bench.loadgen` (raw protocol v1 over
:mod:`sbctl.bench.wsclient`, frames handled inline, bodies = the send time),
with what a fault needs on top:

- every client has a home edge among several URLs; when its socket closes
  (the edge died, a restart) it reconnects to the *next* edge, and keeps
  trying the edges in turn, with jittered backoff; ``hello`` carries its
  cursor, so the edge replays what it missed;
- sends are tracked by id until a ``sent`` answer: after a reconnect, a
  ``retry: true`` error or PENDING_RESEND_SEC without an answer, the same id
  is sent again (the sequencer stores an id once);
- the accounting is per message id, per phase (one phase per fault): every
  confirmed send must reach every other member exactly once (``lost``,
  ``duplicated`` = an id a client received twice), and each client must see
  each conversation's seqs increasing (``out_of_order`` = a seq below one
  already seen, which is not a duplicate id);
- every delivery's (send time, latency) is returned, so the parent can put
  the p99 of the fault window apart from the rest.

The parent drives phases over a command pipe (``go``, ``stop``, ``quit``)
and reads ``tick`` lines and one ``result`` per phase on a report pipe.
"""

from __future__ import annotations

import asyncio
import random
import time
from array import array
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

import msgspec

from sbctl.bench.loadgen import In
from sbctl.bench.wsclient import Flusher, HandshakeError, WsConn

TICK_SEC = 0.005  # sender wake-up period
ACK_EVERY_SEC = 0.25  # clients ack their cursor this often, as the SDK does
PROGRESS_EVERY_SEC = 1.0
CONNECT_CONCURRENCY = 200  # handshakes in flight per process at setup
STEP_TIMEOUT_SEC = 20.0  # one connect + hello; a reconnect storm on a busy box takes seconds
# A send with no answer for this long is sent again with the same id (a lost
# answer; the edge's own send_timeout answers `unavailable` after 5 s).
PENDING_RESEND_SEC = 8.0
RECONNECT_MAX_DELAY_SEC = 2.0


_decode = msgspec.json.Decoder(In).decode


@dataclass(kw_only=True)
class FaultSpec:
    index: int
    urls: list[str]  # every edge, ws://host:port/ws
    users: list[tuple[str, str, int]]  # (user id, token, home edge index)
    pairs: list[tuple[int, int]]  # 1:1 conversations (indices into users)
    group: list[int] = field(default_factory=list)  # one group conversation's members (may be empty)
    pair_rate: float = 0.0  # msgs/s over this process's pairs
    group_rate: float = 0.0  # msgs/s into the group
    drain_idle: float = 30.0  # end a drain once nothing progressed for this long
    drain_max: float = 120.0


@dataclass(kw_only=True)
class PhaseResult:
    """One phase of one process (merged over processes by the parent)."""

    sent: int = 0
    confirmed: int = 0
    expected: int = 0  # deliveries owed for confirmed sends
    delivered: int = 0  # first arrivals of an id at a member
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    unconfirmed: int = 0  # sends never answered `sent`
    refused: int = 0  # sends answered with a final (retry: false) error
    reconnects: int = 0
    resends: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    send_ns: bytes = b""  # array('q'): send time of each delivery
    lat_ns: bytes = b""  # array('q'): its latency
    missing: list[str] = field(default_factory=list)  # examples of lost messages
    disorder: list[str] = field(default_factory=list)  # examples of out-of-order arrivals
    late: int = 0  # deliveries the previous phase had counted lost (they came after its drain)
    hole_ms: float = 0.0  # the longest a lower seq arrived after a higher one


class FaultClient(WsConn):
    def __init__(self, w: FaultWorker, i: int, user: str, token: str, home: int) -> None:
        super().__init__(w.flusher)
        self.w = w
        self.i = i
        self.user = user
        self.token = token
        self.home = home
        self.edge = home
        self.cursor: int | None = None
        self.acked = 0
        self.top: dict[str, int] = {}  # conv -> highest seq seen
        self.top_at: dict[str, int] = {}  # conv -> when it arrived
        self.seen: set[str] = set()  # message ids received
        self.target = ""
        self.members = 2
        self.synced: asyncio.Future[None] | None = None
        self.reconnecting = False

    def on_text(self, payload: bytes) -> None:
        f = _decode(payload)
        t = f.type
        w = self.w
        if t == "msg":
            cur = f.cursor
            if cur is not None and (self.cursor is None or cur > self.cursor):
                self.cursor = cur
            if f.id in self.seen:
                w.ph.duplicated += 1
                return
            self.seen.add(f.id)
            top = self.top.get(f.conv, 0)
            if f.seq < top:
                w.ph.out_of_order += 1
                late = (time.monotonic_ns() - self.top_at[f.conv]) / 1e6
                w.ph.hole_ms = max(w.ph.hole_ms, late)
                if len(w.ph.disorder) < 3:
                    w.ph.disorder.append(f"{self.user} in {f.conv}: seq {f.seq} (id {f.id}, cursor {cur}) "
                                         f"{late:.0f} ms after seq {top}")
            else:
                self.top[f.conv] = f.seq
                self.top_at[f.conv] = time.monotonic_ns()
            if f.from_ == self.user or not f.body.isdigit():
                return  # own echo, or a system message (group created)
            now = time.monotonic_ns()
            sent_ns = int(f.body)
            w.got[f.id] = w.got.get(f.id, 0) + 1
            if f.id in w.lost_before:  # counted lost by the previous phase's drain: it was only late
                w.ph.late += 1
            w.ph.delivered += 1
            w.send_ns.append(sent_ns)
            w.lat_ns.append(now - sent_ns)
            w.last_progress = now
        elif t == "sent":
            entry = w.pending.pop(f.id, None)
            w.attempts.pop(f.id, None)
            if entry is not None:
                w.ph.confirmed += 1
                w.owed[f.id] = entry[0].members - 1
                w.where[f.id] = (f.conv, f.seq)
                w.ph.expected += entry[0].members - 1
                w.last_progress = time.monotonic_ns()
        elif t == "error":
            w.on_error(f)
        elif t == "synced":
            if self.cursor is None or (f.cursor or 0) > self.cursor:
                self.cursor = f.cursor
            if self.synced is not None and not self.synced.done():
                self.synced.set_result(None)
        elif t == "resync":  # never expected here: a cursor the edge could not replay from
            w.count(f"resync_{f.reason}")
        elif t == "conv":
            w.on_conv(f)

    def send(self, mid: str, body: str) -> None:
        text = '{"type":"send","id":"%s",%s,"body":"%s"}' % (mid, self.target, body)
        self.w.pending[mid] = (self, text, time.monotonic())
        if not self.reconnecting:  # else written once synced again (a frame before hello is refused)
            self.send_text(text)

    # -- cold path ----------------------------------------------------------------------------
    async def open(self) -> None:
        """Connect to the current edge, else the next ones in turn, and hello until synced."""
        self.reconnecting = True  # a close while opening is this loop's to handle, not on_closed's
        try:
            await self._open()
        finally:
            self.reconnecting = False

    async def _open(self) -> None:
        delay = 0.05
        n = len(self.w.spec.urls)
        while True:
            try:
                await self.connect(f"{self.w.spec.urls[self.edge]}?token={self.token}", timeout=STEP_TIMEOUT_SEC)
                self.synced = asyncio.get_running_loop().create_future()
                self.send_text('{"type":"hello","cursor":%s}' % ("null" if self.cursor is None else self.cursor))
                await asyncio.wait_for(self.synced, STEP_TIMEOUT_SEC)
                return
            except HandshakeError as exc:
                self.w.count(f"http_{exc.status}")
                if exc.status != 503:  # 503: that edge's admission limit; try it again later
                    self.edge = (self.edge + 1) % n
            except (TimeoutError, OSError) as exc:
                self.w.count(type(exc).__name__)
                self.edge = (self.edge + 1) % n
                if self.transport is not None:
                    self.transport.abort()
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, RECONNECT_MAX_DELAY_SEC)

    async def go_home(self) -> None:
        """Close and reconnect to the home edge (between phases, after a fault moved it)."""
        while self.reconnecting:
            await asyncio.sleep(0.05)
        self.reconnecting = True
        try:
            self.close()
            for _ in range(100):  # the old connection's connection_lost must run before a new connect
                if self.transport is None:
                    break
                await asyncio.sleep(0.02)
            if self.transport is not None:
                self.transport.abort()
                await asyncio.sleep(0)
            self.edge = self.home
            await self._open()
        finally:
            self.reconnecting = False

    def connection_lost(self, exc: Exception | None) -> None:
        s = self.synced
        if s is not None and not s.done():
            s.set_exception(ConnectionError("closed before synced"))
        super().connection_lost(exc)
        hs = self._handshake  # a connect that timed out has left it; nobody awaits it any more
        if hs is not None and hs.done() and not hs.cancelled():
            hs.exception()
        if s is not None and s.done() and not s.cancelled():
            s.exception()

    def on_closed(self) -> None:
        if self.w.closing or self.reconnecting:
            return
        self.w.ph.reconnects += 1
        self.w.count(f"close_{self.close_code}")
        self.edge = (self.edge + 1) % len(self.w.spec.urls)  # the other edge first
        self.reconnecting = True
        self.w.spawn(self._reopen())

    async def _reopen(self) -> None:
        await asyncio.sleep(0.05 * random.random())
        await self.open()
        for c, text, _ in list(self.w.pending.values()):  # unanswered sends: the same id again
            if c is self:
                self.w.ph.resends += 1
                self.send_text(text)


class FaultWorker:
    def __init__(self, spec: FaultSpec, report: Connection | None) -> None:
        self.spec = spec
        self.report = report
        self.loop = asyncio.get_running_loop()
        self.flusher = Flusher(self.loop)
        self.clients = [FaultClient(self, i, u, t, h) for i, (u, t, h) in enumerate(spec.users)]
        self.pending: dict[str, tuple[FaultClient, str, float]] = {}  # id -> (sender, frame, last written)
        self.attempts: dict[str, int] = {}  # id -> retry: true answers so far
        self.owed: dict[str, int] = {}  # confirmed id -> deliveries owed (this phase)
        self.got: dict[str, int] = {}  # id -> members that received it
        self.lost_before: set[str] = set()  # ids the previous phase counted lost
        self.where: dict[str, tuple[str, int]] = {}  # confirmed id -> (conv, seq), for the report of a loss
        self.ph = PhaseResult()
        self.send_ns = array("q")
        self.lat_ns = array("q")
        self.closing = False
        self.sending = False
        self.last_progress = 0
        self._tasks: set[asyncio.Task] = set()
        self._conv_waiters: dict[str, asyncio.Future[str]] = {}
        self._prefix = ""
        self._n = 0
        self._pair_k = self._group_k = 0
        # Every pair's first member, then every second member: the first len(pairs)
        # sends reach every conversation once (the warm-up creates them all).
        self._pair_senders = [self.clients[p[0]] for p in spec.pairs] + [self.clients[p[1]] for p in spec.pairs]
        self._group_senders = [self.clients[i] for i in spec.group]

    def count(self, key: str) -> None:
        self.ph.errors[key] = self.ph.errors.get(key, 0) + 1

    def spawn(self, coro) -> None:
        t = self.loop.create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    def on_error(self, f: In) -> None:
        self.count(f.code)
        ref = f.ref or ""
        if ref not in self.pending:
            return
        if f.retry:  # jittered exponential backoff per id, as docs/protocol.md tells clients (and the SDK does)
            n = self.attempts[ref] = self.attempts.get(ref, 0) + 1
            delay = min(0.1 * 2 ** n, 5.0) * (0.5 + random.random())
            self.loop.call_later(delay, self._resend, ref)
        else:
            del self.pending[ref]
            self.ph.refused += 1

    def _resend(self, mid: str) -> None:
        entry = self.pending.get(mid)
        if entry is not None and entry[0].is_open and not entry[0].reconnecting:
            self.ph.resends += 1
            self.pending[mid] = (entry[0], entry[1], time.monotonic())
            entry[0].send_text(entry[1])

    def on_conv(self, f: In) -> None:
        fut = self._conv_waiters.pop(f.ref or "", None)
        if fut is not None and not fut.done():
            fut.set_result(f.conv)

    @property
    def connected(self) -> int:
        return sum(1 for c in self.clients if c.is_open and c.synced is not None and c.synced.done()
                   and not c.reconnecting)

    # -- setup ------------------------------------------------------------------------------------
    async def setup(self) -> None:
        sem = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def open_one(c: FaultClient) -> None:
            async with sem:
                await c.open()

        await asyncio.gather(*(open_one(c) for c in self.clients))
        for a, b in self.spec.pairs:
            ca, cb = self.clients[a], self.clients[b]
            ca.target, cb.target = '"to":"%s"' % cb.user, '"to":"%s"' % ca.user
        if self.spec.group:
            members = [self.clients[i] for i in self.spec.group]
            fut = self.loop.create_future()
            self._conv_waiters["g0"] = fut
            users = ",".join('"%s"' % m.user for m in members)
            members[0].send_text('{"type":"conv.create","id":"g0","members":[%s]}' % users)
            conv = await asyncio.wait_for(fut, STEP_TIMEOUT_SEC)
            for m in members:
                m.target, m.members = '"conv":"%s"' % conv, len(members)
        await asyncio.sleep(0.5)  # the group's system message arrives before the first phase
        self.loop.call_later(ACK_EVERY_SEC, self._ack)
        self.loop.call_later(PROGRESS_EVERY_SEC, self._progress)
        self.loop.call_later(1.0, self._resend_stale)

    # -- phases ------------------------------------------------------------------------------------
    def go(self, prefix: str) -> None:
        self.ph = PhaseResult()
        self.owed.clear()
        self.got.clear()
        self.where.clear()
        self.send_ns, self.lat_ns = array("q"), array("q")
        self._prefix, self._n = prefix, 0
        self._t0 = time.monotonic_ns()
        self._sent_pairs = self._sent_group = 0
        self.sending = True
        self._tick()

    def _tick(self) -> None:
        if not self.sending:
            return
        now = time.monotonic_ns()
        el = (now - self._t0) / 1e9
        body = str(now)
        spec = self.spec
        if self._pair_senders:
            due = int(el * spec.pair_rate) - self._sent_pairs
            senders, k = self._pair_senders, self._pair_k
            for _ in range(max(0, due)):
                senders[k].send(f"{self._prefix}{self._n}", body)
                self._n += 1
                k = (k + 1) % len(senders)
            self._pair_k, self._sent_pairs = k, self._sent_pairs + max(0, due)
        if self._group_senders:
            due = int(el * spec.group_rate) - self._sent_group
            senders, k = self._group_senders, self._group_k
            for _ in range(max(0, due)):
                senders[k].send(f"{self._prefix}{self._n}", body)
                self._n += 1
                k = (k + 1) % len(senders)
            self._group_k, self._sent_group = k, self._sent_group + max(0, due)
        self.loop.call_later(TICK_SEC, self._tick)

    async def stop(self) -> PhaseResult:
        """Stop sending, wait for every answer and delivery owed, return the phase's figures."""
        self.sending = False
        ph = self.ph
        ph.sent = self._n
        start = time.monotonic()
        self.last_progress = time.monotonic_ns()
        while time.monotonic() - start < self.spec.drain_max:
            if not self.pending and self.connected == len(self.clients) and not self._owed_now():
                break
            if (time.monotonic_ns() - self.last_progress) / 1e9 > self.spec.drain_idle:
                break
            await asyncio.sleep(0.05)
        ph.unconfirmed = len(self.pending)
        ph.lost = self._owed_now()
        self.lost_before = {mid for mid, n in self.owed.items() if self.got.get(mid, 0) < n}
        if ph.lost:
            ph.missing = [f"{mid} ({self.where[mid][0]} seq {self.where[mid][1]}): {self.got.get(mid, 0)} of {n} "
                          f"members got it" for mid, n in self.owed.items() if self.got.get(mid, 0) < n][:5]
        ph.send_ns, ph.lat_ns = self.send_ns.tobytes(), self.lat_ns.tobytes()
        self.attempts.clear()
        self.pending.clear()  # unconfirmed sends of this phase are counted, not carried over
        return ph

    async def home(self) -> None:
        sem = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def one(c: FaultClient) -> None:
            async with sem:
                await c.go_home()

        await asyncio.gather(*(one(c) for c in self.clients if c.edge != c.home))

    def _owed_now(self) -> int:
        """Deliveries owed for confirmed sends and not received yet."""
        got = self.got
        return sum(max(0, n - got.get(mid, 0)) for mid, n in self.owed.items())

    def _ack(self) -> None:
        for c in self.clients:
            if c.is_open and not c.reconnecting and c.cursor is not None and c.cursor > c.acked:
                c.acked = c.cursor
                c.send_text('{"type":"ack","cursor":%d}' % c.cursor)
        self.loop.call_later(ACK_EVERY_SEC, self._ack)

    def _resend_stale(self) -> None:
        now = time.monotonic()
        for mid, (c, text, at) in list(self.pending.items()):
            if now - at > PENDING_RESEND_SEC and c.is_open and not c.reconnecting:
                self.ph.resends += 1
                self.pending[mid] = (c, text, now)
                c.send_text(text)
        self.loop.call_later(1.0, self._resend_stale)

    def _progress(self) -> None:
        if self.report is not None and not self.closing:
            ph = self.ph
            self.report.send(("tick", self.spec.index, ph.confirmed, ph.delivered, self.connected,
                              len(self.pending), ph.reconnects))
            self.loop.call_later(PROGRESS_EVERY_SEC, self._progress)

    async def close(self) -> None:
        self.closing = True
        for c in self.clients:
            c.close()
        await asyncio.sleep(0.1)
        for t in list(self._tasks):
            t.cancel()


def worker_main(spec: FaultSpec, commands: Connection, report: Connection) -> None:
    """Entry point of a load-generator process (multiprocessing target)."""
    import ctypes
    import signal

    from sbctl.bench.fabric import prepare_client_process

    try:  # die with the bench, even if it is killed before it says quit (PR_SET_PDEATHSIG)
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)
    except OSError:
        pass
    prepare_client_process()

    async def main() -> None:
        w = FaultWorker(spec, report)
        await w.setup()
        report.send(("ready", len(w.clients)))
        while True:
            cmd = await w.loop.run_in_executor(None, commands.recv)
            if cmd[0] == "go":
                w.go(cmd[1])
            elif cmd[0] == "stop":
                report.send(("result", spec.index, await w.stop()))
            elif cmd[0] == "home":
                await w.home()
                report.send(("homed", spec.index))
            else:
                break
        await w.close()

    try:
        asyncio.run(main())
    except BaseException as exc:  # report, so the parent does not wait forever
        report.send(("failed", spec.index, f"{type(exc).__name__}: {exc}"))
        raise
