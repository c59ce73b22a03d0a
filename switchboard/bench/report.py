"""Report arithmetic and rendering: percentiles, process stats, tables.

Pure functions and dataclasses, no sockets and no clocks, so they are
unit-tested (tests/unit/test_bench_report.py).
"""

from __future__ import annotations

import json
import math
import shlex
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence


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
    def from_ns(cls, samples_ns: Iterable[int]) -> "LatencySummary":
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
    duplicates: int = 0  # (conv, seq) received twice by one client
    gaps: int = 0  # a seq skipped within a conversation on one client
    unconfirmed: int = 0  # sends with no answer by the end of the drain
    errors: dict[str, int] = field(default_factory=dict)
    reconnects: int = 0
    resends: int = 0  # sends repeated with the same id after a retry: true error
    latencies_ns: list[int] = field(default_factory=list)

    def merge(self, other: "WorkerResult") -> "WorkerResult":
        errors = dict(self.errors)
        for k, v in other.errors.items():
            errors[k] = errors.get(k, 0) + v
        return WorkerResult(
            clients=self.clients + other.clients, sent=self.sent + other.sent,
            confirmed=self.confirmed + other.confirmed, expected=self.expected + other.expected,
            delivered=self.delivered + other.delivered, self_echo=self.self_echo + other.self_echo,
            duplicates=self.duplicates + other.duplicates, gaps=self.gaps + other.gaps,
            unconfirmed=self.unconfirmed + other.unconfirmed, errors=errors,
            reconnects=self.reconnects + other.reconnects, resends=self.resends + other.resends,
            latencies_ns=self.latencies_ns + other.latencies_ns,
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
    errors: dict[str, int]
    reconnects: int
    resends: int
    sent_per_sec: float
    delivered_per_sec: float
    latency_ms: LatencySummary
    processes: list[ProcStat]
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No loss, no duplicate, no gap, every send answered."""
        return self.lost == 0 and self.duplicates == 0 and self.gaps == 0 and self.unconfirmed == 0

    def to_json(self) -> str:
        d = asdict(self)
        d["ok"] = self.ok
        return json.dumps(d, indent=2, sort_keys=False)


def build_delivery_report(*, command: str, params: dict[str, Any], seconds: float, total: WorkerResult,
                          delivered_window: float, processes: list[ProcStat],
                          notes: list[str] | None = None) -> DeliveryReport:
    """``delivered_window``: seconds from the first send to the last delivery."""
    return DeliveryReport(
        command=command, params=params, seconds=round(seconds, 3), sent=total.sent, confirmed=total.confirmed,
        expected=total.expected, delivered=total.delivered, lost=max(0, total.expected - total.delivered),
        duplicates=total.duplicates, gaps=total.gaps, unconfirmed=total.unconfirmed, self_echo=total.self_echo,
        errors=dict(sorted(total.errors.items())), reconnects=total.reconnects, resends=total.resends,
        sent_per_sec=round(total.sent / seconds, 1) if seconds > 0 else 0.0,
        delivered_per_sec=round(total.delivered / delivered_window, 1) if delivered_window > 0 else 0.0,
        latency_ms=LatencySummary.from_ns(total.latencies_ns), processes=processes, notes=list(notes or []),
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
    head = ("process", "pid", "rss MiB", "peak MiB", "cpu % of 1 core")
    body = [(p.role, str(p.pid), f"{p.rss_mib:.1f}", f"{p.peak_rss_mib:.1f}", f"{p.cpu_pct:.1f}") for p in procs]
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    line = lambda r: "  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
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
        ("sent/s", r.sent_per_sec),
        ("delivered/s", r.delivered_per_sec),
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
    parts += [f"  note: {n}" for n in r.notes]
    parts += ["", "reproduce: " + r.command]
    return "\n".join(parts)


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
