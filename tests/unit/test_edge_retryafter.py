"""edge/retryafter.py with a fake clock: the Retry-After of admission refusals
is an appointment at the rate the edge can complete openings. Protects the
reconnect storm from the failure modes measured with bench storm: a fixed
answer sent everyone back at once (a flood of refusals); a rate counted
from completions per second followed the arrivals down, booked clients
further and further out, and the edge idled while they slept."""

from __future__ import annotations

import pytest

from edge.retryafter import ASSUMED_TOOK, MAX_SEC, RetryAfter

DEFAULT_RATE = 200 / ASSUMED_TOOK  # the rate assumed for max_opening=200 before any measurement


def test_a_storm_is_spread_over_the_time_the_edge_needs():
    ra = RetryAfter(max_opening=200, max_rate=2000.0)
    waits = [ra.refused(100.0) for _ in range(2000)]
    assert waits[0] == 1 and waits == sorted(waits)
    # 2,000 clients at the assumed 200 openings/s: the last is booked ~10 s out
    assert waits[-1] == pytest.approx(2000 / DEFAULT_RATE, abs=1)
    # every second of the span gets about rate clients, not all of them the first
    assert sum(1 for w in waits if w == 5) == pytest.approx(DEFAULT_RATE, abs=2)


def test_the_queue_drains_with_time():
    ra = RetryAfter(max_opening=200, max_rate=2000.0)
    for _ in range(1000):  # booked up to 5 s out
        ra.refused(0.0)
    assert ra.refused(0.0) == 6
    assert ra.refused(4.0) == 2  # 4 s later most appointments have passed
    assert ra.refused(60.0) == 1  # empty again


# (name, seconds each opening took, rate: max_opening / that, clamped)
RATE_CASES = [
    ("quick_hellos", 0.25, 800.0),  # 200 at once, a quarter second each
    ("slow_hellos", 2.0, 100.0),
    ("never_below_the_floor", 60.0, 20.0),
    ("never_above_admit_per_sec", 0.01, 1000.0),
]


@pytest.mark.parametrize("name,took,rate", RATE_CASES, ids=[c[0] for c in RATE_CASES])
def test_rate_is_concurrency_over_the_time_an_opening_takes(name, took, rate):
    """Little's law: the rate does not depend on how many clients happen to
    arrive (a count of completions per second did, and confirmed itself)."""
    ra = RetryAfter(max_opening=200, max_rate=1000.0)
    assert ra.rate == DEFAULT_RATE  # nothing measured yet: max_opening / ASSUMED_TOOK
    for _ in range(500):
        ra.opened(took)
    assert ra.rate == pytest.approx(rate, rel=0.01)


def test_the_average_follows_recent_openings():
    ra = RetryAfter(max_opening=200, max_rate=10_000.0)
    for _ in range(200):
        ra.opened(2.0)
    for _ in range(200):  # the storm got lighter: openings take 0.5 s now
        ra.opened(0.5)
    assert ra.rate == pytest.approx(400.0, rel=0.1)


def test_answers_stay_within_bounds():
    ra = RetryAfter(max_opening=200, max_rate=5.0, floor=1.0)
    waits = [ra.refused(0.0) for _ in range(1000)]
    assert min(waits) >= 1 and max(waits) == MAX_SEC


@pytest.mark.parametrize(("max_opening", "cap", "rate"), [
    (800, 2000.0, 800.0),  # the defaults: a restarted edge books its first refusals at 800/s
    (200, 2000.0, 200.0),
    (800, 300.0, 300.0),  # never above admit_per_sec
])
def test_before_any_opening_the_rate_follows_the_opening_bound(max_opening, cap, rate):
    """The first refusals of a storm come before any opening completed: a
    fixed 200/s booked one edge's 7,700 refusals over 30 s while its openings
    took 20 ms (bench storm), so the appointments themselves made the storm
    last 40 s."""
    ra = RetryAfter(max_opening=max_opening, max_rate=cap)
    assert ra.rate == pytest.approx(rate)


def test_beyond_the_horizon_clients_are_not_booked_and_not_sent_back_together():
    """The first refusals of a storm are booked at the rate measured while
    everything is slowest; with a 30 s horizon the last of those bookings
    set the storm's end (bench storm). Beyond MAX_SEC a client is told a
    random time in the horizon's second half and booked when it returns;
    the queue of booked slots does not grow past the horizon."""
    ra = RetryAfter(max_opening=200, max_rate=2000.0)  # 200/s before any measurement
    booked = [ra.refused(0.0, rand=lambda lo, hi: -1) for _ in range(1990)]
    assert booked[-1] == MAX_SEC and -1 not in booked  # 1,990 fit the 10 s horizon at 200/s
    beyond = [ra.refused(0.0, rand=lambda lo, hi: (lo, hi)) for _ in range(500)]
    assert set(beyond[20:]) == {(MAX_SEC // 2, MAX_SEC)}  # the horizon is full: unbooked, told 5-10 s
    assert ra.refused(5.0) == MAX_SEC - 5 + 1  # the queue did not grow past the horizon meanwhile


def test_held_clients_book_slots_and_refused_ones_come_after_them():
    """hold() books a slot like a refusal when it is within the bound
    (edge/lobby.py): the clients refused afterwards are given appointments
    after the held ones, or the lobby and the appointments would double-book
    the edge's capacity."""
    ra = RetryAfter(max_opening=200, max_rate=2000.0)  # 200/s: a slot every 5 ms
    held = 0
    while ra.hold(0.0, within=3.0):
        held += 1
    assert held == pytest.approx(3.0 * DEFAULT_RATE, abs=1)  # 3 s of the edge's capacity wait
    assert ra.refused(0.0) == 4  # the next free slot is after them
    assert ra.hold(10.0, within=3.0)  # 10 s later the queue has drained
