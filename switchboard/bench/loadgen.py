"""One load-generator process of ``bench delivery`` (raw ``websockets`` clients).

The SDK does more per message than a load generator can afford (dedup sets,
futures per send), so this speaks wire protocol v1 directly:

1. connect every client, ``hello`` with no cursor, wait for ``synced``;
   groups above two members are created with ``conv.create``;
2. tell the parent it is ready, wait for the common start time;
3. send at this process's share of the total rate, round-robin over clients,
   each body being the send time (``time.monotonic_ns()``: one clock for the
   whole host, so every process agrees);
4. for every ``msg`` from another member record now - body, and check that
   each client sees each conversation's seqs contiguous (no gap, no duplicate);
5. stop sending, wait until every confirmed send has reached every other
   member (or nothing arrives for ``drain_idle`` seconds), report.

Clients reconnect (counted) with their cursor if the edge closes them.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from switchboard.bench.report import WorkerResult

TICK_SEC = 0.002  # sender wake-up period: 2 ms keeps the send schedule smooth at 10k/s
ACK_EVERY_SEC = 0.25  # clients ack their cursor this often (batched, like the SDK)
CONNECT_CONCURRENCY = 200  # handshakes in flight per process


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


_decode = msgspec.json.Decoder(In).decode


@dataclass(kw_only=True)
class WorkerSpec:
    index: int
    ws_url: str
    users: list[tuple[str, str]]  # (user id, token)
    groups: list[list[int]]  # indices into users; every user in exactly one group
    rate: float  # messages/s this process sends
    duration: float
    drain_idle: float = 12.0  # stop waiting once nothing arrived for this long (> the edge's 5 s send timeout)
    drain_max: float = 60.0
    source_addrs: list[str] = field(default_factory=lambda: ["127.0.0.1"])


class BenchClient:
    __slots__ = ("w", "i", "user", "token", "ws", "cursor", "acked", "last_seq", "target", "group_size",
                 "reader", "closing")

    def __init__(self, w: "Worker", i: int, user: str, token: str) -> None:
        self.w = w
        self.i = i
        self.user = user
        self.token = token
        self.ws: ClientConnection | None = None
        self.cursor: int | None = None
        self.acked = 0
        self.last_seq: dict[str, int] = {}
        self.target = ""  # the send frame's addressing part: "to":"u" or "conv":"c"
        self.group_size = 2
        self.reader: asyncio.Task | None = None
        self.closing = False

    async def open(self) -> None:
        delay = 0.05
        src = self.w.spec.source_addrs[self.i % len(self.w.spec.source_addrs)]
        while True:
            try:
                self.ws = await connect(f"{self.w.spec.ws_url}?token={self.token}", compression=None,
                                        max_size=None, ping_interval=None, open_timeout=60,
                                        local_addr=(src, 0), max_queue=None)
                break
            except InvalidStatus as exc:  # 503: the edge's admission limit; back off with jitter
                self.w.result.errors[f"http_{exc.response.status_code}"] = \
                    self.w.result.errors.get(f"http_{exc.response.status_code}", 0) + 1
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 2.0)
        await self.ws.send('{"type":"hello","cursor":%s}' % ("null" if self.cursor is None else self.cursor))
        while True:
            f = _decode(await self.ws.recv())
            if f.type == "synced":  # (a resync is followed by synced too)
                if self.cursor is None or (f.cursor or 0) > self.cursor:
                    self.cursor = f.cursor
                return
            if f.type == "msg":
                self.w.on_msg(self, f)

    async def read(self) -> None:
        while not self.closing:
            try:
                async for data in self.ws:  # type: ignore[union-attr]
                    f = _decode(data)
                    if f.type == "msg":
                        self.w.on_msg(self, f)
                    elif f.type == "sent":
                        self.w.on_sent(self, f.id)
                    elif f.type == "error":
                        self.w.on_error(f)
                    elif f.type == "conv":
                        self.w.on_conv(self, f)
            except ConnectionClosed:
                pass
            if self.closing:
                return
            self.w.result.reconnects += 1
            code = self.ws.close_code if self.ws else None
            self.w.result.errors[f"close_{code}"] = self.w.result.errors.get(f"close_{code}", 0) + 1
            await asyncio.sleep(0.1 * (0.5 + random.random()))
            try:
                await self.open()
            except (OSError, ConnectionClosed, asyncio.TimeoutError):
                continue
            for c, text in list(self.w.pending.values()):  # unanswered sends: same id again
                if c is self:
                    self.w.result.resends += 1
                    self.w.spawn_send(self.ws, text)

    def send(self, mid: str, body: str) -> None:
        text = '{"type":"send","id":"%s",%s,"body":"%s"}' % (mid, self.target, body)
        self.w.pending[mid] = (self, text)
        if self.ws is not None:
            self.w.spawn_send(self.ws, text)


class Worker:
    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.result = WorkerResult(clients=len(spec.users))
        self.clients = [BenchClient(self, i, u, t) for i, (u, t) in enumerate(spec.users)]
        self.first_send_ns = 0
        self.last_delivery_ns = 0
        self._conv_waiters: dict[str, asyncio.Future] = {}
        self.pending: dict[str, tuple[BenchClient, str]] = {}  # id -> unanswered send frame
        self._attempts: dict[str, int] = {}
        self._pending_writes: set[asyncio.Task] = set()
        self.measuring = False

    # -- frame handlers (hot path: no awaits) -------------------------------------------
    def on_msg(self, c: BenchClient, f: In) -> None:
        now = time.monotonic_ns()
        r = self.result
        if f.cursor is not None and (c.cursor is None or f.cursor > c.cursor):
            c.cursor = f.cursor
        last = c.last_seq.get(f.conv)
        if last is not None:
            if f.seq <= last:
                r.duplicates += 1
                return
            if f.seq != last + 1:
                r.gaps += 1
        c.last_seq[f.conv] = f.seq
        if f.from_ == c.user:
            r.self_echo += 1
            return
        if not f.body.isdigit():
            return  # a system message (e.g. group created)
        r.delivered += 1
        r.latencies_ns.append(now - int(f.body))
        self.last_delivery_ns = now

    def on_sent(self, c: BenchClient, mid: str) -> None:
        self._attempts.pop(mid, None)
        if self.pending.pop(mid, None) is None:
            return  # answer to a resend that was already answered
        self.result.confirmed += 1
        self.result.expected += c.group_size - 1

    def on_error(self, f: In) -> None:
        self.result.errors[f.code] = self.result.errors.get(f.code, 0) + 1
        entry = self.pending.get(f.ref or "")
        if entry is None:
            return
        if f.retry:
            # What a client must do (docs/protocol.md): resend the same id
            # after a jittered, growing pause; the sequencer stores it once.
            n = self._attempts[f.ref] = self._attempts.get(f.ref, 0) + 1
            delay = min(0.1 * 2 ** n, 5.0) * (0.5 + random.random())
            asyncio.get_running_loop().call_later(delay, self._resend, f.ref)
        else:
            del self.pending[f.ref]  # a final answer: not owed to anyone

    def _resend(self, mid: str) -> None:
        entry = self.pending.get(mid)
        if entry is not None and entry[0].ws is not None:
            self.result.resends += 1
            self.spawn_send(entry[0].ws, entry[1])

    def on_conv(self, c: BenchClient, f: In) -> None:
        fut = self._conv_waiters.pop(f.id or c.user, None)
        if fut is not None and not fut.done():
            fut.set_result(f.conv)

    def spawn_send(self, ws: ClientConnection, text: str) -> None:
        """Write a frame without awaiting it (the sender loop must keep its schedule)."""
        t = asyncio.get_running_loop().create_task(self._write(ws, text))
        self._pending_writes.add(t)
        t.add_done_callback(self._pending_writes.discard)

    async def _write(self, ws: ClientConnection, text: str) -> None:
        try:
            await ws.send(text)
        except ConnectionClosed:
            self.result.errors["send_on_closed"] = self.result.errors.get("send_on_closed", 0) + 1

    # -- phases -----------------------------------------------------------------------------
    async def setup(self) -> None:
        sem = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def open_one(c: BenchClient) -> None:
            async with sem:
                await c.open()
            c.reader = asyncio.get_running_loop().create_task(c.read())

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
                fut = asyncio.get_running_loop().create_future()
                self._conv_waiters[ref] = fut
                users = ",".join('"%s"' % m.user for m in members)
                await creator.ws.send('{"type":"conv.create","id":"%s","members":[%s]}' % (ref, users))
                conv = await asyncio.wait_for(fut, 30)
                for m in members:
                    m.target = '"conv":"%s"' % conv
        await asyncio.sleep(0.5)  # let group-created system messages arrive before measuring
        self.result.errors.clear()
        self.result.self_echo = 0
        self.result.duplicates = self.result.gaps = 0

    async def run(self, start_ns: int) -> None:
        spec = self.spec
        ack_task = asyncio.get_running_loop().create_task(self._acker())
        await asyncio.sleep(max(0, (start_ns - time.monotonic_ns()) / 1e9))
        self.first_send_ns = start_ns
        end_ns = start_ns + int(spec.duration * 1e9)
        senders = self.clients
        n, k, sent = len(senders), 0, 0
        prefix = f"w{spec.index}m"
        while True:
            now = time.monotonic_ns()
            if now >= end_ns or spec.rate <= 0:
                break
            due = int((now - start_ns) / 1e9 * spec.rate) - sent
            body = str(now)
            for _ in range(due):
                senders[k].send(f"{prefix}{sent}", body)
                k = k + 1 if k + 1 < n else 0
                sent += 1
            await asyncio.sleep(TICK_SEC)
        self.result.sent = sent
        await self._drain()
        ack_task.cancel()

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

    async def _acker(self) -> None:
        while True:
            await asyncio.sleep(ACK_EVERY_SEC)
            for c in self.clients:
                if c.cursor is not None and c.cursor > c.acked and c.ws is not None:
                    c.acked = c.cursor
                    self.spawn_send(c.ws, '{"type":"ack","cursor":%d}' % c.cursor)

    async def close(self) -> None:
        for c in self.clients:
            c.closing = True
        await asyncio.gather(*(c.ws.close() for c in self.clients if c.ws is not None), return_exceptions=True)
        for c in self.clients:
            if c.reader is not None:
                c.reader.cancel()


def worker_main(spec: WorkerSpec, conn: Connection) -> None:
    """Entry point of a load-generator process (multiprocessing target)."""
    from switchboard.bench.fabric import prepare_client_process

    prepare_client_process()

    async def main() -> None:
        w = Worker(spec)
        await w.setup()
        conn.send(("ready", len(w.clients)))
        loop = asyncio.get_running_loop()
        msg = await loop.run_in_executor(None, conn.recv)
        await w.run(msg[1])
        conn.send(("done", w.result, w.first_send_ns, w.last_delivery_ns))
        await w.close()

    try:
        asyncio.run(main())
    except BaseException as exc:  # report, so the parent does not wait forever
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        raise
