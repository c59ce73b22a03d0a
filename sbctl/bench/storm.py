"""``bench storm``: a reconnect storm through the edges' admission control.

Shape (one machine, the file-descriptor hard limit of 20,000 per process):

- ``switchboard up`` (nats-server, sequencer, an edge, archiver+presence+
  pusher): its edge carries the *other* clients, the path that is not
  dropped;
- ``--edges`` extra ``switchboard edge`` processes on the same NATS (a
  deployment adds edges the same way): the *storm* edges. 20,000 clients
  do not fit one edge (each socket is an fd, the edge needs ~100 more), so by
  default they are split over two, 10,000 each;
- the storm clients in ``--procs`` holder processes (sbctl/bench/stormload.py),
  the others and the feeders in one traffic process.

Sequence: every storm client connects and says hello; the others send 1:1 at
``--rate`` and the feeders send ``--feed-rate`` msgs/s to ``--fed-users``
of the storm users (their 1:1 conversations are made during the set-up, one
message each: a storm is about reconnecting, and conversations created at
the storm's instant, 200 a second on the store, measured the store instead);
after ``--before`` seconds every storm edge is killed with SIGKILL (an edge
crash: the kernel resets all their sockets at once) and restarted at once on
its port, as a supervisor would. Each storm client reconnects with the SDK's
backoff and full jitter, is admitted or refused (HTTP 503) by its edge's
``admit_per_sec`` and tries again, says hello with its cursor, and replays
what was stored for it meanwhile before ``synced``. Sending goes on the whole
time; ``--after`` seconds after the last client synced it stops, every
confirmed message is checked as delivered exactly once and in order, and the
report gives the time to all synced, the others' p99 before / during /
after, the clients' refusals and the edges' admission counters.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

import psutil

from sbctl.bench.fabric import FabricProcess, Sampler, raise_nofile
from sbctl.bench.report import LatencySummary, ProcStat, process_table, table
from sbctl.bench.stormload import (
    SDK_BACKOFF_MAX,
    SDK_BACKOFF_MIN,
    HolderResult,
    HolderSpec,
    TrafficSpec,
    holder_main,
    traffic_main,
)
from sbctl.embedded import _die_with_parent, free_port
from sbctl.supervisor import READY_MARKERS
from switchboard.config import Settings

CLIENTS_PER_HOLDER = 5_000  # sockets per holder process (each under the 20,000 fd limit, CPU spread)
SENDS_PER_FEEDER = 40.0  # under the edge's 50 frames/s per connection (acks included)
EDGE_READY_SEC = 60.0
SETUP_SEC = 600.0  # connecting 20,000 clients at 2,000/s per edge, hellos included, on a busy box
DRAIN_SEC = 15.0  # after sending stops: the last feed messages reach the holders
_REJECTED = re.compile(r'^switchboard_edge_connections_rejected_total\{reason="(\w+)"\} (\S+)$', re.M)
_ACCEPTED = re.compile(r"^switchboard_edge_connections_accepted_total (\S+)$", re.M)
_HELD = re.compile(r"^switchboard_edge_connections_held_total (\S+)$", re.M)


@dataclass(kw_only=True)
class StormParams:
    clients: int = 20_000  # storm clients
    edges: int = 2  # storm edges (clients split evenly)
    procs: int | None = None  # holder processes; None: one per CLIENTS_PER_HOLDER
    others: int = 200  # other clients (1:1 pairs on up's edge)
    rate: float = 500.0  # msgs/s among the others
    feed_rate: float = 200.0  # msgs/s sent to storm users, throughout
    # Storm users the feeders send to (0: all), their conversations made in
    # the set-up: 2,000 gets each a message every 10 s at the default rate,
    # so most have something to replay after a 30 s storm.
    fed_users: int = 2000
    before: float = 5.0  # seconds of traffic before the drop
    after: float = 3.0  # seconds of traffic after the last storm client synced
    timeout: float = 90.0  # give up waiting for the storm clients after this (from the drop)
    admit_per_sec: float | None = None  # [edge] admit_per_sec of every edge; None: the default
    layout: str | None = None
    progress: bool = True
    # Scheduling priority (nice) of the storm's client processes. They stand
    # for 20,000 devices, whose CPU is not the fabric's: at equal priority on
    # this 2-core host they took a fair share of it while the edges' listen
    # queues overflowed (4 processes at ~10 % each, the edges at ~30 %).
    # At 10 they run whenever the fabric waits. The others' load generator
    # keeps normal priority: it measures latency. 0: equal priority.
    client_nice: int = 10


@dataclass(kw_only=True)
class StormReport:
    command: str
    params: dict[str, Any]
    storm_clients: int
    dropped: int  # drops seen by the storm clients (one per client, more if closed again while reconnecting)
    synced: int  # reconnected and synced
    edges_back_sec: float | None  # kill -> every storm edge listening again
    all_synced_sec: float | None  # kill -> the last storm client synced
    sync_ms: LatencySummary  # per client: its drop -> its synced
    attempts: int  # connection attempts by storm clients after the drop
    client_errors: dict[str, int]  # refusals the clients saw: http_503, ConnectionRefusedError, close_...
    edge_rejects: dict[str, int]  # the restarted storm edges' counters: reason -> connections refused
    edge_accepted: int
    edge_held: int  # upgrades that waited in a storm edge's lobby for a free opening (edge/lobby.py)
    feed_confirmed: int  # messages to storm users confirmed (`sent`)
    feed_unconfirmed: int
    storm_delivered: int
    storm_replayed: int  # delivered between a reconnect's hello and its synced (stored while down)
    storm_lost: int
    storm_duplicates: int
    storm_gaps: int
    storm_resyncs: int
    others: dict[str, int]  # confirmed, expected, delivered, lost, duplicates, gaps, unconfirmed, reconnects
    others_p99_ms: dict[str, float | None]  # before / during / after the storm
    others_latency_ms: LatencySummary
    timeline: list[dict[str, Any]]
    processes: list[ProcStat]  # CPU from the kill to the last synced
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every storm client synced, nothing lost, duplicated or out of order, for anyone."""
        o = self.others
        return (self.synced == self.dropped and self.dropped >= self.storm_clients and self.storm_lost == 0
                and self.storm_duplicates == 0 and self.storm_gaps == 0 and self.storm_resyncs == 0
                and self.feed_unconfirmed == 0 and o["lost"] == 0 and o["duplicates"] == 0 and o["gaps"] == 0
                and o["unconfirmed"] == 0)

    def to_json(self) -> str:
        import json

        d = asdict(self)
        d["ok"] = self.ok
        return json.dumps(d, indent=2)


class StormEdge:
    """One ``switchboard edge`` process on a fixed port, killed and restarted by the bench."""

    def __init__(self, index: int, nats_url: str, data_dir: str, env: dict[str, str]) -> None:
        self.index, self.nats_url, self.data_dir, self.env = index, nats_url, data_dir, env
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.ready = threading.Event()
        self.ready_ns = 0
        self.lines: list[str] = []

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self) -> None:
        self.ready.clear()
        argv = [sys.executable, "-m", "sbctl", "edge", "--nats", self.nats_url, "--data", self.data_dir,
                "--port", str(self.port), "--edge-id", f"storm-{self.index}", "--log-level", "warning"]

        def pre() -> None:
            raise_nofile()
            _die_with_parent()

        # Bytecode is written (the first start) and read (the restart), as an
        # installed wheel has it: with PYTHONDONTWRITEBYTECODE set in the
        # caller's environment, every restart compiled ~60 modules from
        # source, a quarter of a restarted edge's CPU in its first 25 s.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env={**env, **self.env, "PYTHONUNBUFFERED": "1"},
                                     preexec_fn=pre)
        threading.Thread(target=self._pump, args=(self.proc,), daemon=True).start()

    def _pump(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if any(m in line for m in READY_MARKERS) and proc is self.proc:
                self.ready_ns = time.monotonic_ns()
                self.ready.set()
            self.lines.append(line)
            del self.lines[:-200]

    def wait_ready(self) -> None:
        if not self.ready.wait(EDGE_READY_SEC):
            raise RuntimeError(f"storm edge {self.index} did not start:\n" + "".join(self.lines[-20:]))

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def counters(self) -> tuple[dict[str, int], int, int]:
        """(rejected by reason, accepted, held) from the edge's /metrics (since its restart)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=30) as r:
                text = r.read().decode()
        except OSError:
            return {}, 0, 0
        acc, held = _ACCEPTED.search(text), _HELD.search(text)
        return ({k: int(float(v)) for k, v in _REJECTED.findall(text)}, int(float(acc.group(1))) if acc else 0,
                int(float(held.group(1))) if held else 0)


def _recv(conn: Connection, want: str, timeout: float) -> tuple:
    if not conn.poll(timeout):
        raise RuntimeError(f"a bench process sent no {want!r} within {timeout:.0f} s")
    msg = conn.recv()
    if msg[0] == "failed":
        raise RuntimeError(f"a bench process failed: {msg[-1]}")
    return msg


def _setup(p: StormParams, hconns: list[Connection]) -> dict[str, int]:
    """Wait for every holder's clients to be connected and synced (a line every few seconds)."""
    errors: dict[str, int] = {}
    counts = [0] * len(hconns)
    waiting = list(hconns)
    deadline = time.monotonic() + SETUP_SEC
    last = time.monotonic()
    while waiting:
        if time.monotonic() > deadline:
            raise RuntimeError(f"storm clients not connected within {SETUP_SEC:.0f} s: {sum(counts)} of {p.clients}")
        for c in wait(waiting, 1.0):
            msg = c.recv()  # type: ignore[union-attr]
            if msg[0] == "failed":
                raise RuntimeError(f"a bench process failed: {msg[-1]}")
            if msg[0] == "setup":
                counts[msg[1]] = msg[2]
            elif msg[0] == "ready":
                counts[msg[1]] = len(range(msg[1], p.clients, len(hconns)))
                waiting.remove(c)  # type: ignore[arg-type]
                for k, v in msg[2].items():
                    errors[k] = errors.get(k, 0) + v
        if time.monotonic() - last >= 5.0:
            last = time.monotonic()
            _say(p, f"  connecting storm clients: {sum(counts):,} of {p.clients:,} synced")
    return errors


def run(p: StormParams, *, command: str) -> StormReport:
    if p.clients < 1 or p.edges < 1 or p.others < 2:
        raise ValueError("need --clients >= 1, --edges >= 1, --others >= 2")
    per_edge = math.ceil(p.clients / p.edges)
    if per_edge > 19_000:
        raise ValueError(f"{per_edge} clients per edge: over what one process holds under the fd limit of this "
                         f"host (20,000 per process); use more --edges")
    raise_nofile()
    env = {"SWITCHBOARD_EDGE__ADMIT_PER_SEC": str(p.admit_per_sec)} if p.admit_per_sec else {}
    fabric = FabricProcess(env=env, layout=p.layout, startup_timeout=90.0).__enter__()
    edges: list[StormEdge] = []
    procs: list[tuple[mp.process.BaseProcess, Connection]] = []
    try:
        assert fabric.data_dir is not None
        edges = [StormEdge(k, fabric.nats_url, fabric.data_dir, env) for k in range(p.edges)]
        for e in edges:
            e.start()
        for e in edges:
            e.wait_ready()
        return _run(p, fabric, edges, procs, command)
    finally:
        for _proc, conn in procs:
            try:
                conn.send("close")
            except OSError:
                pass
        for proc, _ in procs:
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
        for e in edges:
            e.stop()
        fabric.__exit__(None, None, None)


def _run(p: StormParams, fabric: FabricProcess, edges: list[StormEdge],
         procs: list[tuple[mp.process.BaseProcess, Connection]], command: str) -> StormReport:
    tag = uuid.uuid4().hex[:6]
    ctx = mp.get_context("spawn")
    storm = [(i, f"s{tag}u{i}") for i in range(p.clients)]
    feeders = max(1, math.ceil(p.feed_rate / SENDS_PER_FEEDER))
    others = p.others - p.others % 2
    traffic = TrafficSpec(ws_url=fabric.ws_url, rate=p.rate, feed_rate=p.feed_rate,
                          others=[(f"o{tag}u{i}", fabric.token(f"o{tag}u{i}")) for i in range(others)],
                          feeders=[(f"f{tag}u{i}", fabric.token(f"f{tag}u{i}")) for i in range(feeders)],
                          targets=[u for _, u in storm][:p.fed_users or None])
    parent, child = ctx.Pipe()
    tproc = ctx.Process(target=traffic_main, args=(traffic, child), daemon=True)
    tproc.start()
    procs.append((tproc, parent))
    tconn = parent
    n_holders = p.procs or max(1, math.ceil(p.clients / CLIENTS_PER_HOLDER))
    hconns: list[Connection] = []
    hprocs = []
    t_setup = time.monotonic()
    for k in range(n_holders):
        spec = HolderSpec(index=k, urls=[e.url for e in edges], feeders=[u for u, _ in traffic.feeders],
                          users=[(i, u, fabric.token(u)) for i, u in storm[k::n_holders]], nice=p.client_nice)
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=holder_main, args=(spec, child), daemon=True)
        proc.start()
        procs.append((proc, parent))
        hconns.append(parent)
        hprocs.append(proc)
    _recv(tconn, "ready", SETUP_SEC)
    setup_errors = _setup(p, hconns)
    # With every storm client connected, so each sees its conversation's first message.
    tconn.send(("make",))
    _recv(tconn, "made", SETUP_SEC)
    setup_sec = time.monotonic() - t_setup
    _say(p, f"set up in {setup_sec:.1f} s: {p.clients} storm clients on {len(edges)} edges, {others} others, "
            f"{feeders} feeders (setup refusals: {setup_errors or 'none'})")

    start_ns = time.monotonic_ns() + 300_000_000
    tconn.send(("go", start_ns))
    st = _State(p, start_ns, len(hconns))
    st.collect([tconn, *hconns], until_ns=start_ns + int(p.before * 1e9))
    # The crash: every storm edge at once, then each restarted on its port.
    kill_ns = time.monotonic_ns()
    for e in edges:
        e.kill()
    st.kill_ns = kill_ns
    for e in edges:
        e.start()
    sampler = Sampler({**fabric.processes(), "loadgen traffic": psutil.Process(tproc.pid),
                       **{f"loadgen storm-{k}": psutil.Process(h.pid) for k, h in enumerate(hprocs)}}).start()
    # The new edge processes, from their start (their start-up is part of the recovery).
    edge_sampler = Sampler({f"storm edge {e.index}": psutil.Process(e.proc.pid) for e in edges  # type: ignore[union-attr]
                            }).start()
    conns = [tconn, *hconns]
    st.collect(conns, until_ns=kill_ns + int(EDGE_READY_SEC * 1e9), until=lambda: all(e.ready.is_set() for e in edges))
    for e in edges:
        e.wait_ready()  # raises if one did not come back
    edges_back_ns = max(e.ready_ns for e in edges)
    st.collect(conns, until_ns=kill_ns + int(p.timeout * 1e9), until=st.all_synced)
    stats = sampler.stop()
    stats = stats[:-1] + edge_sampler.stop()[:-1] + stats[-1:]  # one "other processes" row
    st.collect(conns, until_ns=time.monotonic_ns() + int(p.after * 1e9))
    tconn.send("stop")
    st.collect(conns, until_ns=time.monotonic_ns() + int(120 * 1e9), until=lambda: st.done is not None)
    if st.done is None:
        raise RuntimeError("the traffic process did not finish within 120 s of the stop")
    _, others_res, feed_res, conv_top, _first_ns = st.done
    # The last feed messages reach the holders (they were confirmed: stored in INBOX).
    conns.remove(tconn)  # it is gone
    st.collect(conns, until_ns=time.monotonic_ns() + int(DRAIN_SEC * 1e9),
               until=lambda: st.delivered_total() >= feed_res.confirmed)
    results: list[HolderResult] = []
    for c in hconns:
        c.send("report")
    for c in hconns:
        while True:
            msg = _recv(c, "result", 60.0)
            if msg[0] == "result":
                results.append(msg[2])
                break
    rejects: dict[str, int] = {}
    accepted = held = 0
    for e in edges:
        rej, acc, h = e.counters()
        accepted += acc
        held += h
        for k, v in rej.items():
            rejects[k] = rejects.get(k, 0) + v
    return _report(p, command, st, results, others_res, feed_res, conv_top, rejects, accepted, held, stats,
                   edges_back_ns, setup_sec, setup_errors, fabric)


class _State:
    """What the parent hears while the run goes on: the others' ticks, the holders' progress."""

    def __init__(self, p: StormParams, start_ns: int, holders: int) -> None:
        self.p = p
        self.start_ns = start_ns
        self.kill_ns = 0
        self.ticks: dict[int, list[int]] = {}  # second since start -> the others' latencies (ns) arriving then
        self.progress: list[tuple] = [("progress", k, 0, 0, 0, 0, {}) for k in range(holders)]
        self.timeline: list[dict[str, Any]] = []
        self.done: tuple | None = None  # the traffic process's results
        self._last_line = 0.0

    def take(self, msg: tuple) -> None:
        if msg[0] == "tick":
            self.ticks[msg[1]] = msg[6]
        elif msg[0] == "progress":
            self.progress[msg[1]] = msg
        elif msg[0] == "done":
            self.done = msg

    def dropped(self) -> int:
        return sum(m[2] for m in self.progress)

    def synced(self) -> int:
        return sum(m[3] for m in self.progress)

    def delivered_total(self) -> int:
        return sum(m[4] for m in self.progress)

    def all_synced(self) -> bool:
        d = self.dropped()
        return d >= self.p.clients and self.synced() >= d

    def collect(self, conns: list[Connection], *, until_ns: int, until: Callable[[], bool] | None = None) -> None:
        """Take the processes' messages until ``until_ns`` or ``until()``, a progress line a second."""
        while time.monotonic_ns() < until_ns:
            if until is not None and until():
                return
            for c in wait(conns, 0.2):
                msg = c.recv()  # type: ignore[union-attr]
                if msg[0] == "failed":
                    raise RuntimeError(f"a bench process failed: {msg[-1]}")
                self.take(msg)
            self._line()

    def _line(self) -> None:
        now = time.monotonic()
        if now - self._last_line < 1.0:
            return
        self._last_line = now
        second = max(self.ticks, default=0)  # the last whole second the others reported
        lat = LatencySummary.from_ns(self.ticks.get(second, []))
        errors: dict[str, int] = {}
        for m in self.progress:
            for k, v in m[6].items():
                errors[k] = errors.get(k, 0) + v
        since = (time.monotonic_ns() - self.kill_ns) / 1e9 if self.kill_ns else None
        row = {"t_since_drop": round(since, 1) if since is not None else None, "dropped": self.dropped(),
               "synced": self.synced(), "attempts": sum(m[5] for m in self.progress), "refusals": errors,
               "others_p99_ms": lat.p99, "others_delivered": lat.count}
        self.timeline.append(row)
        if self.p.progress:
            when = f"drop+{since:5.1f}s" if since is not None else f"t={second:3d}s    "
            print(f"  {when}  storm synced {row['synced']:>6,}/{row['dropped']:>6,}  attempts "
                  f"{row['attempts']:>7,}  refusals {errors or '-'}  | others {lat.count}/s p99 "
                  f"{lat.p99 if lat.p99 is not None else '-'} ms", file=sys.stderr, flush=True)


def _say(p: StormParams, text: str) -> None:
    if p.progress:
        print(text, file=sys.stderr, flush=True)


def _report(p: StormParams, command: str, st: _State, results: list[HolderResult], others_res: Any,
            feed_res: Any, conv_top: dict[str, int], rejects: dict[str, int], accepted: int, held: int,
            stats: list[ProcStat], edges_back_ns: int, setup_sec: float, setup_errors: dict[str, int],
            fabric: FabricProcess) -> StormReport:
    errors: dict[str, int] = {}
    convs: dict[str, tuple[int, int, int, int]] = {}
    away_convs: dict[str, tuple[int, int, int, int]] = {}
    sync_ms: list[float] = []
    for r in results:
        for k, v in r.errors.items():
            errors[k] = errors.get(k, 0) + v
        convs.update(r.convs)
        away_convs.update(r.away_convs)
        sync_ms += r.sync_ms
    # Lost: confirmed seqs of a conversation its storm member (back and
    # synced) never got (before its first, skipped inside, or after its
    # last). A member not back is owed them, not lost them: counted apart.
    lost = waiting = 0
    notes: list[str] = []
    for conv, top in conv_top.items():
        if conv in away_convs:
            waiting += max(0, top - away_convs[conv][1])
            continue
        got = convs.get(conv)
        if got is None:
            lost += top
            if len(notes) < 5:
                notes.append(f"missing: nothing of {conv} (confirmed up to seq {top})")
            continue
        first, last, _count, skipped = got
        miss = (first - 1) + skipped + max(0, top - last)
        if miss and len(notes) < 5:
            notes.append(f"missing: {miss} of {conv} (first {first}, last {last}, confirmed up to {top})")
        lost += miss
    synced = sum(r.synced for r in results)
    dropped = sum(r.dropped for r in results)
    last_synced = max((r.last_synced_ns for r in results), default=0)
    kill = st.kill_ns
    storm_end_s = (last_synced - st.start_ns) / 1e9 if last_synced else (kill - st.start_ns) / 1e9 + p.timeout
    kill_s = (kill - st.start_ns) / 1e9

    def p99(lo: float, hi: float) -> float | None:
        lat = [v for s, vs in st.ticks.items() if lo < s <= hi for v in vs]
        return LatencySummary.from_ns(lat).p99

    warm = 1.0
    p99s = {"before": p99(warm, math.floor(kill_s)), "during": p99(math.floor(kill_s), math.ceil(storm_end_s)),
            "after": p99(math.ceil(storm_end_s), 1e9)}
    o = others_res
    others = {"clients": o.clients, "confirmed": o.confirmed, "expected": o.expected, "delivered": o.delivered,
              "lost": max(0, o.expected - o.delivered), "duplicates": o.duplicates, "gaps": o.gaps,
              "unconfirmed": o.unconfirmed, "reconnects": o.reconnects}
    away = sum(r.away for r in results)
    if away:
        notes.append(f"{away:,} storm clients not back at the end: {waiting:,} confirmed messages wait in INBOX "
                     f"for them (not counted as lost; conversations of clients never fed at all are)")
    if setup_errors:
        notes.append(f"setup (before the storm) refusals, retried: {setup_errors}")
    notes.append(f"set up in {setup_sec:.1f} s; storm clients reconnect with the SDK's backoff "
                 f"({SDK_BACKOFF_MIN:g} s doubling to {SDK_BACKOFF_MAX:g} s, full jitter), "
                 f"their processes at nice {p.client_nice}")
    if p.admit_per_sec:
        notes.append(f"every edge started with SWITCHBOARD_EDGE__ADMIT_PER_SEC={p.admit_per_sec:g}")
    notes += [f"fabric log: {line[:300]}" for line in fabric.problems()]
    params = {"clients": p.clients, "edges": p.edges, "procs": len(results), "others": o.clients,
              "rate": p.rate, "feed_rate": p.feed_rate, "fed_users": p.fed_users, "before": p.before,
              "after": p.after,
              "admit_per_sec": p.admit_per_sec or Settings().admit_per_sec}
    return StormReport(
        command=command, params=params, storm_clients=p.clients, dropped=dropped, synced=synced,
        edges_back_sec=round((edges_back_ns - kill) / 1e9, 2) if edges_back_ns else None,
        all_synced_sec=round((last_synced - kill) / 1e9, 2) if last_synced and synced >= dropped else None,
        sync_ms=LatencySummary.from_ns(int(v * 1e6) for v in sync_ms),
        attempts=sum(r.attempts for r in results), client_errors=dict(sorted(errors.items())),
        edge_rejects=rejects, edge_accepted=accepted, edge_held=held, feed_confirmed=feed_res.confirmed,
        feed_unconfirmed=feed_res.unconfirmed, storm_delivered=sum(r.delivered for r in results),
        storm_replayed=sum(r.replayed for r in results), storm_lost=lost,
        storm_duplicates=sum(r.duplicates for r in results), storm_gaps=sum(r.gaps for r in results),
        storm_resyncs=sum(r.resyncs for r in results), others=others, others_p99_ms=p99s,
        others_latency_ms=LatencySummary.from_ns(o.latencies_ns), timeline=st.timeline, processes=stats,
        notes=notes)


def render(r: StormReport) -> str:
    lat = r.sync_ms
    rows: list[tuple[str, Any]] = [
        ("storm clients (dropped at once)", r.storm_clients),
        ("storm edges back (kill -> listening, s)", r.edges_back_sec),
        ("all reconnected and synced (kill -> last synced, s)", r.all_synced_sec),
        ("synced / drops", f"{r.synced:,} / {r.dropped:,}"),
        ("per client drop -> synced p50 / p99 / max (ms)", f"{lat.p50} / {lat.p99} / {lat.max}"),
        ("connection attempts after the drop", r.attempts),
        ("refusals seen by clients", ", ".join(f"{k}={v:,}" for k, v in r.client_errors.items()) or "none"),
        ("storm edges' counters: accepted", r.edge_accepted),
        ("storm edges' counters: held in the lobby", r.edge_held),
        ("storm edges' counters: rejected", ", ".join(f"{k}={v:,}" for k, v in r.edge_rejects.items()) or "none"),
        ("messages to storm users: confirmed", r.feed_confirmed),
        ("  delivered / replayed from cursor", f"{r.storm_delivered:,} / {r.storm_replayed:,}"),
        ("  lost / duplicated / out of order / resync", f"{r.storm_lost} / {r.storm_duplicates} / {r.storm_gaps} / "
                                                       f"{r.storm_resyncs}"),
        ("  unconfirmed", r.feed_unconfirmed),
        ("others: clients, confirmed", f"{r.others['clients']}, {r.others['confirmed']:,}"),
        ("  lost / duplicated / out of order / unconfirmed",
         f"{r.others['lost']} / {r.others['duplicates']} / {r.others['gaps']} / {r.others['unconfirmed']}"),
        ("  p99 before / during / after the storm (ms)",
         " / ".join(str(r.others_p99_ms[k]) for k in ("before", "during", "after"))),
        ("  p50 / p99 / max over the run (ms)",
         f"{r.others_latency_ms.p50} / {r.others_latency_ms.p99} / {r.others_latency_ms.max}"),
        ("result", "ok" if r.ok else "FAILED"),
    ]
    parts = ["switchboard bench storm", table(rows), "", "CPU from the kill to the last synced:",
             process_table(r.processes)]
    parts += [f"  note: {n}" for n in r.notes]
    parts += ["", "reproduce: " + r.command]
    return "\n".join(parts)


# -- command line (registered in sbctl/bench/cli.py) ---------------------------------------------
def add_parser(sub: Any) -> None:
    s = sub.add_parser("storm", help="reconnect storm: storm edges killed and restarted under load, every "
                       "client back through admission control (sbctl/bench/storm.py)")
    s.add_argument("--clients", type=int, default=20_000, help="storm clients, dropped at once (default 20,000)")
    s.add_argument("--edges", type=int, default=2,
                   help="storm edges the clients are split over (default 2: one process holds < 20,000 sockets)")
    s.add_argument("--procs", type=int, default=None,
                   help=f"holder processes for the storm clients (default: one per {CLIENTS_PER_HOLDER:,})")
    s.add_argument("--others", type=int, default=200,
                   help="other clients, 1:1 pairs on up's edge, never dropped (default 200)")
    s.add_argument("--rate", type=float, default=500.0, help="msgs/s among the others (default 500)")
    s.add_argument("--feed-rate", type=float, default=200.0,
                   help="msgs/s sent to the storm users, round-robin, before, during and after the drop (default 200)")
    s.add_argument("--fed-users", type=int, default=2000,
                   help="storm users the feeders send to, their conversations made during the set-up "
                        "(default 2,000; 0: all)")
    s.add_argument("--before", type=float, default=5.0, help="seconds of traffic before the drop (default 5)")
    s.add_argument("--after", type=float, default=3.0,
                   help="seconds of traffic after the last storm client synced (default 3)")
    s.add_argument("--timeout", type=float, default=90.0,
                   help="seconds after the drop to give up waiting for the storm clients (default 90)")
    s.add_argument("--admit-per-sec", type=float, default=None,
                   help="[edge] admit_per_sec of every edge (default: the setting's default)")
    s.add_argument("--client-nice", type=int, default=10,
                   help="nice of the storm's client processes, which stand for devices elsewhere "
                        "(default 10; 0: the fabric's priority)")
    s.add_argument("--layout", help="`switchboard up --layout` of the fabric")
    s.add_argument("--quiet", action="store_true", help="no progress line per second")
    s.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")


def main(args: Any, cmd: str) -> int:
    params = StormParams(clients=args.clients, edges=args.edges, procs=args.procs, others=args.others,
                         rate=args.rate, feed_rate=args.feed_rate, fed_users=args.fed_users, before=args.before,
                         after=args.after,
                         timeout=args.timeout, admit_per_sec=args.admit_per_sec, layout=args.layout,
                         client_nice=args.client_nice,
                         progress=not args.quiet)
    try:
        rep = run(params, command=cmd)
    except ValueError as exc:
        print(f"switchboard bench storm: {exc}", file=sys.stderr)
        return 2
    print(rep.to_json() if args.json else render(rep))
    return 0 if rep.ok else 1
