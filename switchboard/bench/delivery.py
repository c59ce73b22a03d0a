"""``bench delivery``: N clients in groups of G sending R msgs/s for S seconds.

The fabric runs in its own process (``switchboard up`` in a subprocess, or an
existing deployment with ``--ws``), the clients in ``procs`` load-generator
processes; this process only orchestrates and samples RSS/CPU of all of them.
"""

from __future__ import annotations

import multiprocessing as mp
import time
import uuid
from dataclasses import dataclass

import psutil

from switchboard import auth
from switchboard.bench.fabric import FabricProcess, Sampler, raise_nofile
from switchboard.bench.loadgen import WorkerSpec, worker_main
from switchboard.bench.report import DeliveryReport, WorkerResult, build_delivery_report, merge_all

# Per-connection limits of the fabric the bench starts: the defaults (50
# frames/s, burst 200) protect an edge from one abusive client; the bench
# drives many messages through few clients on purpose.
BENCH_ENV = {"SWITCHBOARD_RATE_PER_SEC": "1000000", "SWITCHBOARD_RATE_BURST": "1000000"}


@dataclass(kw_only=True)
class DeliveryParams:
    clients: int
    rate: float
    duration: float
    group_size: int = 2
    procs: int = 1
    ws_url: str | None = None  # an existing edge; default: start a fabric
    data_dir: str | None = None  # with ws_url: where the dev secret is (tokens)
    secret: str | None = None  # with ws_url: the JWT secret
    keep_limits: bool = False  # start the fabric with the default per-connection rate limit


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
    notes: list[str] = []
    fabric = None
    if p.ws_url is None:
        env = {} if p.keep_limits else BENCH_ENV
        fabric = FabricProcess(env=env).__enter__()
        ws_url = fabric.ws_url
        token = fabric.token
        if env:
            notes.append("fabric started with " + " ".join(f"{k}={v}" for k, v in env.items())
                         + " (per-connection rate limit lifted; --keep-limits to keep the defaults)")
    else:
        ws_url = p.ws_url
        secret = p.secret or auth.dev_secret(p.data_dir or ".sbdata")

        def token(user: str) -> str:
            return auth.issue(secret, user, ttl_sec=86400)
    try:
        return _run(p, ws_url, token, fabric, notes, command)
    finally:
        if fabric is not None:
            fabric.__exit__(None, None, None)


def _run(p: DeliveryParams, ws_url: str, token, fabric: FabricProcess | None, notes: list[str],
         command: str) -> DeliveryReport:
    tag = uuid.uuid4().hex[:6]
    layout = plan(p.clients, p.group_size, p.procs)
    used = sum(len(g) for groups in layout for g in groups)
    if used < p.clients:
        notes.append(f"{p.clients - used} clients left out (not a multiple of group size {p.group_size})")
    ctx = mp.get_context("spawn")
    workers = []
    for wi, groups in enumerate(layout):
        flat = [i for g in groups for i in g]
        local = {gi: li for li, gi in enumerate(flat)}
        users = [(f"b{tag}u{i}", token(f"b{tag}u{i}")) for i in flat]
        spec = WorkerSpec(index=wi, ws_url=ws_url, users=users, groups=[[local[i] for i in g] for g in groups],
                          rate=p.rate * len(flat) / used, duration=p.duration,
                          source_addrs=[f"127.0.0.{1 + k}" for k in range(4)] if "127.0.0.1" in ws_url
                          else ["0.0.0.0"])
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=worker_main, args=(spec, child), daemon=True)
        proc.start()
        workers.append((proc, parent))
    try:
        for proc, conn in workers:
            msg = conn.recv()
            if msg[0] != "ready":
                raise RuntimeError(f"load generator failed during setup: {msg[1]}")
        procs: dict[str, psutil.Process] = {}
        if fabric is not None:
            procs.update(fabric.processes())
        for i, (proc, _) in enumerate(workers):
            procs[f"loadgen-{i}"] = psutil.Process(proc.pid)
        sampler = Sampler(procs).start()
        start_ns = time.monotonic_ns() + 300_000_000  # every process starts its schedule at the same instant
        for _, conn in workers:
            conn.send(("go", start_ns))
        results: list[WorkerResult] = []
        last_ns = start_ns
        for _, conn in workers:
            msg = conn.recv()
            if msg[0] != "done":
                raise RuntimeError(f"load generator failed: {msg[1]}")
            results.append(msg[1])
            last_ns = max(last_ns, msg[3])
        stats = sampler.stop()
    finally:
        for proc, _ in workers:
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
    total = merge_all(results)
    if fabric is not None:
        notes += [f"fabric log: {line[:300]}" for line in fabric.problems()]
    params = {"clients": p.clients, "rate": p.rate, "duration": p.duration, "group_size": p.group_size,
              "procs": len(workers), "ws": ws_url, "own_fabric": fabric is not None}
    return build_delivery_report(command=command, params=params, seconds=p.duration, total=total,
                                 delivered_window=(last_ns - start_ns) / 1e9, processes=stats, notes=notes)
