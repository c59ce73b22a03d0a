"""The arithmetic of ``bench faults`` (sbctl/bench/faults.py): pure functions.

What it protects: the figures of docs/benchmarks.md "Faults under load".
- time to recover is the last *slow* delivery after the fault (a delivery
  held by the fault and released late), measured from the fault; messages
  sent before the fault but delivered after it are not the baseline (a
  baseline inflated by them would hide every slow delivery);
- the fault window's p99 is apart from the rest;
- merged phases add up, and a row is not ok with any loss, duplicate,
  out-of-order arrival or unanswered send.
"""

from __future__ import annotations

from array import array

from sbctl.bench.faultload import PhaseResult
from sbctl.bench.faults import FaultParams, merge, specs, summarize

MS = 1_000_000


def phase(rows: list[tuple[int, int]], **kw) -> PhaseResult:
    return PhaseResult(send_ns=array("q", [s for s, _ in rows]).tobytes(),
                       lat_ns=array("q", [lat for _, lat in rows]).tobytes(), **kw)


def test_recovery_is_the_last_slow_delivery_after_the_fault():
    fault = 10_000 * MS
    rows = [(t * MS, 10 * MS) for t in range(0, 10_000, 10)]  # before: 10 ms each
    rows.append((9_990 * MS, 3_000 * MS))  # sent before the fault, held by it: arrives 12.99 s
    rows += [(t * MS, 2_000 * MS) for t in range(10_000, 11_000, 10)]  # in the fault: 2 s late
    rows += [(t * MS, 10 * MS) for t in range(11_000, 20_000, 10)]  # after: 10 ms again
    r = summarize("x", "how", phase(rows), fault, fault + 500 * MS, [])
    assert r.recover_sec == 2.99  # 12.99 s - 10 s: the held message, not the baseline
    assert r.p99_fault_ms == 2000.0
    assert r.p99_outside_ms == 10.0
    assert r.ok


def test_no_slow_delivery_recovers_at_once():
    fault = 1_000 * MS
    rows = [(t * MS, 20 * MS) for t in range(0, 3_000, 5)]
    r = summarize("x", "how", phase(rows), fault, fault + 100 * MS, [])
    assert r.recover_sec == 0
    assert r.p99_outside_ms == 20.0


def test_merge_and_ok():
    a = phase([(1, 2)], sent=3, confirmed=3, delivered=1, reconnects=2, errors={"unavailable": 1})
    b = phase([(5, 6)], sent=4, confirmed=4, delivered=1, out_of_order=1, errors={"unavailable": 2})
    m = merge([a, b])
    assert (m.sent, m.confirmed, m.delivered, m.reconnects, m.out_of_order) == (7, 7, 2, 2, 1)
    assert m.errors == {"unavailable": 3}
    assert len(m.send_ns) == 16  # two 8-byte send times
    row = summarize("x", "how", m, 100, 100, [])
    assert not row.ok  # one arrival out of order fails the fault
    for bad in ({"lost": 1}, {"duplicated": 1}, {"unconfirmed": 1}, {"refused": 1}):
        assert not summarize("x", "how", phase([(1, 2)], **bad), 100, 100, []).ok


def test_specs_pairs_span_both_edges_and_the_group_is_in_one_process():
    p = FaultParams(clients_per_edge=10, rate=100, group_size=6, group_rate=3, procs=2)
    out = specs(p, ["ws://a", "ws://b"], lambda u: "t-" + u, "tag")
    assert sum(len(s.pairs) for s in out) == 10
    for s in out:
        for a, b in s.pairs:
            assert {s.users[a][2], s.users[b][2]} == {0, 1}  # one member on each edge
    assert len(out[0].group) == 6 and not out[1].group
    assert sum(s.pair_rate for s in out) == 100
    assert sum(1 for s in out for u in s.users if u[2] == 0) == 10 + 3  # clients homed on edge 1
