"""edge/retryafter.py with a fake clock: the Retry-After of admission refusals
is an appointment at the rate the edge completes openings. Protects the
reconnect storm from both failure modes of a fixed answer: everyone back at
once (a flood of refusals), or clients asleep while the edge idles."""

from __future__ import annotations

import pytest

from edge.retryafter import DEFAULT_RATE, MAX_SEC, WINDOW_SEC, RetryAfter


def test_a_storm_is_spread_over_the_time_the_edge_needs():
    ra = RetryAfter(max_rate=2000.0)
    waits = [ra.refused(100.0, full=True) for _ in range(2000)]
    assert waits[0] == 1 and waits == sorted(waits)
    # 2,000 clients at the assumed 200 openings/s: the last is booked ~10 s out
    assert waits[-1] == pytest.approx(2000 / DEFAULT_RATE, abs=1)
    # every second of the span gets about rate clients, not all of them the first
    assert sum(1 for w in waits if w == 5) == pytest.approx(DEFAULT_RATE, abs=2)


def test_the_queue_drains_with_time():
    ra = RetryAfter(max_rate=2000.0)
    for _ in range(1000):  # booked up to 5 s out
        ra.refused(0.0, full=True)
    assert ra.refused(0.0, full=True) == 6
    assert ra.refused(4.0, full=True) == 2  # 4 s later most appointments have passed
    assert ra.refused(60.0, full=True) == 1  # empty again


# (name, completions in the first window, refused for being full?, rate after the window)
RATE_CASES = [
    ("full_edge_measures_its_rate", 400, True, 100.0),  # 400 in 4 s
    ("not_full_probes_upward", 400, False, DEFAULT_RATE * 1.5),
    ("not_full_but_measured_faster", 1600, False, 400.0),
    ("never_below_the_floor", 0, True, 20.0),
    ("never_above_admit_per_sec", 40000, False, 1000.0),
]


@pytest.mark.parametrize("name,done,full,rate", RATE_CASES, ids=[c[0] for c in RATE_CASES])
def test_rate_follows_what_the_edge_completes(name, done, full, rate):
    """A rate measured while the edge had room would confirm itself (spread
    clients wide, fewer arrive, fewer complete): only a full window is taken
    as the edge's capacity; otherwise it is raised by half."""
    ra = RetryAfter(max_rate=1000.0)
    ra.opened(0.0)  # starts the window
    if full:
        ra.refused(0.1, full=True)
    for i in range(done):
        ra.opened(0.2 + i * (WINDOW_SEC - 0.4) / max(done, 1))
    ra.opened(WINDOW_SEC)  # closes the window (this one counts in the next)
    assert ra.rate == pytest.approx(rate, rel=0.02)


def test_answers_stay_within_bounds():
    ra = RetryAfter(max_rate=5.0, floor=1.0)
    waits = [ra.refused(0.0, full=True) for _ in range(1000)]
    assert min(waits) >= 1 and max(waits) == MAX_SEC
