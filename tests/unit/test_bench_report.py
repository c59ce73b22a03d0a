"""Report arithmetic of ``switchboard bench`` (no sockets, no processes)."""

from __future__ import annotations

import json

import pytest

from sbctl.bench.delivery import plan
from sbctl.bench.report import (
    LatencySummary,
    ProcStat,
    WorkerResult,
    build_delivery_report,
    command_line,
    cpu_pct,
    cpu_totals,
    merge_all,
    per_conn_kib,
    percentile,
    render_delivery,
    render_tick,
    timeline,
)


@pytest.mark.parametrize("values,q,expected", [
    ([], 50, None),
    ([7], 0, 7),
    ([7], 99.9, 7),
    ([1, 2, 3, 4], 50, 2),  # nearest rank: ceil(0.5*4) = 2nd value, no interpolation
    ([1, 2, 3, 4], 75, 3),
    ([1, 2, 3, 4], 100, 4),
    (list(range(1, 1001)), 99, 990),
    (list(range(1, 1001)), 99.9, 999),
    (list(range(1, 101)), 99.9, 100),  # too few samples for p99.9: the maximum, never an invented value
])
def test_percentile_nearest_rank(values, q, expected):
    assert percentile(values, q) == expected


@pytest.mark.parametrize("q", [-1, 100.1])
def test_percentile_rejects_out_of_range(q):
    with pytest.raises(ValueError):
        percentile([1, 2], q)


def test_latency_summary_converts_ns_to_ms_and_sorts():
    s = LatencySummary.from_ns([3_000_000, 1_000_000, 2_000_000])  # unsorted on purpose
    assert (s.count, s.p50, s.max, s.mean) == (3, 2.0, 3.0, 2.0)


def test_latency_summary_empty():
    s = LatencySummary.from_ns([])
    assert s.count == 0 and s.p99 is None and s.mean is None


def test_merge_sums_counts_and_error_codes():
    a = WorkerResult(clients=2, sent=10, confirmed=9, expected=9, delivered=9, errors={"unavailable": 1},
                     latencies_ns=[1, 2], resends=1)
    b = WorkerResult(clients=4, sent=5, confirmed=5, expected=15, delivered=14, errors={"unavailable": 2,
                     "rate_limited": 1}, latencies_ns=[3], reconnects=1)
    t = merge_all([a, b])
    assert (t.clients, t.sent, t.confirmed, t.expected, t.delivered) == (6, 15, 14, 24, 23)
    assert t.errors == {"unavailable": 3, "rate_limited": 1}
    assert sorted(t.latencies_ns) == [1, 2, 3]
    assert (t.reconnects, t.resends) == (1, 1)
    assert a.errors == {"unavailable": 1}  # merging does not mutate its inputs


def _report(**kw):
    total = WorkerResult(sent=100, confirmed=100, expected=100, delivered=100, latencies_ns=[1_000_000] * 100)
    for k, v in kw.items():
        setattr(total, k, v)
    return build_delivery_report(command="switchboard bench delivery --rate 10", params={}, seconds=10.0,
                                 total=total, delivered_window=12.5,
                                 processes=[ProcStat(role="fabric", pid=1, rss_mib=50, peak_rss_mib=60,
                                                     cpu_pct=80.0)])


@pytest.mark.parametrize("change,ok", [
    ({}, True),
    ({"delivered": 99}, False),  # one delivery missing = loss
    ({"duplicates": 1}, False),
    ({"gaps": 1}, False),
    ({"unconfirmed": 1}, False),
    ({"errors": {"rate_limited": 3}}, True),  # retried errors are reported, not a correctness failure
])
def test_report_ok_flags_loss_duplicates_gaps(change, ok):
    assert _report(**change).ok is ok


def test_report_rates_and_lost_never_negative():
    r = _report(delivered=101)  # a send answered `unavailable` that was stored anyway
    assert r.lost == 0
    assert r.sent_per_sec == 10.0
    assert r.delivered_per_sec == round(101 / 12.5, 1)


def test_report_json_and_table_carry_the_command():
    r = _report()
    d = json.loads(r.to_json())
    assert d["ok"] is True and d["latency_ms"]["p99"] == 1.0 and d["processes"][0]["role"] == "fabric"
    text = render_delivery(r)
    assert "reproduce: switchboard bench delivery --rate 10" in text
    assert "fabric" in text


def test_command_line_quotes():
    assert command_line(["delivery", "--ws", "ws://h:1/ws?a=b c"]) == \
        "switchboard bench delivery --ws 'ws://h:1/ws?a=b c'"


@pytest.mark.parametrize("cpu,wall,expected", [(1.0, 2.0, 50.0), (4.0, 2.0, 200.0), (1.0, 0.0, 0.0)])
def test_cpu_pct_is_percent_of_one_core(cpu, wall, expected):
    assert cpu_pct(cpu, wall) == expected


@pytest.mark.parametrize("before,after,n,expected", [
    (0, 30 * 1024 * 1000, 1000, 30.0),
    (100, 100, 0, None),  # nothing connected: no figure rather than a division by zero
])
def test_per_conn_kib(before, after, n, expected):
    assert per_conn_kib(before, after, n) == expected


@pytest.mark.parametrize("clients,g,procs,expected", [
    (4, 2, 1, [[[0, 1], [2, 3]]]),
    (4, 2, 2, [[[0, 1]], [[2, 3]]]),
    (5, 2, 3, [[[0, 1]], [[2, 3]]]),  # more processes than groups: fewer processes; leftover client unused
    (7, 3, 1, [[[0, 1, 2], [3, 4, 5]]]),
])
def test_plan_keeps_each_group_in_one_process(clients, g, procs, expected):
    assert plan(clients, g, procs) == expected


@pytest.mark.parametrize("clients,g", [(1, 2), (10, 1)])
def test_plan_rejects_impossible_layouts(clients, g):
    with pytest.raises(ValueError):
        plan(clients, g, 1)


def test_cpu_per_message_for_every_process():
    total = WorkerResult(sent=2000, confirmed=2000, expected=2000, delivered=2000, offered=2000,
                         delivered_in_window=1900)
    procs = [ProcStat(role="nats-server", pid=2, rss_mib=1, peak_rss_mib=1, cpu_pct=50, cpu_sec=0.5),
             ProcStat(role="edge", pid=3, rss_mib=1, peak_rss_mib=1, cpu_pct=30, cpu_sec=0.3),
             ProcStat(role="loadgen-0", pid=4, rss_mib=1, peak_rss_mib=1, cpu_pct=8, cpu_sec=0.08),
             ProcStat(role="other processes on host (2 cores)", pid=0, rss_mib=0, peak_rss_mib=0, cpu_pct=5)]
    r = build_delivery_report(command="switchboard bench delivery", params={}, seconds=1.0, total=total,
                              delivered_window=1.0, processes=procs)
    assert [p.us_per_msg for p in r.processes] == [250.0, 150.0, 40.0, None]
    assert cpu_totals(r.processes) == (400.0, 40.0)
    assert r.delivered_offered == 0.95
    text = render_delivery(r)
    assert "cpu µs/msg" in text and "CPU µs per message: fabric 400.0, load generator 40" in text


def test_timeline_per_second_rates_ratio_and_latency():
    ticks = [(1, 100, 100, 90, 80, [1_000_000] * 80), (2, 300, 300, 290, 280, [2_000_000] * 199 + [9_000_000])]
    rows = timeline(ticks)
    assert rows[0] == {"second": 1, "sent": 100, "confirmed": 90, "delivered": 80, "delivered_offered": 0.8,
                       "p50_ms": 1.0, "p99_ms": 1.0, "max_ms": 1.0}
    assert rows[1]["sent"] == 200 and rows[1]["delivered"] == 200 and rows[1]["delivered_offered"] == 1.0
    assert rows[1]["p50_ms"] == 2.0 and rows[1]["max_ms"] == 9.0
    assert "delivered/offered 1.00" in render_tick(rows[1])
