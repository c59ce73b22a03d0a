"""``bench presence --watchers N``: what one presence change costs per watcher.

The bench starts its own fabric (``switchboard up`` in a subprocess,
:mod:`sbctl.bench.fabric`: nats-server, sequencer, edge and the
``archiver+presence+pusher`` process holding the tracker, each measured on
its own). In this process, on the lean WebSocket client of the load
generator (:mod:`sbctl.bench.wsclient`):

- ``watchers`` clients connect (hello) and stay connected; ``subjects``
  users share a group conversation with each of them (made with
  ``conv.create`` by a host user, groups of at most :data:`GROUP` watchers
  so they stay plain groups), since a user may watch only its contacts;
- **baseline phase**: the subjects go online and offline (open a socket with
  hello / close it), ``rate`` changes per second in total, round-robin, for
  ``duration`` seconds, while nobody watches them;
- every watcher sends ``presence.watch`` for all subjects;
- **watched phase**: the same churn again; each change now reaches every
  watcher as a ``presence`` frame.

Per presence change per watcher, the report gives each process's CPU (its
``/proc/<pid>/stat`` user+system time, via psutil, over each phase: the
watched phase minus the baseline, divided by changes x watchers, so the
cost of the subjects' own connects and disconnects and of the idle fabric
cancels out), the bytes on the wire to the watchers (WebSocket payload, and
NATS bytes from the server's ``/connz``: the tracker's publishes in and the
edge's deliveries out), and the latency of the frames: from the subject's
hello (online) or close (offline) leaving the bench to the frame's arrival
at a watcher. The edge's ``/metrics`` fan-out counters are read before and
after the watched phase and reported per second, which checks them too.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import msgspec
import psutil

from sbctl.bench.fabric import FabricProcess, raise_nofile
from sbctl.bench.report import LatencySummary, _fmt, table
from sbctl.bench.wsclient import Flusher, WsConn
from switchboard import frames

# Watchers per group conversation: under the fanout_max_members default
# (500) with the subjects and the host, so each is a plain group.
GROUP = 400
# Watchers connecting (or watching) at once: the edge answers each hello with
# an INBOX read; a few hundred in flight keep it busy without timeouts.
CONCURRENCY = 200
# Seconds after the last change of a phase still counted in it: the last
# frames arrive in milliseconds; this also lets the final disconnects land.
TAIL = 1.0
# Seconds to wait beyond TAIL for frames still missing (a saturated fabric).
DRAIN_TIMEOUT = 10.0
# The bench's fabric admits its connections as fast as they come and lets the
# host create its groups in one go (defaults: 2,000 new connections/s, 30
# conv.create a minute per user).
BENCH_ENV = {"SWITCHBOARD_ADMIT_PER_SEC": "1000000", "SWITCHBOARD_MAX_GROUPS_PER_MIN": "100000"}

PRESENCE_PREFIX = b'{"type":"presence",'
_decode_presence = msgspec.json.Decoder(frames.Presence).decode


@dataclass(kw_only=True)
class WatchParams:
    watchers: int
    subjects: int = 8
    rate: float = 4.0  # presence changes per second, all subjects together
    duration: float = 10.0  # seconds of changes per phase
    layout: str | None = None  # `switchboard up --layout`

    def check(self) -> None:
        if self.watchers < 1 or self.subjects < 1:
            raise ValueError("--watchers and --subjects must be >= 1")
        if self.rate <= 0 or self.duration <= 0:
            raise ValueError("--rate and --duration must be > 0")
        if self.subjects / self.rate < 0.5:
            # A subject's next change would come before its last one went
            # through: the edge coalesces up+down into nothing (docs/presence.md).
            raise ValueError("each subject changes every subjects/rate seconds; keep that >= 0.5 s "
                             "(more --subjects or a lower --rate)")


@dataclass(kw_only=True)
class ProcCost:
    role: str
    pid: int
    baseline_us_per_change: float
    watched_us_per_change: float
    us_per_change_per_watcher: float  # (watched - baseline) / watchers


@dataclass(kw_only=True)
class WatchReport:
    command: str
    params: dict[str, Any]
    changes: int  # presence changes made in the watched phase
    expected_frames: int  # changes x watchers
    frames: int  # presence frames the watchers got for those changes
    stray_frames: int  # presence frames matching no pending change (should be 0)
    latency_ms: LatencySummary  # every frame: from the change (hello or close sent) to the frame's arrival
    online_latency_ms: LatencySummary  # frames saying online (the subject's hello went through the edge)
    offline_latency_ms: LatencySummary  # frames saying offline (its socket closed)
    ws_payload_bytes_per_frame: float | None
    ws_bytes_per_change_per_watcher: float | None  # payload + the 2-byte frame header
    nats_bytes_per_change_per_watcher: dict[str, float | None]
    metrics_per_sec: dict[str, float | None]  # the /metrics counters over the watched phase
    processes: list[ProcCost]
    fabric_us_per_change_per_watcher: float
    cpu_resolution_us: float  # one 10 ms CPU tick, per change per watcher
    connect_seconds: float
    baseline_seconds: float
    watched_seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.frames == self.expected_frames and self.stray_frames == 0

    def to_json(self) -> str:
        d = asdict(self)
        d["ok"] = self.ok
        return json.dumps(d, indent=2)


class _Client(WsConn):
    """One user's socket: setup frames are decoded into ``frames``; presence
    frames of the measured phase go to ``on_presence`` undecoded."""

    def __init__(self, flusher: Flusher, user: str, on_presence: Callable[[bytes], None]) -> None:
        super().__init__(flusher)
        self.user = user
        self.on_presence = on_presence
        self.frames: list[dict] = []
        self.counting = False
        self._wake = asyncio.Event()

    def on_text(self, payload: bytes) -> None:
        if self.counting and payload.startswith(PRESENCE_PREFIX):
            self.on_presence(payload)
            return
        self.frames.append(json.loads(payload))
        self._wake.set()

    async def until(self, pred: Callable[[dict], bool], timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for i, f in enumerate(self.frames):
                if pred(f):
                    del self.frames[i]
                    return f
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.user}: no frame as expected in {timeout}s (open: {self.is_open}, "
                                   f"close code: {self.close_code}); last frames: {self.frames[-3:]}")
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), left)
            except TimeoutError:
                pass

    async def open(self, url: str) -> None:
        await self.connect(url)
        self.send_text('{"type":"hello","cursor":null}')
        await self.until(lambda f: f.get("type") == "synced")


class _Counter:
    """Presence frames of the watched phase: matched against the pending change of their user."""

    def __init__(self) -> None:
        self.pending: dict[str, tuple[bool, int]] = {}  # subject -> (online, when the change was made, ns)
        self.frames = 0
        self.stray = 0
        self.payload_bytes = 0
        self.latencies: dict[bool, list[int]] = {True: [], False: []}  # online -> ns

    def __call__(self, payload: bytes) -> None:
        now = time.monotonic_ns()
        p = _decode_presence(payload)
        st = self.pending.get(p.user)
        if st is None or st[0] != p.online:
            self.stray += 1
            return
        self.frames += 1
        self.payload_bytes += len(payload)
        self.latencies[p.online].append(now - st[1])


def _cpu(procs: dict[str, psutil.Process]) -> dict[str, float]:
    out = {}
    for name, p in procs.items():
        try:
            t = p.cpu_times()  # /proc/<pid>/stat utime + stime
            out[name] = t.user + t.system
        except psutil.Error:
            out[name] = 0.0
    return out


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def _monitor_url(procs: dict[str, psutil.Process]) -> str | None:
    """nats-server's monitoring address: ``up`` starts it with ``-m PORT``."""
    p = procs.get("nats-server")
    try:
        cmd = p.cmdline() if p is not None else []
    except psutil.Error:
        return None
    for i, a in enumerate(cmd[:-1]):
        if a == "-m":
            return f"http://127.0.0.1:{cmd[i + 1]}"
    return None


def _nats_bytes(monitor: str | None) -> dict[str, int]:
    """Bytes the nats-server counted: the tracker's connection in (its publishes),
    the edge's connections out (what it delivered to them), and every connection's in+out."""
    out = {"tracker_in": 0, "edge_out": 0, "all": 0}
    if monitor is None:
        return out
    try:
        conns = _get_json(f"{monitor}/connz?limit=10000").get("connections", [])
    except OSError:
        return out
    for c in conns:
        name = c.get("name", "")
        out["all"] += c.get("in_bytes", 0) + c.get("out_bytes", 0)
        if "presence" in name.split("switchboard-", 1)[-1].split("+"):
            out["tracker_in"] += c.get("in_bytes", 0)
        if name.startswith("sb-edge-") or name == "switchboard-edge":
            out["edge_out"] += c.get("out_bytes", 0)
    return out


METRIC_NAMES = ("switchboard_edge_presence_events_total", "switchboard_edge_presence_frames_total",
                "switchboard_presence_fanout_total")


def _metrics(ws_url: str) -> dict[str, float]:
    url = ws_url.replace("ws://", "http://").rsplit("/ws", 1)[0] + "/metrics"
    out: dict[str, float] = {}
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return out
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in METRIC_NAMES:
            out[name] = float(value)
    return out


class _Bench:
    def __init__(self, p: WatchParams, fabric: FabricProcess) -> None:
        self.p = p
        self.fabric = fabric
        self.flusher = Flusher(asyncio.get_running_loop())
        self.counter = _Counter()
        tag = uuid.uuid4().hex[:6]
        self.watchers = [_Client(self.flusher, f"pw{tag}w{i}", self.counter) for i in range(p.watchers)]
        self.subjects = [_Client(self.flusher, f"pw{tag}s{i}", self.counter) for i in range(p.subjects)]
        self.online = [False] * p.subjects
        self.host = _Client(self.flusher, f"pw{tag}h", self.counter)
        self.tasks: set[asyncio.Task] = set()

    def url(self, c: _Client) -> str:
        return f"{self.fabric.ws_url}?token={self.fabric.token(c.user)}"

    async def _all(self, clients: list[_Client], step: Callable[[_Client], Any]) -> None:
        sem = asyncio.Semaphore(CONCURRENCY)

        async def one(c: _Client) -> None:
            async with sem:
                await step(c)

        await asyncio.gather(*(one(c) for c in clients))

    async def setup(self) -> None:
        await self._all(self.watchers, lambda c: c.open(self.url(c)))
        await self.host.open(self.url(self.host))
        subjects = [s.user for s in self.subjects]
        for k in range(0, len(self.watchers), GROUP):
            members = [w.user for w in self.watchers[k:k + GROUP]] + subjects
            self.host.send_text(json.dumps({"type": "conv.create", "id": f"g{k}", "members": members}))
            await self.host.until(lambda f, ref=f"g{k}": f.get("type") == "conv" and f.get("ref") == ref)
        self.host.close()

    async def watch(self) -> None:
        users = [s.user for s in self.subjects]
        want = set(users)

        async def one(c: _Client) -> None:
            c.send_text(json.dumps({"type": "presence.watch", "users": users}))
            got: set[str] = set()
            while got != want:
                f = await c.until(lambda f: f.get("type") in ("presence", "error"))
                if f["type"] == "error":
                    raise RuntimeError(f"presence.watch refused: {f}")
                got.add(f["user"])

        await self._all(self.watchers, one)
        for c in self.watchers:
            c.frames.clear()
            c.counting = True

    def _change(self, i: int) -> None:
        s = self.subjects[i]
        going_online = not self.online[i]
        self.online[i] = going_online
        if going_online:
            t = asyncio.create_task(self._online(s))
            self.tasks.add(t)
            t.add_done_callback(self.tasks.discard)
        else:
            self.counter.pending[s.user] = (False, time.monotonic_ns())
            s.close()

    async def _online(self, s: _Client) -> None:
        s.frames.clear()
        await s.connect(self.url(s))
        self.counter.pending[s.user] = (True, time.monotonic_ns())
        s.send_text('{"type":"hello","cursor":null}')

    async def churn(self, *, warmup: bool = False) -> int:
        """``rate`` changes/s for ``duration`` s (``warmup``: one online and offline per subject),
        round-robin over the subjects; ends with all offline. Returns the changes made."""
        p = self.p
        total = p.subjects if warmup else max(1, round(p.rate * p.duration))
        t0 = time.monotonic()
        for n in range(total):
            delay = t0 + n / p.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self._change(n % p.subjects)
        # the last round may leave subjects online: take them offline (still changes)
        for i in range(p.subjects):
            if self.online[i]:
                await asyncio.sleep(1 / p.rate)
                self._change(i)
                total += 1
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        return total

    async def close(self) -> None:
        for c in self.watchers + self.subjects:
            c.close()
        await asyncio.sleep(0.2)


async def _run(p: WatchParams, fabric: FabricProcess, command: str) -> WatchReport:
    notes: list[str] = []
    procs = fabric.processes()
    procs["bench (watchers + subjects)"] = psutil.Process(os.getpid())
    monitor = _monitor_url(procs)
    if monitor is None:
        notes.append("nats-server has no monitoring port: NATS bytes not measured")
    b = _Bench(p, fabric)
    t0 = time.monotonic()
    await b.setup()
    connect_sec = time.monotonic() - t0

    # Warm-up: each subject's first hello costs more than the next ones
    # (its first INBOX read, first subscriptions); not measured.
    await b.churn(warmup=True)
    await asyncio.sleep(TAIL)
    # Baseline: the same churn, nobody watching.
    cpu0, nb0 = _cpu(procs), _nats_bytes(monitor)
    t0 = time.monotonic()
    base_changes = await b.churn()
    await asyncio.sleep(TAIL)
    base_sec = time.monotonic() - t0
    cpu_b, nb_b = _cpu(procs), _nats_bytes(monitor)

    await b.watch()
    stray_before = b.counter.stray
    m0 = _metrics(fabric.ws_url)
    cpu1, nb1 = _cpu(procs), _nats_bytes(monitor)
    t1 = time.monotonic()
    changes = await b.churn()
    expected = changes * p.watchers
    await asyncio.sleep(TAIL)
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while b.counter.frames < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    watched_sec = time.monotonic() - t1
    cpu_w, nb_w = _cpu(procs), _nats_bytes(monitor)
    m1 = _metrics(fabric.ws_url)
    await b.close()
    if watched_sec > base_sec + 0.5:
        notes.append(f"the watched phase took {watched_sec:.1f} s, the baseline {base_sec:.1f} s: frames queued "
                     "(the idle CPU of the extra time is counted as the watchers')")

    per = changes * p.watchers
    costs = []
    for name, proc in procs.items():
        base = (cpu_b[name] - cpu0[name]) / base_changes * 1e6
        watched = (cpu_w[name] - cpu1[name]) / changes * 1e6
        costs.append(ProcCost(role=name, pid=proc.pid, baseline_us_per_change=round(base, 1),
                              watched_us_per_change=round(watched, 1),
                              us_per_change_per_watcher=round((watched - base) / p.watchers, 2)))
    fabric_net = round(sum(c.us_per_change_per_watcher for c in costs if not c.role.startswith("bench")), 2)

    def nats_net(key: str) -> float | None:
        if monitor is None:
            return None
        base = (nb_b[key] - nb0[key]) / base_changes
        watched = (nb_w[key] - nb1[key]) / changes
        return round((watched - base) / p.watchers, 1)

    # /proc/<pid>/stat counts CPU in clock ticks (10 ms): one tick more or
    # less in a phase moves a process's per-watcher figure by this much.
    tick_us = 1e6 / os.sysconf("SC_CLK_TCK")
    resolution = round(tick_us / per, 2)
    if resolution >= 1:
        notes.append(f"CPU is read in {tick_us / 1000:g} ms ticks: each process's µs/change/watcher is "
                     f"± {resolution:g} per tick; at few watchers x changes the per-change columns say more")
    c = b.counter
    rates = {k: round((m1[k] - m0[k]) / watched_sec, 1) if k in m0 and k in m1 else None for k in METRIC_NAMES}
    if any(v is None for v in rates.values()):
        notes.append("some presence counters are missing from the edge's /metrics")
    return WatchReport(
        command=command,
        params={"watchers": p.watchers, "subjects": p.subjects, "rate": p.rate, "duration": p.duration,
                "layout": p.layout},
        changes=changes, expected_frames=expected, frames=c.frames, stray_frames=c.stray - stray_before,
        latency_ms=LatencySummary.from_ns(c.latencies[True] + c.latencies[False]),
        online_latency_ms=LatencySummary.from_ns(c.latencies[True]),
        offline_latency_ms=LatencySummary.from_ns(c.latencies[False]),
        ws_payload_bytes_per_frame=round(c.payload_bytes / c.frames, 1) if c.frames else None,
        ws_bytes_per_change_per_watcher=round((c.payload_bytes + 2 * c.frames) / per, 1) if per else None,
        nats_bytes_per_change_per_watcher={"tracker_to_server": nats_net("tracker_in"),
                                           "server_to_edge": nats_net("edge_out"),
                                           "all_connections_in_out": nats_net("all")},
        metrics_per_sec=rates, processes=costs, fabric_us_per_change_per_watcher=fabric_net,
        cpu_resolution_us=resolution,
        connect_seconds=round(connect_sec, 2), baseline_seconds=round(base_sec, 2),
        watched_seconds=round(watched_sec, 2), notes=notes)


def run(p: WatchParams, *, command: str) -> WatchReport:
    p.check()
    raise_nofile()
    try:  # uvloop for this run only (no global policy change: the smoke test runs it inside pytest)
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    with FabricProcess(env=BENCH_ENV, layout=p.layout) as fabric, asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(_run(p, fabric, command))


def render(r: WatchReport) -> str:
    lat = r.latency_ms
    nb = r.nats_bytes_per_change_per_watcher
    rows: list[tuple[str, Any]] = [
        ("watchers", r.params["watchers"]),
        ("watched users (subjects)", r.params["subjects"]),
        ("presence changes (watched phase)", r.changes),
        ("frames expected (changes x watchers)", r.expected_frames),
        ("frames received", r.frames),
        ("stray frames", r.stray_frames),
        ("latency p50 (ms)", lat.p50),
        ("latency p99 (ms)", lat.p99),
        ("latency max (ms)", lat.max),
        ("  online frames p50 / p99 (ms)", f"{_fmt(r.online_latency_ms.p50)} / {_fmt(r.online_latency_ms.p99)}"),
        ("  offline frames p50 / p99 (ms)", f"{_fmt(r.offline_latency_ms.p50)} / {_fmt(r.offline_latency_ms.p99)}"),
        ("WebSocket payload bytes per frame", r.ws_payload_bytes_per_frame),
        ("WebSocket bytes per change per watcher", r.ws_bytes_per_change_per_watcher),
        ("NATS bytes per change per watcher: tracker -> server", nb["tracker_to_server"]),
        ("NATS bytes per change per watcher: server -> edge", nb["server_to_edge"]),
        ("NATS bytes per change per watcher: all in+out", nb["all_connections_in_out"]),
        ("edge presence frames/s (/metrics)", r.metrics_per_sec.get("switchboard_edge_presence_frames_total")),
        ("tracker fan-out/s (/metrics)", r.metrics_per_sec.get("switchboard_presence_fanout_total")),
        ("fabric CPU µs per change per watcher", r.fabric_us_per_change_per_watcher),
        ("connect + groups (s)", r.connect_seconds),
        ("baseline phase (s)", r.baseline_seconds),
        ("watched phase (s)", r.watched_seconds),
        ("complete (every frame, none stray)", "yes" if r.ok else "NO"),
    ]
    head = ("process", "pid", "µs/change baseline", "µs/change watched", "µs/change/watcher")
    body = [(c.role, str(c.pid), _fmt(c.baseline_us_per_change), _fmt(c.watched_us_per_change),
             _fmt(c.us_per_change_per_watcher)) for c in r.processes]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    line = lambda x: "  " + "  ".join(v.ljust(w) if i == 0 else v.rjust(w)  # noqa: E731
                                      for i, (v, w) in enumerate(zip(x, widths)))
    parts = ["switchboard bench presence --watchers", table(rows), "", line(head), *map(line, body)]
    parts += [f"  note: {n}" for n in r.notes]
    parts += ["", "reproduce: " + r.command]
    return "\n".join(parts)
