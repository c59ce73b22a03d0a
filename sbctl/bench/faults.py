"""``switchboard bench faults``: the cluster shape broken on purpose, under load.

Starts ``cluster up``'s shape (sbctl/bench/faultfleet.py: 3 NATS nodes with
the streams at R3, 2 edges, 2 sequencers, 2 archivers, presence, pusher),
puts paced load on it (sbctl/bench/faultload.py: 1:1 pairs with one member
on each edge plus one group, in ``procs`` processes; clients whose edge dies
reconnect to the other one and resume from their cursor), and applies each
fault in turn, one phase per fault:

    BEFORE s of load -> the fault -> (held DOWN s, or STOP s) -> undone -> AFTER s of load -> drain

A phase's figures: **time to recover** (from the fault to the last delivery
slower than max(250 ms, 5 x the p99 before the fault); 0 when none was),
**p99 in the fault window** (messages sent from the fault until it was undone
or recovered, whichever is later) and **outside** it, and the accounting of
``bench delivery`` by message id: ``lost`` (a confirmed send some member
never received), ``duplicated`` (an id a member received twice),
``out of order`` (a seq below one the member had already seen). Exit 1
unless all are zero and every send was answered in every phase.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from array import array
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sbctl.bench import netns
from sbctl.bench.faultfleet import Fleet
from sbctl.bench.faultload import FaultSpec, PhaseResult, worker_main
from sbctl.bench.report import _fmt, percentile

ROLES = ("sequencer", "archiver", "presence", "pusher")
FAULTS = ("nats-leader", "edge", *(f"{r}-{k}" for r in ROLES for k in ("kill", "stop")), "restart-all",
          "nats-partition")
SLOW_FLOOR_MS = 250.0  # a delivery slower than this (or 5 x the p99 before the fault) is not recovered yet
SLOW_FACTOR = 5.0
STREAMS = ("MESSAGES", "INBOX")


@dataclass(kw_only=True)
class FaultParams:
    faults: list[str] = field(default_factory=lambda: list(FAULTS))
    clients_per_edge: int = 5000  # 1:1 clients homed on each edge
    rate: float = 1000.0  # 1:1 msgs/s in total
    group_size: int = 50
    group_rate: float = 10.0  # msgs/s into the group
    procs: int = 2
    before: float = 5.0
    down: float = 5.0  # how long a killed process (or a cut node) stays down
    stop_sec: float = 3.0  # SIGSTOP .. SIGCONT
    after: float = 10.0
    data: str | None = None  # keep the cluster's data and logs here (default: a temporary dir, removed)
    progress: bool = True


@dataclass(kw_only=True)
class FaultRow:
    fault: str
    how: str
    recover_sec: float
    p99_fault_ms: float | None
    p99_outside_ms: float | None
    sent: int
    deliveries: int
    lost: int
    duplicated: int
    out_of_order: int
    unconfirmed: int
    refused: int
    reconnects: int
    resends: int
    errors: dict[str, int]
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.out_of_order or self.unconfirmed or self.refused)


@dataclass(kw_only=True)
class FaultsReport:
    command: str
    params: dict[str, Any]
    rows: list[FaultRow]
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.rows) and all(r.ok for r in self.rows)

    def to_json(self) -> str:
        d = asdict(self)
        d["ok"] = self.ok
        return json.dumps(d, indent=2)


def summarize(fault: str, how: str, ph: PhaseResult, t_fault: int, t_undone: int, notes: list[str]) -> FaultRow:
    """One row from a phase's merged figures (pure arithmetic: unit-tested)."""
    sends, lats = array("q"), array("q")
    sends.frombytes(ph.send_ns)
    lats.frombytes(ph.lat_ns)
    base = sorted(lat for s, lat in zip(sends, lats, strict=True) if s + lat < t_fault)
    p99_base = percentile(base, 99) or 0
    slow = max(SLOW_FLOOR_MS * 1e6, SLOW_FACTOR * p99_base)
    recovered = max((s + lat for s, lat in zip(sends, lats, strict=True) if lat > slow and s + lat >= t_fault),
                    default=t_fault)
    end = max(t_undone, recovered)
    inside = sorted(lat for s, lat in zip(sends, lats, strict=True) if t_fault <= s <= end)
    outside = sorted(lat for s, lat in zip(sends, lats, strict=True) if not t_fault <= s <= end)

    def ms(v: float | None) -> float | None:
        return None if v is None else round(v / 1e6, 1)

    return FaultRow(fault=fault, how=how, recover_sec=round((recovered - t_fault) / 1e9, 2),
                    p99_fault_ms=ms(percentile(inside, 99)), p99_outside_ms=ms(percentile(outside, 99)),
                    sent=ph.sent, deliveries=ph.delivered, lost=ph.lost, duplicated=ph.duplicated,
                    out_of_order=ph.out_of_order, unconfirmed=ph.unconfirmed, refused=ph.refused,
                    reconnects=ph.reconnects, resends=ph.resends, errors=dict(sorted(ph.errors.items())),
                    notes=notes + [f"lost: {m}" for m in ph.missing[:5]] + _disorder(ph)
                    + ([f"{ph.late} deliveries counted lost by the previous fault arrived during this one"]
                       if ph.late else []))


def _disorder(ph: PhaseResult) -> list[str]:
    if not ph.out_of_order:
        return []
    return ([f"out of order: a lower seq arrived up to {ph.hole_ms:,.0f} ms after a higher one"]
            + [f"out of order: {m}" for m in ph.disorder[:3]])


def merge(results: list[PhaseResult]) -> PhaseResult:
    out = PhaseResult()
    for r in results:
        for k in ("sent", "confirmed", "expected", "delivered", "lost", "duplicated", "out_of_order", "unconfirmed",
                  "refused", "reconnects", "resends", "late"):
            setattr(out, k, getattr(out, k) + getattr(r, k))
        for k, v in r.errors.items():
            out.errors[k] = out.errors.get(k, 0) + v
        out.send_ns += r.send_ns
        out.lat_ns += r.lat_ns
        out.missing += r.missing
        out.disorder += r.disorder
        out.hole_ms = max(out.hole_ms, r.hole_ms)
    return out


def specs(p: FaultParams, urls: list[str], token, tag: str) -> list[FaultSpec]:
    """1:1 pairs with one member on each edge, spread over the processes; the group in process 0."""
    procs = max(1, p.procs)
    n_pairs = p.clients_per_edge
    out = [FaultSpec(index=i, urls=urls, users=[], pairs=[]) for i in range(procs)]
    for k in range(n_pairs):
        s = out[k % procs]
        base = len(s.users)
        for j in (0, 1):
            u = f"f{tag}u{2 * k + j}"
            s.users.append((u, token(u), j % len(urls)))
        s.pairs.append((base, base + 1))
    for s in out:
        s.pair_rate = p.rate * len(s.pairs) / n_pairs if n_pairs else 0.0
    if p.group_size >= 3:
        s = out[0]
        for j in range(p.group_size):
            u = f"f{tag}g{j}"
            s.group.append(len(s.users))
            s.users.append((u, token(u), j % len(urls)))
        s.group_rate = p.group_rate
    return out


class Workers:
    """The load-generator processes: a command pipe and a report pipe each."""

    def __init__(self, specs_: list[FaultSpec], progress: bool) -> None:
        ctx = mp.get_context("spawn")
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple] = asyncio.Queue()
        self.cmds = []
        self.procs = []
        self.total = sum(len(s.users) for s in specs_)
        self.ticks: dict[int, tuple] = {}
        self.progress = progress
        self.label = ""
        self.all_back_at: int | None = None  # first tick with every client synced after one was not
        self._missing_since: int | None = None
        for s in specs_:
            cmd_r, cmd_w = ctx.Pipe(duplex=False)
            rep_r, rep_w = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=worker_main, args=(s, cmd_r, rep_w), daemon=True)
            proc.start()
            self.cmds.append(cmd_w)
            self.procs.append(proc)
            threading.Thread(target=self._pump, args=(rep_r,), daemon=True).start()
        self._printer = self.loop.create_task(self._print())

    def _pump(self, conn) -> None:
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                return
            self.loop.call_soon_threadsafe(self._on, msg)

    def _on(self, msg: tuple) -> None:
        if msg[0] == "tick":
            self.ticks[msg[1]] = msg[2:]
            if len(self.ticks) == len(self.cmds):
                up = sum(t[2] for t in self.ticks.values())
                if up < self.total and self._missing_since is None:
                    self._missing_since = time.monotonic_ns()
                elif up == self.total and self._missing_since is not None:
                    self.all_back_at, self._missing_since = time.monotonic_ns(), None
        else:
            self.queue.put_nowait(msg)

    async def _print(self) -> None:
        prev = (0, 0)
        while True:
            await asyncio.sleep(1.0)
            if not self.progress or len(self.ticks) < len(self.cmds):
                continue
            t = list(self.ticks.values())
            conf, dlv = sum(x[0] for x in t), sum(x[1] for x in t)
            print(f"  [{self.label}] confirmed/s {max(0, conf - prev[0]):>6,}  delivered/s {max(0, dlv - prev[1]):>6,}"
                  f"  synced {sum(x[2] for x in t):,}/{self.total:,}  unanswered {sum(x[3] for x in t):,}",
                  file=sys.stderr, flush=True)
            prev = (conf, dlv)

    async def expect(self, kind: str, timeout: float) -> list[tuple]:
        out = []
        while len(out) < len(self.cmds):
            msg = await asyncio.wait_for(self.queue.get(), timeout)
            if msg[0] == "failed":
                raise RuntimeError(f"load generator {msg[1]} failed: {msg[2]}")
            if msg[0] == kind:
                out.append(msg)
        return out

    def send(self, *cmd: Any) -> None:
        for c in self.cmds:
            c.send(cmd)

    def close(self) -> None:
        self._printer.cancel()
        for c in self.cmds:
            try:
                c.send(("quit",))
            except OSError:
                pass
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.terminate()


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ft = sub.add_parser("faults", help="the cluster shape of `cluster up` broken on purpose under load: per fault, "
                        "time to recover, p99, lost/duplicated/out of order (sbctl/bench/faults.py)")
    fd = FaultParams()
    ft.add_argument("--faults", default=",".join(FAULTS),
                    help=f"comma list, run in this order (default all: {','.join(FAULTS)})")
    ft.add_argument("--clients-per-edge", type=int, default=fd.clients_per_edge,
                    help=f"1:1 clients homed on each edge (default {fd.clients_per_edge:,}: the edge killed holds "
                    "them)")
    ft.add_argument("--rate", type=float, default=fd.rate, help=f"1:1 msgs/s in total (default {fd.rate:g})")
    ft.add_argument("--group-size", type=int, default=fd.group_size,
                    help=f"members of the one group (default {fd.group_size}; < 3: no group)")
    ft.add_argument("--group-rate", type=float, default=fd.group_rate,
                    help=f"msgs/s into the group (default {fd.group_rate:g})")
    ft.add_argument("--procs", type=int, default=fd.procs, help=f"load-generator processes (default {fd.procs})")
    ft.add_argument("--before", type=float, default=fd.before,
                    help=f"seconds of load before each fault (default {fd.before:g})")
    ft.add_argument("--down", type=float, default=fd.down,
                    help=f"seconds a killed process or a cut-off node stays down (default {fd.down:g})")
    ft.add_argument("--stop-sec", type=float, default=fd.stop_sec,
                    help=f"SIGSTOP to SIGCONT (default {fd.stop_sec:g})")
    ft.add_argument("--after", type=float, default=fd.after,
                    help=f"seconds of load after a fault is undone (default {fd.after:g})")
    ft.add_argument("--data", help="the cluster's data dir, kept (default: a temporary one, removed unless a "
                    "fault failed)")
    ft.add_argument("--quiet", action="store_true", help="no progress line per second")
    ft.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")


def main(args: argparse.Namespace, cmd: str) -> int:
    p = FaultParams(faults=[f.strip() for f in args.faults.split(",") if f.strip()],
                    clients_per_edge=args.clients_per_edge, rate=args.rate, group_size=args.group_size,
                    group_rate=args.group_rate, procs=args.procs, before=args.before, down=args.down,
                    stop_sec=args.stop_sec, after=args.after, data=args.data, progress=not args.quiet)
    try:
        rep = run(p, command=cmd)
    except ValueError as exc:
        print(f"switchboard bench faults: {exc}", file=sys.stderr)
        return 2
    print(rep.to_json() if args.json else render(rep))
    return 0 if rep.ok else 1


def run(p: FaultParams, *, command: str) -> FaultsReport:
    unknown = [f for f in p.faults if f not in FAULTS]
    if unknown:
        raise ValueError(f"unknown faults {unknown}; faults are {', '.join(FAULTS)}")
    from sbctl.bench.fabric import raise_nofile

    raise_nofile()
    return asyncio.run(_main(p, command))


async def _main(p: FaultParams, command: str) -> FaultsReport:
    from sbctl.cluster import port_free
    from sbctl.embedded import free_port

    main_task = asyncio.current_task()
    assert main_task is not None
    # SIGTERM as Ctrl-C: the finally below stops the cluster and removes the namespace.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    tmp = None if p.data else tempfile.mkdtemp(prefix="sb-faults-")
    data = Path(p.data or tmp or ".")
    notes: list[str] = []
    why_not = netns.available() if "nats-partition" in p.faults else "not asked"
    use_ns = why_not is None
    if use_ns:
        netns.setup()
    port = next(q for q in (free_port() for _ in range(50)) if q < 65535 and port_free("127.0.0.1", q + 1))
    fleet = Fleet(data, port, netns=use_ns)
    rows: list[FaultRow] = []
    workers: Workers | None = None
    try:
        t0 = time.monotonic()
        await fleet.start()
        notes.append(f"cluster started in {time.monotonic() - t0:.1f} s (data and logs: {data})")
        notes += fleet.notes
        fleet.notes.clear()
        tag = uuid.uuid4().hex[:6]
        workers = Workers(specs(p, fleet.ws_urls, fleet.token, tag), p.progress)
        t0 = time.monotonic()
        await workers.expect("ready", 300)
        notes.append(f"{workers.total:,} clients connected and synced in {time.monotonic() - t0:.1f} s")
        try:
            await _all(p, fleet, workers, rows, why_not)
        except asyncio.CancelledError:  # SIGTERM: the rows so far are the report
            notes.append(f"stopped by SIGTERM after {len(rows)} of {len(p.faults) + 1} phases")
    finally:
        if workers is not None:
            workers.close()
        await fleet.stop()
        if use_ns:
            netns.teardown()
        if tmp and all(r.ok for r in rows):
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp:
            print(f"bench faults: kept {tmp} (logs/ has every process's log)", file=sys.stderr)
    params = asdict(p) | {"clients": workers.total if workers else 0}
    return FaultsReport(command=command, params=params, rows=rows, notes=notes)


async def _all(p: FaultParams, fleet: Fleet, workers: Workers, rows: list[FaultRow], why_not: str | None) -> None:
    """The warm-up, then each fault in turn (a phase that fails ends the run with its row)."""
    rows.append(await _warmup(p, workers))
    for i, fault in enumerate(p.faults):
        revived = await fleet.revive()
        try:
            rows.append(await _phase(p, fleet, workers, i, fault, why_not))
        except Exception as exc:  # noqa: BLE001 - the rows so far are the result; this one failed
            rows.append(FaultRow(fault=fault, how=f"the phase failed: {type(exc).__name__}: {exc}",
                                 recover_sec=-1, p99_fault_ms=None, p99_outside_ms=None, sent=0, deliveries=0,
                                 lost=0, duplicated=0, out_of_order=0, unconfirmed=0, refused=1, reconnects=0,
                                 resends=0, errors={}, notes=revived))
            break
        rows[-1].notes[:0] = revived
        r = rows[-1]
        print(f"{fault}: recover {r.recover_sec} s, p99 {_fmt(r.p99_fault_ms)} / {_fmt(r.p99_outside_ms)} ms, "
              f"sent {r.sent}, lost {r.lost}, duplicated {r.duplicated}, out of order {r.out_of_order}, "
              f"unanswered {r.unconfirmed + r.refused}", file=sys.stderr, flush=True)


async def _phase(p: FaultParams, fleet: Fleet, workers: Workers, i: int, fault: str, why_not: str | None) -> FaultRow:
    notes: list[str] = []
    how = ""
    # Before the load starts: the partitioned node (or the killed one) leads both streams.
    if fault in ("nats-leader", "nats-partition"):
        target = fleet.nats[-1].name if fault == "nats-partition" else await fleet.leader("MESSAGES")
        assert target is not None, "MESSAGES has no leader"
        if not await fleet.move_leader("INBOX", target) or not await fleet.move_leader("MESSAGES", target):
            notes.append(f"could not move both leaders to {target}: MESSAGES {await fleet.leader('MESSAGES')}, "
                         f"INBOX {await fleet.leader('INBOX')}")
    workers.label = fault
    workers.send("go", f"f{i}x")
    await asyncio.sleep(p.before)
    t_fault = time.monotonic_ns()
    workers.all_back_at = workers._missing_since = None
    if fault == "nats-leader":
        victim = fleet.child((await fleet.leader("MESSAGES")) or "sb-n1")
        how = f"kill -9 {victim.name} (leads MESSAGES and INBOX), restarted after {p.down:g} s"
        await fleet.signal(victim, signal.SIGKILL)
        new = await _new_leader(fleet, victim.name)
        if new:
            notes.append(f"new MESSAGES leader {new[0]} after {new[1]:.1f} s")
        await _sleep_until(t_fault, p.down)
        await fleet.restart(victim, notes)
    elif fault == "edge":
        victim = fleet.of_role("edge")[0]
        held = p.clients_per_edge + (p.group_size + 1) // 2
        how = f"kill -9 {victim.name} ({held:,} clients), restarted after {p.down:g} s"
        await fleet.signal(victim, signal.SIGKILL)
        await _sleep_until(t_fault, p.down)
        await fleet.restart(victim, notes)
    elif fault == "restart-all":
        how = "every process stopped (SIGTERM) and started again on its data"
        await fleet.stop()
        await fleet.start()
        notes += fleet.notes
        fleet.notes.clear()
    elif fault == "nats-partition":
        victim = fleet.nats[-1]
        if why_not is None:
            how = f"{victim.name} cut off (netns link down) for {p.down:g} s, leading MESSAGES and INBOX"
            netns.cut()
            await _sleep_until(t_fault, p.down)
            netns.heal()
        else:
            how = f"SIGSTOP {victim.name} for {p.down:g} s (no netns: {why_not})"
            await fleet.signal(victim, signal.SIGSTOP)
            await _sleep_until(t_fault, p.down)
            await fleet.signal(victim, signal.SIGCONT)
    else:
        role, kind = fault.rsplit("-", 1)
        victim = fleet.of_role(role)[0]
        if kind == "kill":
            how = f"kill -9 {victim.name}, restarted after {p.down:g} s"
            await fleet.signal(victim, signal.SIGKILL)
            await _sleep_until(t_fault, p.down)
            await fleet.restart(victim, notes)
        else:
            how = f"SIGSTOP {victim.name}, SIGCONT after {p.stop_sec:g} s"
            await fleet.signal(victim, signal.SIGSTOP)
            await _sleep_until(t_fault, p.stop_sec)
            await fleet.signal(victim, signal.SIGCONT)
    t_undone = time.monotonic_ns()
    notes.append(f"host load average {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)")
    await asyncio.sleep(p.after)
    if workers.all_back_at is not None and workers.all_back_at > t_fault:
        notes.append(f"all {workers.total:,} clients synced again {(workers.all_back_at - t_fault) / 1e9:.1f} s "
                     f"after the fault")
    if fault.startswith("nats") or fault == "restart-all":
        t0 = time.monotonic()
        settled = await fleet.settled(STREAMS)
        notes.append(f"MESSAGES and INBOX {'current on all 3 replicas' if settled else 'NOT current'} "
                     f"{(time.monotonic_ns() - t_fault) / 1e9:.1f} s after the fault"
                     + ("" if time.monotonic() - t0 < 0.5 else " (waited after the load)"))
    workers.send("stop")
    results = [m[2] for m in await workers.expect("result", 300)]
    await _home(workers)
    return summarize(fault, how, merge(results), t_fault, t_undone, notes)


async def _warmup(p: FaultParams, workers: Workers) -> FaultRow:
    """No fault: load until every 1:1 conversation got its first message (each
    is created by it), so the faults meet conversations already in use."""
    workers.label = "warm-up"
    t0 = time.monotonic_ns()
    workers.send("go", "wu")
    await asyncio.sleep(p.clients_per_edge / p.rate + 1.0 if p.rate else 1.0)
    workers.send("stop")
    results = [m[2] for m in await workers.expect("result", 600)]
    row = summarize("(warm-up)", f"no fault: the first message of each of {p.clients_per_edge:,} conversations",
                    merge(results), time.monotonic_ns(), time.monotonic_ns(), [])
    row.notes.append(f"took {(time.monotonic_ns() - t0) / 1e9:.1f} s with the drain")
    return row


async def _home(workers: Workers) -> None:
    """Between phases: clients that moved to another edge go back to their own (not measured)."""
    workers.send("home")
    await workers.expect("homed", 120)


async def _sleep_until(t0_ns: int, sec: float) -> None:
    await asyncio.sleep(max(0.0, t0_ns / 1e9 + sec - time.monotonic()))


async def _new_leader(fleet: Fleet, old: str, timeout: float = 30.0) -> tuple[str, float] | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        lead = await fleet.leader("MESSAGES")
        if lead and lead != old:
            return lead, time.monotonic() - t0
        await asyncio.sleep(0.1)
    return None


def render(r: FaultsReport) -> str:
    head = ("fault", "recover s", "p99 fault ms", "p99 outside ms", "sent", "deliveries", "lost", "dup",
            "out of order", "unanswered", "ok")
    body = [(x.fault, _fmt(x.recover_sec), _fmt(x.p99_fault_ms), _fmt(x.p99_outside_ms), _fmt(x.sent),
             _fmt(x.deliveries), str(x.lost), str(x.duplicated), str(x.out_of_order), str(x.unconfirmed + x.refused),
             "yes" if x.ok else "NO") for x in r.rows]
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]

    def line(row: tuple[str, ...]) -> str:
        return "  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    parts = ["switchboard bench faults", line(head), *map(line, body), ""]
    for x in r.rows:
        parts.append(f"  {x.fault}: {x.how}; reconnects {x.reconnects:,}, resends {x.resends:,}, errors "
                     + (", ".join(f"{k}={v}" for k, v in x.errors.items()) or "none"))
        parts += [f"    {n}" for n in x.notes]
    parts += [f"  note: {n}" for n in r.notes]
    parts += ["", "reproduce: " + r.command]
    return "\n".join(parts)
