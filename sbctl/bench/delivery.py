"""``bench delivery``: N clients in groups of G sending R msgs/s for S seconds.

The fabric runs in its own processes (``switchboard up`` started by the bench,
which supervises nats-server and the role processes; or an existing
deployment with ``--ws``, measured through ``--pid``), the clients in
``procs`` load-generator processes; this process only orchestrates, prints
progress every second and samples RSS/CPU of all of them. CPU is reported
per message for every process, the load generators included.

Pacing: the edge limits each connection to ``rate_per_sec`` frames/s (default
50, burst 200). The bench keeps that limit and uses enough clients instead:
each client sends rate/clients messages/s plus 4 acks/s, so clients default
to at least rate/MAX_SENDS_PER_CLIENT. ``--lift-limits`` starts the fabric
with the limit lifted (for experiments with few clients).
"""

from __future__ import annotations

import math
import multiprocessing as mp
import sys
import time
import uuid
from dataclasses import dataclass, field
from multiprocessing.connection import wait

import psutil

from sbctl.bench.fabric import FabricProcess, Sampler, fabric_processes, raise_nofile
from sbctl.bench.loadgen import WorkerSpec, worker_main
from sbctl.bench.report import DeliveryReport, WorkerResult, build_delivery_report, merge_all, render_tick, timeline
from switchboard import auth

# The edge's default per-connection limit is 50 frames/s (burst 200); a
# client also acks 4 times a second, so 40 sends/s keeps a margin of 6.
MAX_SENDS_PER_CLIENT = 40.0
DEFAULT_CLIENTS = 200
# Only with --lift-limits: the fabric the bench starts accepts any rate per connection.
LIFTED_LIMITS_ENV = {"SWITCHBOARD_RATE_PER_SEC": "1000000", "SWITCHBOARD_RATE_BURST": "1000000"}


@dataclass(kw_only=True)
class DeliveryParams:
    clients: int | None  # None: max(DEFAULT_CLIENTS, what the rate needs under the per-connection limit)
    rate: float
    duration: float
    group_size: int = 2
    procs: int = 1
    ws_url: str | None = None  # an existing edge; default: start `switchboard up`
    data_dir: str | None = None  # with ws_url: where the dev secret is (tokens)
    secret: str | None = None  # with ws_url: the JWT secret
    pids: list[int] = field(default_factory=list)  # with ws_url: fabric processes to measure (and their children)
    lift_limits: bool = False  # start the fabric with the per-connection rate limit lifted
    layout: str | None = None  # `switchboard up --layout` of the fabric the bench starts
    progress: bool = True  # print a line per second on stderr
    fake_edge: bool = False  # against sbctl/bench/fakeedge.py: the load generator's own cost
    warmup: float = 1.0  # seconds of sending before the measured window (lease take-over, caches, JIT-free warm-up)
    poll_ms: float = 0.0  # load generator polls its sockets every poll_ms instead of per event (0: per event)


def needed_clients(rate: float, group_size: int) -> int:
    """Clients needed so none sends more than MAX_SENDS_PER_CLIENT/s, rounded up to whole groups."""
    n = max(group_size, math.ceil(rate / MAX_SENDS_PER_CLIENT))
    return math.ceil(n / group_size) * group_size


def choose_clients(p: DeliveryParams) -> int:
    """The client count of a run; ValueError if explicit clients would exceed the per-connection limit."""
    need = needed_clients(p.rate, p.group_size)
    if p.clients is None:
        return max(need, math.ceil(DEFAULT_CLIENTS / p.group_size) * p.group_size)
    if p.clients < need and not p.lift_limits:
        raise ValueError(f"--clients {p.clients} would send {p.rate / p.clients:.0f} msgs/s per connection, over "
                         f"the edge's default limit (50 frames/s incl. acks): use --clients >= {need} "
                         f"or --lift-limits")
    return p.clients


def plan(clients: int, group_size: int, procs: int) -> list[list[list[int]]]:
    """Split ``clients`` into groups of ``group_size`` and the groups over
    ``procs`` processes (round robin). Returns per process a list of groups of
    global client indices. Leftover clients (clients % group_size) are unused."""
    if group_size < 2:
        raise ValueError("group size must be >= 2")
    n_groups = clients // group_size
    if n_groups < 1:
        raise ValueError(f"need at least {group_size} clients")
    procs = max(1, min(procs, n_groups))
    out: list[list[list[int]]] = [[] for _ in range(procs)]
    for g in range(n_groups):
        out[g % procs].append(list(range(g * group_size, (g + 1) * group_size)))
    return out


def run(p: DeliveryParams, *, command: str) -> DeliveryReport:
    raise_nofile()
    clients = choose_clients(p)
    notes: list[str] = []
    if p.clients is None:
        notes.append(f"{clients} clients: each sends {p.rate / clients:.1f} msgs/s, under the edge's "
                     f"default per-connection limit")
    fabric = None
    pids = list(p.pids)
    if p.fake_edge:
        return _run_fake(p, clients, notes, command)
    if p.ws_url is None:
        env = LIFTED_LIMITS_ENV if p.lift_limits else {}
        fabric = FabricProcess(env=env, layout=p.layout).__enter__()
        ws_url = fabric.ws_url
        token = fabric.token
        if env:
            notes.append("fabric started with " + " ".join(f"{k}={v}" for k, v in env.items())
                         + " (--lift-limits: per-connection rate limit lifted)")
    else:
        ws_url = p.ws_url
        secret = p.secret or auth.dev_secret(p.data_dir or ".sbdata")

        def token(user: str) -> str:
            return auth.issue(secret, user, ttl_sec=86400)
        if not pids:
            notes.append("existing fabric: pass --pid (of `switchboard up` or each role) to measure its CPU")
    try:
        return _run(p, clients, ws_url, token, fabric, pids, notes, command)
    finally:
        if fabric is not None:
            fabric.__exit__(None, None, None)


def _run_fake(p: DeliveryParams, clients: int, notes: list[str], command: str) -> DeliveryReport:
    from sbctl.bench.fakeedge import process_main

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=process_main, args=(child,), daemon=True)
    proc.start()
    try:
        if not parent.poll(30):  # a Python start-up and a bind: well under a second
            raise RuntimeError("fake edge did not start")
        port = parent.recv()
        notes.append("against the in-memory fake edge (sbctl/bench/fakeedge.py): figures of the "
                     "load generator itself")
        return _run(p, clients, f"ws://127.0.0.1:{port}/ws", lambda user: user, None, [], notes, command,
                    extra_procs={"fake edge": psutil.Process(proc.pid)})
    finally:
        proc.terminate()
        proc.join(5)


def _run(p: DeliveryParams, clients: int, ws_url: str, token, fabric: FabricProcess | None, pids: list[int],
         notes: list[str], command: str, extra_procs: dict[str, psutil.Process] | None = None) -> DeliveryReport:
    tag = uuid.uuid4().hex[:6]
    layout = plan(clients, p.group_size, p.procs)
    used = sum(len(g) for groups in layout for g in groups)
    if used < clients:
        notes.append(f"{clients - used} clients left out (not a multiple of group size {p.group_size})")
    ctx = mp.get_context("spawn")
    workers = []
    for wi, groups in enumerate(layout):
        flat = [i for g in groups for i in g]
        local = {gi: li for li, gi in enumerate(flat)}
        users = [(f"b{tag}u{i}", token(f"b{tag}u{i}")) for i in flat]
        spec = WorkerSpec(index=wi, ws_url=ws_url, users=users, groups=[[local[i] for i in g] for g in groups],
                          rate=p.rate * len(flat) / used, duration=p.duration, warmup=p.warmup,
                          poll_sec=p.poll_ms / 1000,
                          source_addrs=[f"127.0.0.{1 + k}" for k in range(4)] if "127.0.0.1" in ws_url
                          else ["0.0.0.0"])
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=worker_main, args=(spec, child), daemon=True)
        proc.start()
        workers.append((proc, parent))
    try:
        for _proc, conn in workers:
            msg = conn.recv()
            if msg[0] != "ready":
                raise RuntimeError(f"load generator failed during setup: {msg[1]}")
        procs: dict[str, psutil.Process] = {}
        if fabric is not None:
            procs.update(fabric.processes())
        elif pids:
            procs.update(fabric_processes(pids))
        procs.update(extra_procs or {})
        for i, (proc, _) in enumerate(workers):
            procs[f"loadgen-{i}"] = psutil.Process(proc.pid)
        sampler = Sampler(procs).start()
        start_ns = time.monotonic_ns() + 300_000_000  # every process starts its schedule at the same instant
        for _, conn in workers:
            conn.send(("go", start_ns))
        results, last_ns, ticks = _collect([c for _, c in workers], start_ns, p)
        stats = sampler.stop()
    finally:
        for proc, _ in workers:
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
    total = merge_all(results)
    if fabric is not None:
        notes += [f"fabric log: {line[:300]}" for line in fabric.problems()]
    notes += [f"missing: {m}" for m in total.missing[:5]]
    if p.warmup > 0:
        notes.append(f"first {p.warmup:g} s of sending is warm-up: counted for correctness and CPU, "
                     f"not in the latency percentiles")
    if p.poll_ms > 0:
        notes.append(f"load generator polls every {p.poll_ms:g} ms: latencies include up to that much of its delay")
    params = {"clients": clients, "rate": p.rate, "duration": p.duration, "warmup": p.warmup,
              "group_size": p.group_size, "poll_ms": p.poll_ms,
              "procs": len(workers), "ws": ws_url, "own_fabric": fabric is not None, "fake_edge": p.fake_edge,
              "layout": p.layout, "limits": "lifted" if p.lift_limits else "default"}
    return build_delivery_report(command=command, params=params, seconds=p.warmup + p.duration, total=total,
                                 delivered_window=(last_ns - start_ns) / 1e9, processes=stats, notes=notes,
                                 ticks=ticks)


def _collect(conns: list, start_ns: int, p: DeliveryParams) -> tuple[list[WorkerResult], int, list[tuple]]:
    """Progress lines while the workers send, then their results."""
    results: list[WorkerResult] = []
    last_ns = start_ns
    by_second: dict[int, list[tuple]] = {}
    ticks: list[tuple] = []
    open_conns = list(conns)
    while open_conns:
        for conn in wait(open_conns):
            msg = conn.recv()
            if msg[0] == "tick":
                row = by_second.setdefault(msg[1], [])
                row.append(msg[2:])
                if len(row) == len(conns):
                    tot = tuple(sum(x[i] for x in row) for i in range(4))
                    lat = [v for x in row for v in x[4]]
                    ticks.append((msg[1], *tot, lat))
                    del by_second[msg[1]]
                    if p.progress:
                        line = render_tick(timeline(ticks[-2:])[-1] if len(ticks) > 1 else timeline(ticks)[0])
                        mark = "  (warm-up)" if msg[1] <= p.warmup else ""
                        print(line + mark, file=sys.stderr, flush=True)
            elif msg[0] == "done":
                results.append(msg[1])
                last_ns = max(last_ns, msg[3])
                open_conns.remove(conn)
            else:
                raise RuntimeError(f"load generator failed: {msg[1]}")
    return results, last_ns, ticks
