"""The client processes of ``bench storm`` (sbctl/bench/storm.py).

- **Holders** (:func:`holder_main`): each holds a share of the storm
  clients on the storm edges, idle (hello done), acking their cursor. When
  their edge is killed every client reconnects on its own as the Python SDK
  does (``switchboard_client.Client``: exponential backoff from
  ``backoff_min`` to ``backoff_max`` with full jitter, the SDK's own
  defaults, reset once the upgrade succeeds), through the edge's admission
  control (HTTP 503 = try again after its ``Retry-After``, plus up to a
  second of jitter, as the SDK does), sends ``hello`` with its cursor and
  counts itself synced at ``synced``. Every ``msg`` is checked per
  conversation (first seq, contiguous, never repeated) and counted as
  replayed when it came between the reconnect and ``synced``.
- **Traffic** (:func:`traffic_main`): the "other" clients, 1:1 pairs on the
  edge that is not dropped, paced at ``rate`` with latency per second (the
  load generator of ``bench delivery``, sbctl/bench/loadgen.py), and the
  feeders, which send ``feed_rate`` msgs/s to the storm users round-robin
  with ``to`` (before, during and after the drop) and keep the highest
  confirmed seq of each conversation, against which the holders' counts are
  checked.

One clock for every process (``time.monotonic_ns()``, CLOCK_MONOTONIC is
host-wide), so the parent can put the holders' times next to the kill.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import random
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

import msgspec

from sbctl.bench.loadgen import ACK_EVERY_SEC, BenchClient, In, Worker, WorkerSpec
from sbctl.bench.report import WorkerResult
from sbctl.bench.wsclient import Flusher, HandshakeError, WsConn
from switchboard_client import Client
from switchboard_client.backoff import Backoff, retry_after
from switchboard_client.ids import dm_conv

_decode = msgspec.json.Decoder(In).decode
_sdk = inspect.signature(Client.__init__).parameters
# The SDK's reconnect backoff (full jitter), read from its defaults so the
# bench follows the SDK if they change.
SDK_BACKOFF_MIN: float = _sdk["backoff_min"].default
SDK_BACKOFF_MAX: float = _sdk["backoff_max"].default
# The SDK's open_timeout (websockets.connect in switchboard_client.client).
CONNECT_TIMEOUT_SEC = 10.0
# A hello not answered by synced within this is counted and retried (an edge
# answers within send_timeout, 5 s, or closes 1013).
HELLO_TIMEOUT_SEC = 30.0
SETUP_CONCURRENCY = 100  # initial handshakes in flight per holder (not during the storm: then all at once)
SETUP_TIMEOUT_SEC = 60.0  # each step of the initial connect (a busy box answers late, not never)
PROGRESS_SEC = 0.5
SOURCES = [f"127.0.0.{i}" for i in range(1, 9)]  # spread the ephemeral ports (TIME_WAIT of 503 answers)


@dataclass(kw_only=True)
class HolderSpec:
    index: int
    urls: list[str]  # the storm edges; client i uses urls[global index % len(urls)]
    users: list[tuple[int, str, str]]  # (global index, user, token)
    feeders: list[str] = field(default_factory=list)  # who sends to them (their 1:1 conversations)
    nice: int = 0  # added to this process's nice value at start (StormParams.client_nice)


@dataclass(kw_only=True)
class HolderResult:
    clients: int = 0
    synced: int = 0  # reconnected and synced after the drop
    dropped: int = 0
    delivered: int = 0  # msg frames (distinct seqs)
    replayed: int = 0  # of which between a reconnect's hello and its synced
    duplicates: int = 0
    gaps: int = 0  # a seq skipped within a conversation
    resyncs: int = 0  # resync frames (the cursor was not usable: must not happen here)
    errors: dict[str, int] = field(default_factory=dict)  # http_503, ConnectionRefusedError, close_1013...
    attempts: int = 0  # connection attempts after the drop
    sync_ms: list[float] = field(default_factory=list)  # per client: drop -> synced
    last_synced_ns: int = 0
    convs: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)  # conv -> first, last, count, skipped
    # Conversations of clients not back (not synced) at the end: what they
    # are owed waits in INBOX for them, it is not lost.
    away_convs: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    away: int = 0  # clients not synced at the end


class StormClient(WsConn):
    """One storm user: idle, acks, reconnects like the SDK."""

    def __init__(self, h: Holder, gi: int, user: str, token: str) -> None:
        super().__init__(h.flusher)
        self.h, self.gi, self.user = h, gi, user
        self.url = f"{h.spec.urls[gi % len(h.spec.urls)]}?token={token}"
        self.src = SOURCES[gi % len(SOURCES)]
        self.cursor: int | None = None
        self.acked = 0
        self.convs: dict[str, list[int]] = {}
        self.synced: asyncio.Future[None] | None = None
        self.in_hello = False
        self.live = False  # synced on the current connection: acks may go
        self.dropped_ns = 0
        self.synced_ns = 0
        self.reconnecting = False

    def on_text(self, payload: bytes) -> None:
        f = _decode(payload)
        t, r = f.type, self.h.result
        if t == "msg":
            if f.cursor is not None and (self.cursor is None or f.cursor > self.cursor):
                self.cursor = f.cursor
            st = self.convs.get(f.conv)
            if st is None:
                self.convs[f.conv] = [f.seq, f.seq, 1, 0]
            elif f.seq <= st[1]:
                r.duplicates += 1
                return
            else:
                if f.seq != st[1] + 1:
                    r.gaps += 1
                    st[3] += f.seq - st[1] - 1
                st[1] = f.seq
                st[2] += 1
            r.delivered += 1
            if self.in_hello and self.dropped_ns:
                r.replayed += 1
        elif t == "synced":
            if f.cursor is not None and (self.cursor is None or f.cursor > self.cursor):
                self.cursor = f.cursor
            self.in_hello = False
            self.live = True
            if self.synced is not None and not self.synced.done():
                self.synced.set_result(None)
        elif t == "resync":
            r.resyncs += 1
        elif t == "error":
            self.h.count(f"error_{f.code}")

    async def open(self) -> None:
        """Setup: upgrade (HandshakeError on a refusal), hello, wait for synced
        (patient: the box may be busy, and this is before the measurement)."""
        await self.connect(self.url, local_addr=(self.src, 0), timeout=SETUP_TIMEOUT_SEC)
        self.synced = asyncio.get_running_loop().create_future()
        self.in_hello = True
        self.send_text('{"type":"hello","cursor":%s}' % ("null" if self.cursor is None else self.cursor))
        await asyncio.wait_for(self.synced, SETUP_TIMEOUT_SEC)

    async def connect(self, url: str, *, local_addr: tuple[str, int] | None = None, timeout: float = 60.0) -> None:
        try:
            await super().connect(url, local_addr=local_addr, timeout=timeout)
        except BaseException:
            hs = self._handshake  # given up on (timeout): it may still fail later, with nobody waiting
            if hs is not None:
                hs.add_done_callback(_retrieved)
            raise

    def on_closed(self) -> None:
        h = self.h
        self.live = False
        if h.closing or not h.ready:  # during setup, Holder.setup retries
            return
        if self.synced is not None and not self.synced.done():
            self.synced.set_exception(ConnectionError(f"closed {self.close_code} before synced"))
            self.synced.exception()  # retrieved: the reconnect loop sees it, or nobody waits
        if self.close_code is not None:
            h.count(f"close_{self.close_code}")
        if self.synced_ns or not self.dropped_ns:  # it was live: a drop (while reconnecting: the same drop)
            h.result.dropped += 1
            self.dropped_ns = time.monotonic_ns()
            self.synced_ns = 0
        if not self.reconnecting:
            h.spawn(self.reconnect())

    async def reconnect(self) -> None:
        """The SDK's loop (switchboard_client.client.Client._run): sleep a
        full-jitter backoff, connect, hello; reset the backoff once upgraded."""
        self.reconnecting = True
        h = self.h
        wait = Backoff(SDK_BACKOFF_MIN, SDK_BACKOFF_MAX)
        told: float | None = None  # the wait the last refusal's Retry-After asked for
        try:
            while not h.closing:
                await asyncio.sleep(told if told is not None else wait.delay())
                told = None
                h.result.attempts += 1
                try:
                    await self.connect(self.url, local_addr=(self.src, 0), timeout=CONNECT_TIMEOUT_SEC)
                except HandshakeError as exc:
                    h.count(f"http_{exc.status}")
                    told = retry_after(exc.retry_after)  # as the SDK does
                    continue
                except (TimeoutError, OSError) as exc:
                    h.count(type(exc).__name__)
                    continue
                wait.reset()
                self.synced = asyncio.get_running_loop().create_future()
                self.in_hello = True
                self.send_text('{"type":"hello","cursor":%s}' % ("null" if self.cursor is None else self.cursor))
                try:
                    await asyncio.wait_for(self.synced, HELLO_TIMEOUT_SEC)
                except TimeoutError:
                    h.count("hello_timeout")
                    self.close()
                    continue
                except ConnectionError:
                    continue  # closed before synced (counted in on_closed): again
                self.synced_ns = now = time.monotonic_ns()
                r = h.result
                r.synced += 1
                r.sync_ms.append((now - self.dropped_ns) / 1e6)
                r.last_synced_ns = max(r.last_synced_ns, now)
                return
        finally:
            self.reconnecting = False

    def ack(self) -> None:
        if self.live and self.cursor is not None and self.cursor > self.acked:
            self.acked = self.cursor
            self.send_text('{"type":"ack","cursor":%d}' % self.cursor)


def _retrieved(f: asyncio.Future[None]) -> None:
    if not f.cancelled():
        f.exception()


class Holder:
    def __init__(self, spec: HolderSpec) -> None:
        self.spec = spec
        self.loop = asyncio.get_running_loop()
        self.flusher = Flusher(self.loop)
        self.result = HolderResult(clients=len(spec.users))
        self.clients = [StormClient(self, gi, u, t) for gi, u, t in spec.users]
        self.closing = False
        self.ready = False  # set after setup: closes from then on are drops
        self._tasks: set[asyncio.Task] = set()

    def count(self, key: str) -> None:
        self.result.errors[key] = self.result.errors.get(key, 0) + 1

    def spawn(self, coro) -> None:
        t = self.loop.create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def setup(self) -> dict[str, int]:
        """Connect every client (retrying the admission's 503s), hello, synced."""
        sem = asyncio.Semaphore(SETUP_CONCURRENCY)

        async def one(c: StormClient) -> None:
            wait = Backoff(0.05, 2.0)
            async with sem:
                while True:
                    try:
                        await c.open()
                        self.result.synced += 1  # (setup progress; reset when all are in)
                        return
                    except HandshakeError as exc:
                        if exc.status not in (503, 0):
                            raise
                        self.count(f"http_{exc.status}")
                    except (TimeoutError, OSError) as exc:
                        self.count(type(exc).__name__)
                    await asyncio.sleep(wait.delay())

        await asyncio.gather(*(one(c) for c in self.clients))
        self.result.synced = 0
        setup_errors, self.result.errors = self.result.errors, {}
        self.ready = True
        self.loop.call_later(ACK_EVERY_SEC * 4, self._ack)
        return setup_errors

    def _ack(self) -> None:
        for c in self.clients:
            c.ack()
        if not self.closing:
            self.loop.call_later(ACK_EVERY_SEC * 4, self._ack)

    def finish(self) -> HolderResult:
        r = self.result
        for c in self.clients:
            back = c.live and c.is_open
            r.away += not back
            into = r.convs if back else r.away_convs
            for conv, (first, last, count, skipped) in c.convs.items():
                into[conv] = (first, last, count, skipped)
            if not back:  # also the conversations it got nothing of yet
                for f in self.spec.feeders:
                    r.away_convs.setdefault(dm_conv(f, c.user), (0, 0, 0, 0))
        return r

    async def close(self) -> None:
        self.closing = True
        for c in self.clients:
            c.close()
        await asyncio.sleep(0.2)
        for t in list(self._tasks):
            t.cancel()


def holder_main(spec: HolderSpec, conn: Connection) -> None:
    """A holder process: ready -> (progress every PROGRESS_SEC) -> "report" -> result -> "close"."""
    from sbctl.bench.fabric import prepare_client_process

    prepare_client_process()
    if spec.nice:
        os.nice(spec.nice)

    async def main() -> None:
        h = Holder(spec)

        def setup_progress() -> None:
            if not h.ready:
                conn.send(("setup", spec.index, h.result.synced))
                h.loop.call_later(2.0, setup_progress)

        setup_progress()
        conn.send(("ready", spec.index, await h.setup()))
        stop = False

        def progress() -> None:
            if stop:
                return
            r = h.result
            conn.send(("progress", spec.index, r.dropped, r.synced, r.delivered, r.attempts, dict(r.errors)))
            h.loop.call_later(PROGRESS_SEC, progress)

        progress()
        while (cmd := await h.loop.run_in_executor(None, conn.recv)) != "close":
            if cmd == "report":
                stop = True
                conn.send(("result", spec.index, h.finish()))
        await h.close()

    try:
        asyncio.run(main())
    except BaseException as exc:  # report, so the parent does not wait forever
        conn.send(("failed", spec.index, f"{type(exc).__name__}: {exc}"))
        raise


# -- traffic: the other clients and the feeders ------------------------------------------------
@dataclass(kw_only=True)
class TrafficSpec:
    ws_url: str  # the edge that is not dropped
    others: list[tuple[str, str]]  # (user, token), in pairs
    rate: float  # msgs/s among the others
    feeders: list[tuple[str, str]]
    feed_rate: float  # msgs/s from the feeders to the storm users
    targets: list[str]  # the storm users fed round-robin (their conversations made in the set-up)
    warmup: float = 1.0


class FeedClient(BenchClient):
    """A feeder: each send goes to the next storm user."""

    def send(self, mid: str, body: str) -> None:
        self.target = '"to":"%s"' % self.w.next_target()  # type: ignore[attr-defined]
        super().send(mid, body)


class FeedWorker(Worker):
    def __init__(self, spec: WorkerSpec, targets: list[str]) -> None:
        super().__init__(spec, None)
        self.clients = [FeedClient(self, i, u, t) for i, (u, t) in enumerate(spec.users)]
        self.targets = targets
        self._next = 0

    async def make_conversations(self, *, at_once: int = 100, timeout: float = 300.0) -> None:
        """One message to every target before the run: their 1:1 conversations
        exist before the drop (set-up, not storm). At most ``at_once`` sends
        wait for their ``sent``; rate-limited ones are resent as usual."""
        n = len(self.clients)
        deadline = time.monotonic() + timeout
        for i, target in enumerate(self.targets):
            c = self.clients[i % n]
            c.target = '"to":"%s"' % target
            BenchClient.send(c, f"mk{i}", str(time.monotonic_ns()))
            while len(self.pending) >= at_once and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
        while self.pending and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if self.pending:
            raise RuntimeError(f"{len(self.pending)} of the feeders' conversations not made in {timeout:g}s")
        self.result.errors.clear()  # the set-up's rate-limited sends, resent since: not the storm's

    def next_target(self) -> str:
        t = self.targets[self._next]
        self._next = (self._next + 1) % len(self.targets)
        return t

    async def _drain(self) -> None:
        """Wait for the feeders' own answers only: the deliveries are counted by the holders."""
        deadline = time.monotonic() + self.spec.drain_max
        while self.pending and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self.result.unconfirmed = len(self.pending)


def traffic_main(spec: TrafficSpec, conn: Connection) -> None:
    """ready -> "make" -> made -> ("go", start_ns) -> ticks of the others -> "stop" -> ("done", others, feed,
    conv_top)."""
    from sbctl.bench.fabric import prepare_client_process

    prepare_client_process()
    forever = 24 * 3600.0  # sending ends on "stop"

    async def main() -> None:
        pairs = [[i, i + 1] for i in range(0, len(spec.others) - 1, 2)]
        others = Worker(WorkerSpec(index=0, ws_url=spec.ws_url, users=spec.others, groups=pairs, rate=spec.rate,
                                   duration=forever, warmup=spec.warmup, source_addrs=SOURCES[:4]), conn)
        feed = FeedWorker(WorkerSpec(index=1, ws_url=spec.ws_url, users=spec.feeders, groups=[],
                                     rate=spec.feed_rate, duration=forever, source_addrs=SOURCES[4:]),
                          spec.targets)
        random.shuffle(feed.targets)  # no feeder/edge pattern in who gets fed when
        await others.setup()
        await feed.setup()
        conn.send(("ready",))
        msg = await others.loop.run_in_executor(None, conn.recv)
        if msg[0] == "make":  # the storm clients are connected: their fed conversations now
            await feed.make_conversations()
            conn.send(("made",))
            msg = await others.loop.run_in_executor(None, conn.recv)
        runs = asyncio.gather(others.run(msg[1]), feed.run(msg[1]))
        await others.loop.run_in_executor(None, conn.recv)  # "stop"
        for w in (others, feed):
            w._end_ns = 0  # the next tick ends the send window, then each drains
        await runs
        res: tuple[WorkerResult, WorkerResult] = (others.result, feed.result)
        conn.send(("done", *res, dict(feed.conv_top), others.first_send_ns))
        await others.close()
        await feed.close()

    try:
        asyncio.run(main())
    except BaseException as exc:
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        raise
