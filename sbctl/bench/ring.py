"""``switchboard bench ring``: kill -9 one Cassandra node of a 3-node ring under load.

    switchboard bench ring [--rate 200] [--pairs 20] [--duration 40] [--kill-at 10] [--victim 2] [--data DIR]

Starts ``switchboard cluster up --cassandra 3`` (the ring on 127.0.0.1-3,
keyspace RF 3, LOCAL_QUORUM reads and writes; by default one NATS node, one
edge, one sequencer and two archivers: the ring is what is under test and the
box has 2 cores), then:

1. after a warm-up (one message and one history read per pair, not timed),
   ``--pairs`` 1:1 pairs send ``--rate`` messages/s in total for
   ``--duration`` s (each message's send -> ack latency: persisted in
   JetStream), the receivers count what they get, and a reader asks history
   (the archivers' LOCAL_QUORUM reads) ``--history-rate`` times a second;
2. ``--kill-at`` s in, node ``--victim`` gets SIGKILL; ``cluster up``
   restarts it (supervised) and the bench times until it answers CQL and the
   ring is formed again;
3. after the load, every acked message is looked up in history (paged, per
   conversation): missing, duplicated or out of order is a failure.

The report: the ring's start time, sends / acks / deliveries, p99 of send
and history before the kill, while the node is down (kill -> back) and after,
history errors, the time the node took to come back, and the rows checked.

The fault-matrix bench calls :func:`run_ring_fault` (``RingParams`` ->
``RingReport``; ``report.ok``) from its own event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sbctl.bench.report import percentile, table

READY = "Switchboard cluster is up"
REPO = Path(__file__).resolve().parents[2]
# The archivers catch up within seconds once the node is back; history paging
# of every conversation takes a few seconds more.
SETTLE_SEC = 90.0
# A refused history read (store_unavailable, retry: true) is asked again, as a
# client would; one still refused after this many attempts is a failure.
HISTORY_TRIES = 3


@dataclass
class RingParams:
    rate: float = 200.0  # messages/s, all pairs together
    pairs: int = 20
    duration: float = 40.0  # seconds of load
    kill_at: float = 10.0  # seconds into the load
    victim: int = 2  # node to kill -9 (1-based: 127.0.0.<victim>)
    history_rate: float = 20.0  # history reads/s during the load
    nodes: int = 3
    nats: int = 1
    edges: int = 1
    sequencers: int = 1
    archivers: int = 2
    data_dir: str | None = None  # default: a temp dir, removed afterwards


@dataclass
class RingReport:
    params: dict[str, Any]
    command: str = ""
    ring_start_sec: float | None = None  # cluster up start -> ready (ring formed, schema made, roles up)
    node_back_sec: float | None = None  # kill -> node answers CQL and the ring is formed
    sent: int = 0
    acked: int = 0
    send_errors: int = 0
    delivered: int = 0
    delivered_dup: int = 0
    send_p99_ms: dict[str, float | None] = field(default_factory=dict)  # before / down / after
    history_p99_ms: dict[str, float | None] = field(default_factory=dict)
    history_reads: dict[str, int] = field(default_factory=dict)
    history_errors: dict[str, int] = field(default_factory=dict)  # first attempts refused (then retried)
    history_failed: int = 0  # reads that still failed after HISTORY_TRIES attempts
    error_codes: dict[str, int] = field(default_factory=dict)
    rows_while_down: int | None = None  # acked messages in history when the load ended, the node still down
    acked_while_down: int | None = None
    loadavg: tuple[float, float] = (0.0, 0.0)  # 1-min load average at start and at end (2-core box)
    rows_checked: int = 0
    missing: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    error: str = ""

    @property
    def ok(self) -> bool:
        return (not self.error and self.acked == self.sent and self.rows_checked == self.acked
                and not (self.missing or self.duplicated or self.out_of_order or self.history_failed))

    def rows(self) -> list[tuple[str, Any]]:
        def win(d: dict[str, Any]) -> str:
            return " / ".join(f"{k} {_ms(v)}" for k, v in d.items())

        return [
            ("ring", f"{self.params['nodes']} nodes, RF {min(3, self.params['nodes'])}, LOCAL_QUORUM"),
            ("cluster up to ready (s)", self.ring_start_sec),
            ("kill -9 node", f"127.0.0.{self.params['victim']} at {self.params['kill_at']} s"),
            ("node back, ring formed (s)", self.node_back_sec),
            ("sent / acked / errors", f"{self.sent} / {self.acked} / {self.send_errors}"),
            ("delivered (dup)", f"{self.delivered} ({self.delivered_dup})"),
            ("send p99 ms", win(self.send_p99_ms)),
            ("history p99 ms", win(self.history_p99_ms)),
            ("history reads", win(self.history_reads)),
            ("history refused, retried", win(self.history_errors) + (f"  {self.error_codes}" if self.error_codes
                                                                    else "")),
            ("history failed after retries", self.history_failed),
            ("in history at end of load, node down", "-" if self.rows_while_down is None
             else f"{self.rows_while_down} of {self.acked_while_down} acked"),
            ("rows checked in history", self.rows_checked),
            ("missing / duplicated / out of order", f"{self.missing} / {self.duplicated} / {self.out_of_order}"),
            ("load average 1 min (start, end)", f"{self.loadavg[0]:.1f}, {self.loadavg[1]:.1f}"),
            ("result", "ok" if self.ok else f"FAILED {self.error}"),
        ]


def _ms(v: Any) -> str:
    return "-" if v is None else (f"{v:.0f}" if isinstance(v, float) else str(v))


class Windows:
    """Which phase a moment belongs to: before the kill, node down, after it is back."""

    def __init__(self) -> None:
        self.kill: float | None = None
        self.back: float | None = None

    def of(self, t: float) -> str:
        if self.kill is None or t < self.kill:
            return "before"
        if self.back is None or t < self.back:
            return "down"
        return "after"


async def _start_cluster(p: RingParams, data: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "sbctl", "cluster", "up", "--data", str(data), "--port", str(port),
            "--cassandra", str(p.nodes), "--nats", str(p.nats), "--edges", str(p.edges),
            "--sequencers", str(p.sequencers), "--archivers", str(p.archivers), "--no-dev-signin",
            "--log-level", "warning"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")} | {"PYTHONUNBUFFERED": "1"}
    with open(log, "ab") as out:
        return subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)


async def _wait_ready(proc: subprocess.Popen[bytes], log: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if READY in text:
            return text
        if proc.poll() is not None:
            raise RuntimeError(f"cluster up exited with {proc.returncode}: {text[-2000:]}")
        await asyncio.sleep(0.5)
    raise RuntimeError(f"cluster up not ready within {timeout:.0f} s")


def _pids(out: str) -> dict[str, int]:
    line = next(x for x in out.splitlines() if x.startswith("processes: "))
    return {name: int(pid) for name, pid in (item.split() for item in line.removeprefix("processes: ").split(", "))}


def _points(out: str) -> list[tuple[str, int]]:
    line = next(x for x in out.splitlines() if x.startswith("Cassandra: "))
    hosts = line.removeprefix("Cassandra: ").split("  ")[0].split(", ")
    return [(h.rsplit(":", 1)[0], int(h.rsplit(":", 1)[1])) for h in hosts]


async def run_ring_fault(p: RingParams, command: str = "") -> RingReport:
    """Start the cluster with a ring, load it, kill -9 node ``victim``, check history; stop everything."""
    from sbctl.embedded import free_port

    rep = RingReport(params=asdict(p), command=command)
    load0 = os.getloadavg()[0]
    if not 1 <= p.victim <= p.nodes:
        raise ValueError(f"--victim must be 1..{p.nodes}")
    tmp = None if p.data_dir else tempfile.mkdtemp(prefix="sb-ring-")
    data = Path(p.data_dir or tmp or "")
    data.mkdir(parents=True, exist_ok=True)
    log = data / "cluster-up.log"
    port = free_port()
    t0 = time.monotonic()
    proc = await _start_cluster(p, data, port, log)
    try:
        out = await _wait_ready(proc, log, 600)
        rep.ring_start_sec = round(time.monotonic() - t0, 1)
        await _load(p, rep, data, port, _pids(out)[f"cassandra-{p.victim}"], _points(out))
    except Exception as exc:  # the report says what failed; the processes are stopped below
        rep.error = f"{type(exc).__name__}: {exc}"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.to_thread(proc.wait, 120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        rep.loadavg = (load0, os.getloadavg()[0])
        if tmp:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return rep


async def _load(p: RingParams, rep: RingReport, data: Path, port: int, victim_pid: int,
                points: list[tuple[str, int]]) -> None:
    from sbctl.cassandra import wait_node
    from switchboard import auth
    from switchboard_client import Client

    secret = auth.dev_secret(data)
    url = f"ws://127.0.0.1:{port}/ws"
    senders = [Client(url=url, token=auth.issue(secret, f"ring-a{i}", ttl_sec=86400)) for i in range(p.pairs)]
    receivers = [Client(url=url, token=auth.issue(secret, f"ring-b{i}", ttl_sec=86400), fill_gaps=False)
                 for i in range(p.pairs)]
    w = Windows()
    acked: dict[str, tuple[str, int]] = {}  # id -> (conv, seq)
    send_lat: dict[str, list[float]] = defaultdict(list)
    hist_lat: dict[str, list[float]] = defaultdict(list)
    hist_err: dict[str, int] = defaultdict(int)
    got: dict[str, int] = defaultdict(int)  # id -> deliveries
    convs: dict[int, str] = {}
    pending: set[asyncio.Task[None]] = set()
    for c in senders + receivers:
        await c.connect(timeout=30)
    try:
        async def send_one(i: int, mid: str) -> None:
            ts = time.monotonic()
            try:
                sent = await senders[i].send(to=f"ring-b{i}", body=f"ring {mid}", id=mid)
            except Exception:
                rep.send_errors += 1
                return
            send_lat[w.of(ts)].append((time.monotonic() - ts) * 1000)
            acked[mid] = (sent.conv, sent.seq)
            convs.setdefault(i, sent.conv)

        async def receive(c: Any) -> None:
            while True:
                m = await c.next_message()
                got[m.id] += 1

        async def read_history() -> None:
            k = 0
            while True:
                await asyncio.sleep(1 / p.history_rate)
                if not convs:
                    continue
                k += 1
                i = list(convs)[k % len(convs)]
                ts = time.monotonic()
                for attempt in range(HISTORY_TRIES):
                    try:
                        await senders[i].history(convs[i], limit=50)  # a member of it
                        break
                    except Exception as exc:
                        code = getattr(exc, "code", type(exc).__name__)
                        rep.error_codes[code] = rep.error_codes.get(code, 0) + 1
                        if attempt == 0:
                            hist_err[w.of(ts)] += 1
                        if attempt == HISTORY_TRIES - 1:
                            rep.history_failed += 1
                        await asyncio.sleep(0.2)
                hist_lat[w.of(ts)].append((time.monotonic() - ts) * 1000)  # retries included

        async def kill_then_wait() -> None:
            await asyncio.sleep(p.kill_at)
            w.kill = time.monotonic()
            os.kill(victim_pid, signal.SIGKILL)
            await wait_node(points, p.victim, 300)
            w.back = time.monotonic()
            rep.node_back_sec = round(w.back - w.kill, 1)

        bg = [asyncio.create_task(receive(c)) for c in receivers]
        for i in range(p.pairs):  # warm-up, not timed: every conversation exists, history has been asked once
            await send_one(i, f"w{i:05d}")
            await senders[i].history(convs[i], limit=1)
        send_lat.clear()
        bg.append(asyncio.create_task(read_history()))
        killer = asyncio.create_task(kill_then_wait())
        start = time.monotonic()
        n = int(p.rate * p.duration)
        rep.sent = p.pairs  # the warm-up messages
        for k in range(n):
            delay = start + k / p.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            t = asyncio.create_task(send_one(k % p.pairs, f"r{k:07d}"))
            pending.add(t)
            t.add_done_callback(pending.discard)
            rep.sent += 1
        while pending:
            await asyncio.gather(*list(pending))
        if w.back is None:  # archiving kept up with 2 of 3 replicas? (a short wait for the archivers' batches)
            await asyncio.sleep(3)
            rep.acked_while_down = len(acked)
            try:
                await _check_history(p, rep, senders, convs, dict(acked), settle=0)
                if w.back is None:
                    rep.rows_while_down = rep.acked_while_down - rep.missing
            except Exception as exc:  # a refused page: reported, the final check decides
                code = "check: " + str(getattr(exc, "code", type(exc).__name__))
                rep.error_codes[code] = rep.error_codes.get(code, 0) + 1
        await killer  # the node must be back before the check (the phases need its end)
        await asyncio.sleep(3)  # the last deliveries
        for t in bg:
            t.cancel()
        rep.acked = len(acked)
        rep.delivered = len(got)
        rep.delivered_dup = sum(1 for v in got.values() if v > 1)
        await _check_history(p, rep, senders, convs, acked)
    finally:
        for c in senders + receivers:
            with contextlib.suppress(Exception):
                await c.close()
    for name, src, dst in (("send", send_lat, rep.send_p99_ms), ("history", hist_lat, rep.history_p99_ms)):
        for phase in ("before", "down", "after"):
            vals = sorted(src.get(phase, []))
            dst[phase] = percentile(vals, 0.99) if vals else None
            if name == "history":
                rep.history_reads[phase] = len(vals)
                rep.history_errors[phase] = hist_err.get(phase, 0)


async def _check_history(p: RingParams, rep: RingReport, senders: list[Any], convs: dict[int, str],
                         acked: dict[str, tuple[str, int]], settle: float = SETTLE_SEC) -> None:
    """Every acked message in history, once, in seq order; waits up to ``settle`` s for the archivers."""
    want: dict[str, dict[int, str]] = defaultdict(dict)  # conv -> seq -> id
    for mid, (conv, seq) in acked.items():
        want[conv][seq] = mid
    deadline = time.monotonic() + settle
    while True:
        rows = missing = dup = disorder = 0
        for i, conv in convs.items():
            seen: dict[str, int] = defaultdict(int)
            last = 0
            async for m in senders[i].history_range(conv):
                rows += 1
                seen[m.id] += 1
                if m.seq <= last:
                    disorder += 1
                last = m.seq
                if m.seq in want[conv] and want[conv][m.seq] != m.id:
                    disorder += 1  # another message under an acked seq
            missing += sum(1 for mid in want[conv].values() if mid not in seen)
            dup += sum(1 for v in seen.values() if v > 1)
        rep.rows_checked, rep.missing, rep.duplicated, rep.out_of_order = rows, missing, dup, disorder
        if not missing or time.monotonic() > deadline:
            return
        await asyncio.sleep(2)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="switchboard bench ring", description=__doc__.split("\n\n")[0])
    d = RingParams()
    ap.add_argument("--rate", type=float, default=d.rate, help=f"messages/s, all pairs (default {d.rate:g})")
    ap.add_argument("--pairs", type=int, default=d.pairs, help=f"1:1 sender/receiver pairs (default {d.pairs})")
    ap.add_argument("--duration", type=float, default=d.duration, help=f"seconds of load (default {d.duration:g})")
    ap.add_argument("--kill-at", type=float, default=d.kill_at, help=f"seconds into the load (default {d.kill_at:g})")
    ap.add_argument("--victim", type=int, default=d.victim, help=f"node to kill -9, 1-3 (default {d.victim})")
    ap.add_argument("--history-rate", type=float, default=d.history_rate,
                    help=f"history reads/s during the load (default {d.history_rate:g})")
    ap.add_argument("--archivers", type=int, default=d.archivers, help=f"archiver processes (default {d.archivers})")
    ap.add_argument("--data", help="data dir of the cluster (kept); default: a temp dir, removed")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    return ap


def main(argv: list[str], command: str = "") -> int:
    a = build_parser().parse_args(argv)
    p = RingParams(rate=a.rate, pairs=a.pairs, duration=a.duration, kill_at=a.kill_at, victim=a.victim,
                   history_rate=a.history_rate, archivers=a.archivers, data_dir=a.data)
    if a.kill_at >= a.duration or a.rate / a.pairs > 40:
        print("switchboard bench ring: --kill-at must be inside --duration, and rate/pairs <= 40 "
              "(the edge's per-connection limit is 50 frames/s)", file=sys.stderr)
        return 2
    rep = asyncio.run(run_ring_fault(p, command))
    if a.json:
        import json

        print(json.dumps({**asdict(rep), "ok": rep.ok}, indent=2))
    else:
        print(table(rep.rows()))
        if command:
            print("\nreproduce: " + command)
    return 0 if rep.ok else 1


if __name__ == "__main__":
    from sbctl.bench.report import command_line

    sys.exit(main(sys.argv[1:], command_line(["ring", *sys.argv[1:]])))
