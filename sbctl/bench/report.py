"""Report arithmetic and rendering: percentiles, process stats, tables.

Pure functions and dataclasses, no sockets and no clocks, so they are
unit-tested (tests/unit/test_bench_report.py).
"""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100) of already sorted values.

    Nearest rank (no interpolation) so p99.9 of 1,000 samples is the largest
    sample, never a value nobody observed. ``None`` for no samples.
    """
    if not 0 <= q <= 100:
        raise ValueError("q must be in 0..100")
    n = len(sorted_values)
    if n == 0:
        return None
    rank = max(1, math.ceil(round(q * n / 100, 9)))  # round: 99.9/100*1000 must be 999, not 999.0000001
    return sorted_values[rank - 1]


@dataclass(frozen=True, kw_only=True)
class LatencySummary:
    """Latency in milliseconds over ``count`` samples."""

    count: int
    p50: float | None
    p90: float | None
    p99: float | None
    p999: float | None
    max: float | None
    mean: float | None

    @classmethod
    def from_ns(cls, samples_ns: Iterable[int]) -> LatencySummary:
        values = sorted(samples_ns)
        if not values:
            return cls(count=0, p50=None, p90=None, p99=None, p999=None, max=None, mean=None)

        def ms(v: float | None) -> float | None:
            return None if v is None else round(v / 1e6, 3)

        return cls(count=len(values), p50=ms(percentile(values, 50)), p90=ms(percentile(values, 90)),
                   p99=ms(percentile(values, 99)), p999=ms(percentile(values, 99.9)), max=ms(values[-1]),
                   mean=ms(sum(values) / len(values)))


@dataclass(frozen=True, kw_only=True)
class ProcStat:
    """One process during the measured window."""

    role: str  # "fabric", "nats-server", "loadgen-0", "edge", ...
    pid: int
    rss_mib: float  # at the end of the window
    peak_rss_mib: float  # highest sampled
    cpu_pct: float  # percent of ONE core over the window (200 = both cores of a 2-core box)
    cpu_sec: float = 0.0  # CPU seconds (user + system) over the window
    us_per_msg: float | None = None  # cpu_sec per message of the run, µs (delivery bench)


def cpu_pct(cpu_seconds: float, wall_seconds: float) -> float:
    """CPU use as percent of one core."""
    if wall_seconds <= 0:
        return 0.0
    return round(100.0 * cpu_seconds / wall_seconds, 1)


@dataclass(kw_only=True)
class WorkerResult:
    """What one load-generator process measured (summed across processes)."""

    clients: int = 0
    sent: int = 0  # send frames written
    confirmed: int = 0  # `sent` answers (durable)
    expected: int = 0  # deliveries owed to other members for confirmed sends
    delivered: int = 0  # msg frames from other members received
    self_echo: int = 0  # own messages echoed to the sender's socket
    receipts: int = 0  # receipt frames received (others' delivered/read watermarks)
    duplicates: int = 0  # (conv, seq) received twice by one client
    gaps: int = 0  # a seq skipped within a conversation on one client
    unconfirmed: int = 0  # sends with no answer by the end of the drain
    errors: dict[str, int] = field(default_factory=dict)
    reconnects: int = 0
    resends: int = 0  # sends repeated with the same id after a retry: true error
    offered: int = 0  # deliveries owed for every send written (sent x (group size - 1))
    delivered_in_window: int = 0  # deliveries received by the end of the send window
    latencies_ns: list[int] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # examples of undelivered tails (diagnostics)

    def merge(self, other: WorkerResult) -> WorkerResult:
        errors = dict(self.errors)
        for k, v in other.errors.items():
            errors[k] = errors.get(k, 0) + v
        return WorkerResult(
            clients=self.clients + other.clients, sent=self.sent + other.sent,
            confirmed=self.confirmed + other.confirmed, expected=self.expected + other.expected,
            delivered=self.delivered + other.delivered, self_echo=self.self_echo + other.self_echo,
            receipts=self.receipts + other.receipts,
            duplicates=self.duplicates + other.duplicates, gaps=self.gaps + other.gaps,
            unconfirmed=self.unconfirmed + other.unconfirmed, errors=errors,
            reconnects=self.reconnects + other.reconnects, resends=self.resends + other.resends,
            offered=self.offered + other.offered,
            delivered_in_window=self.delivered_in_window + other.delivered_in_window,
            latencies_ns=self.latencies_ns + other.latencies_ns, missing=(self.missing + other.missing)[:10],
        )


def merge_all(results: Iterable[WorkerResult]) -> WorkerResult:
    total = WorkerResult()
    for r in results:
        total = total.merge(r)
    return total


@dataclass(kw_only=True)
class DeliveryReport:
    command: str
    params: dict[str, Any]
    seconds: float  # measured send window
    sent: int
    confirmed: int
    expected: int
    delivered: int
    lost: int  # expected - delivered (never negative)
    duplicates: int
    gaps: int
    unconfirmed: int
    self_echo: int
    receipts: int
    errors: dict[str, int]
    reconnects: int
    resends: int
    sent_per_sec: float
    delivered_per_sec: float
    latency_ms: LatencySummary
    processes: list[ProcStat]
    notes: list[str] = field(default_factory=list)
    # delivered by the end of the send window / offered (sent x (group size - 1)):
    # ~1.0 while the fabric keeps up; below 1 it queues (saturated)
    delivered_offered: float | None = None
    timeline: list[dict[str, Any]] = field(default_factory=list)  # per second: sent/s, delivered/s, ratio

    @property
    def ok(self) -> bool:
        """No loss, no duplicate, no gap, every send answered."""
        return self.lost == 0 and self.duplicates == 0 and self.gaps == 0 and self.unconfirmed == 0

    def to_json(self) -> str:
        d = asdict(self)
        d["ok"] = self.ok
        return json.dumps(d, indent=2, sort_keys=False)


def per_message(processes: Sequence[ProcStat], messages: int) -> list[ProcStat]:
    """``processes`` with ``us_per_msg`` = CPU µs per message (None without messages or CPU)."""
    out = []
    for p in processes:
        us = round(p.cpu_sec * 1e6 / messages, 1) if messages > 0 and p.pid else None
        out.append(ProcStat(role=p.role, pid=p.pid, rss_mib=p.rss_mib, peak_rss_mib=p.peak_rss_mib,
                            cpu_pct=p.cpu_pct, cpu_sec=p.cpu_sec, us_per_msg=us))
    return out


def timeline(ticks: Sequence[tuple]) -> list[dict[str, Any]]:
    """Cumulative per-second progress ``(second, sent, offered, confirmed, delivered[, latencies_ns])``
    -> per-second rates, the delivered/offered ratio and latency of each second."""
    out = []
    prev: tuple = (0, 0, 0, 0, 0)
    for t in ticks:
        d_sent, d_off, d_conf, d_del = (t[i] - prev[i] for i in range(1, 5))
        row: dict[str, Any] = {"second": t[0], "sent": d_sent, "confirmed": d_conf, "delivered": d_del,
                               "delivered_offered": round(d_del / d_off, 3) if d_off else None}
        if len(t) > 5:
            lat = LatencySummary.from_ns(t[5])
            row.update(p50_ms=lat.p50, p99_ms=lat.p99, max_ms=lat.max)
        out.append(row)
        prev = t
    return out


def build_delivery_report(*, command: str, params: dict[str, Any], seconds: float, total: WorkerResult,
                          delivered_window: float, processes: list[ProcStat],
                          notes: list[str] | None = None,
                          ticks: Sequence[tuple] = ()) -> DeliveryReport:
    """``delivered_window``: seconds from the first send to the last delivery.
    ``ticks``: cumulative per-second progress summed over the load generators."""
    return DeliveryReport(
        command=command, params=params, seconds=round(seconds, 3), sent=total.sent, confirmed=total.confirmed,
        expected=total.expected, delivered=total.delivered, lost=max(0, total.expected - total.delivered),
        duplicates=total.duplicates, gaps=total.gaps, unconfirmed=total.unconfirmed, self_echo=total.self_echo,
        receipts=total.receipts,
        errors=dict(sorted(total.errors.items())), reconnects=total.reconnects, resends=total.resends,
        sent_per_sec=round(total.sent / seconds, 1) if seconds > 0 else 0.0,
        delivered_per_sec=round(total.delivered / delivered_window, 1) if delivered_window > 0 else 0.0,
        latency_ms=LatencySummary.from_ns(total.latencies_ns), processes=per_message(processes, total.confirmed),
        notes=list(notes or []),
        delivered_offered=round(total.delivered_in_window / total.offered, 3) if total.offered else None,
        timeline=timeline(ticks),
    )


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.3f}".rstrip("0").rstrip(".") if abs(v) < 100 else f"{v:,.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def table(rows: Sequence[tuple[str, Any]]) -> str:
    """Two aligned columns: name, value."""
    width = max((len(k) for k, _ in rows), default=0)
    return "\n".join(f"  {k.ljust(width)}  {_fmt(v)}" for k, v in rows)


def process_table(procs: Sequence[ProcStat]) -> str:
    per_msg = any(p.us_per_msg is not None for p in procs)
    head = ("process", "pid", "rss MiB", "peak MiB", "cpu % of 1 core") + (("cpu µs/msg",) if per_msg else ())
    body = [(p.role, str(p.pid), f"{p.rss_mib:.1f}", f"{p.peak_rss_mib:.1f}", f"{p.cpu_pct:.1f}")
            + ((_fmt(p.us_per_msg),) if per_msg else ()) for p in procs]
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]

    def line(r: tuple[str, ...]) -> str:
        return "  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))

    return "\n".join([line(head), *map(line, body)])


def render_delivery(r: DeliveryReport) -> str:
    lat = r.latency_ms
    rows: list[tuple[str, Any]] = [
        ("send window (s)", r.seconds),
        ("messages sent", r.sent),
        ("confirmed (sent frames)", r.confirmed),
        ("expected deliveries", r.expected),
        ("delivered", r.delivered),
        ("lost", r.lost),
        ("duplicates", r.duplicates),
        ("gaps", r.gaps),
        ("unconfirmed sends", r.unconfirmed),
        ("own-message echoes", r.self_echo),
        ("receipt frames", r.receipts),
        ("sent/s", r.sent_per_sec),
        ("delivered/s", r.delivered_per_sec),
        ("delivered/offered while sending", r.delivered_offered),
        ("latency p50 (ms)", lat.p50),
        ("latency p90 (ms)", lat.p90),
        ("latency p99 (ms)", lat.p99),
        ("latency p99.9 (ms)", lat.p999),
        ("latency max (ms)", lat.max),
        ("errors", ", ".join(f"{k}={v}" for k, v in r.errors.items()) or "none"),
        ("resends (same id)", r.resends),
        ("reconnects", r.reconnects),
        ("correct (no loss/dup/gap)", "yes" if r.ok else "NO"),
    ]
    parts = ["switchboard bench delivery", table(rows), "", process_table(r.processes)]
    fab, gen = cpu_totals(r.processes)
    if fab is not None or gen is not None:
        parts.append(f"  CPU µs per message: fabric {_fmt(fab)}, load generator {_fmt(gen)}")
        if r.delivered > r.confirmed > 0:  # groups: one message, many deliveries
            k = r.confirmed / r.delivered
            parts.append(f"  CPU µs per delivery: fabric {_fmt(None if fab is None else round(fab * k, 1))}, "
                         f"load generator {_fmt(None if gen is None else round(gen * k, 1))}")
    parts += [f"  note: {n}" for n in r.notes]
    parts += ["", "reproduce: " + r.command]
    return "\n".join(parts)


def render_tick(row: dict[str, Any]) -> str:
    """One progress line (a :func:`timeline` row)."""
    ratio = "-" if row["delivered_offered"] is None else f"{row['delivered_offered']:.2f}"
    lat = ""
    if "p99_ms" in row:
        lat = f"  p50 {_fmt(row['p50_ms'])} ms  p99 {_fmt(row['p99_ms'])} ms"
    return (f"  t={row['second']:>3}s  sent/s {row['sent']:>7,}  confirmed/s {row['confirmed']:>7,}  "
            f"delivered/s {row['delivered']:>8,}  delivered/offered {ratio}{lat}")


def cpu_totals(procs: Sequence[ProcStat]) -> tuple[float | None, float | None]:
    """CPU µs/msg summed over the fabric's processes and over the load generators."""
    fab = [p.us_per_msg for p in procs if p.us_per_msg is not None and not p.role.startswith("loadgen")]
    gen = [p.us_per_msg for p in procs if p.us_per_msg is not None and p.role.startswith("loadgen")]
    return (round(sum(fab), 1) if fab else None), (round(sum(gen), 1) if gen else None)


@dataclass(kw_only=True)
class IdleReport:
    command: str
    params: dict[str, Any]
    requested: int
    connected: int
    failed: dict[str, int]
    rss_before_mib: float
    rss_after_mib: float
    rss_per_conn_kib: float | None
    connect_seconds: float
    processes: list[ProcStat]
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def per_conn_kib(rss_before: int, rss_after: int, connections: int) -> float | None:
    """Growth of the edge's RSS per connection, KiB; ``None`` if nothing connected."""
    if connections <= 0:
        return None
    return round((rss_after - rss_before) / 1024 / connections, 2)


def render_idle(r: IdleReport) -> str:
    rows: list[tuple[str, Any]] = [
        ("connections requested", r.requested),
        ("connections open (hello done)", r.connected),
        ("failed", ", ".join(f"{k}={v}" for k, v in r.failed.items()) or "none"),
        ("connect time (s)", r.connect_seconds),
        ("edge RSS before (MiB)", r.rss_before_mib),
        ("edge RSS after (MiB)", r.rss_after_mib),
        ("edge RSS per connection (KiB)", r.rss_per_conn_kib),
    ]
    parts = ["switchboard bench idle", table(rows), "", process_table(r.processes)]
    parts += [f"  note: {n}" for n in r.notes]
    parts += ["", "reproduce: " + r.command]
    return "\n".join(parts)


def command_line(argv: Sequence[str]) -> str:
    """The shell command that reproduces a run."""
    return "switchboard bench " + " ".join(shlex.quote(a) for a in argv)
