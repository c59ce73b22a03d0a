"""sequencer.quotas.UserQuota: the per-user token buckets behind the fan-out
and group-creation bounds of issue 8 (item 9). A fake clock, no sleeping."""

from __future__ import annotations

import pytest

from sequencer.quotas import UserQuota


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# (seconds to advance, user, cost, expected) in order; 60 per minute = 1/s, burst 60
STEPS = {
    "a minute's budget at once, then nothing": [(0, "u", 60, True), (0, "u", 1, False)],
    "refills at the steady rate": [(0, "u", 60, True), (5, "u", 5, True), (0, "u", 1, False), (1.5, "u", 1, True)],
    "never more than the burst": [(0, "u", 1, True), (3600, "u", 60, True), (0, "u", 1, False)],
    "a refused take spends nothing": [(0, "u", 50, True), (0, "u", 20, False), (0, "u", 10, True)],
    "users are independent": [(0, "u", 60, True), (0, "v", 60, True), (0, "u", 1, False)],
    "a cost above the burst needs a full bucket": [(0, "u", 500, True), (30, "u", 500, False), (30, "u", 500, True)],
}


@pytest.mark.parametrize("steps", STEPS.values(), ids=list(STEPS))
def test_take(steps):
    clock = Clock()
    q = UserQuota(60, clock=clock)
    for advance, user, cost, expected in steps:
        clock.now += advance
        assert q.take(user, cost) is expected, (advance, user, cost)


def test_refusal_is_rate_limited_with_retry():
    clock = Clock()
    q = UserQuota(60, what="message copies", clock=clock)
    assert q.take("u", 60)
    assert not q.take("u", 30)
    err = q.refusal("u", 30)
    assert (err.code, err.retry) == ("rate_limited", True)
    assert "60 message copies per minute" in err.message and "retry in 30.0 s" in err.message
    assert q.refused == 1


def test_memory_is_bounded_and_active_users_keep_their_state():
    """At most max_users buckets however many users come; a sender that
    keeps sending keeps its (empty) bucket while new users come and go."""
    clock = Clock()
    q = UserQuota(60, max_users=100, clock=clock)
    assert q.take("spammer", 60)
    for i in range(10_000):
        clock.now += 0.001
        q.take(f"user{i}", 1)
        assert len(q) <= 100
        if i % 25 == 0:
            q.take("spammer", 0)  # active
    assert not q.take("spammer", 20)  # ~10 s passed: ~10 tokens, not a fresh 60


def test_a_user_untouched_for_a_generation_starts_full():
    clock = Clock()
    q = UserQuota(60, max_users=10, clock=clock)
    assert q.take("quiet", 60)
    for i in range(10):  # two generations of 5 newcomers
        q.take(f"new{i}", 1)
    assert len(q) <= 10
    assert q.take("quiet", 60)  # forgotten: a full bucket, as after a minute's pause


@pytest.mark.parametrize("kw", [{"per_min": 0}, {"per_min": -1}, {"per_min": 10, "max_users": 1}])
def test_bad_arguments(kw):
    with pytest.raises(ValueError):
        UserQuota(**kw)
