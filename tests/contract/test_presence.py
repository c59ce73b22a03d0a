"""Contract suite for PresenceBackend: the same tests against memory:// and a real Redis.

Time is a fake clock (ms), so TTL expiry is tested without sleeping. Each
Redis test uses its own key prefix, so tests never see each other's keys.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from switchboard.errors import ConfigError
from switchboard.frames import Presence
from switchboard.presence import PresenceBackend, open_presence


class FakeClock:
    def __init__(self, now: int = 1_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def url(request):
    if request.param == "memory":
        return "memory://"
    base = request.getfixturevalue("redis_url")  # tests/services/redis.py
    return f"{base}?prefix=t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
async def backend(url, clock):
    b = open_presence(url, clock=clock)
    await b.open()
    yield b
    await b.close()


@pytest.fixture
async def twin(url, backend, clock):
    """A second tracker's view of the same state (a second client on Redis;
    memory:// is one process by contract, so it is the same object)."""
    if url.startswith("memory"):
        yield backend
        return
    b = open_presence(url, clock=clock)
    await b.open()
    yield b
    await b.close()


def on(user, ts):
    return Presence(user=user, online=True, last_seen=ts)


def off(user, ts):
    return Presence(user=user, online=False, last_seen=ts)


async def test_is_a_presence_backend(backend):
    assert isinstance(backend, PresenceBackend)


async def test_never_seen_user_is_offline_without_last_seen(backend):
    assert await backend.online(["ghost"]) == {"ghost": (False, None)}
    assert await backend.online([]) == {}


async def test_first_refresh_is_a_transition_later_ones_are_not(backend, clock):
    t0 = clock.now
    assert await backend.refresh("e1", ["alice", "bob", "alice"], 30_000) == [on("alice", t0), on("bob", t0)]
    clock.now += 1000
    assert await backend.refresh("e1", ["alice", "bob"], 30_000) == []
    assert await backend.online(["alice", "bob", "carol"]) == {
        "alice": (True, clock.now), "bob": (True, clock.now), "carol": (False, None)}


async def test_remove_sets_last_seen_and_is_idempotent(backend, clock):
    await backend.refresh("e1", ["alice"], 30_000)
    clock.now += 5000
    assert await backend.remove("e1", ["alice"]) == [off("alice", clock.now)]
    assert await backend.remove("e1", ["alice"]) == []
    assert await backend.remove("nope", ["alice", "zed"]) == []
    seen = clock.now
    clock.now += 5000
    assert await backend.online(["alice"]) == {"alice": (False, seen)}


async def test_multi_edge_user_is_online_while_any_entry_lives(backend, clock):
    # Two devices on two edges: losing one device is not a change.
    await backend.refresh("e1", ["alice"], 30_000)
    assert await backend.refresh("e2", ["alice"], 30_000) == []
    assert await backend.remove("e1", ["alice"]) == []
    assert (await backend.online(["alice"]))["alice"][0] is True
    assert await backend.remove("e2", ["alice"]) == [off("alice", clock.now)]


async def test_coming_back_online_after_going_offline(backend, clock):
    await backend.refresh("e1", ["alice"], 30_000)
    await backend.remove("e1", ["alice"])
    clock.now += 10
    assert await backend.refresh("e2", ["alice"], 30_000) == [on("alice", clock.now)]


async def test_entries_expire_after_ttl_and_date_last_seen_to_last_refresh(backend, clock):
    t0 = clock.now
    await backend.refresh("e1", ["alice", "bob"], 1000)
    clock.now = t0 + 500
    await backend.refresh("e1", ["bob"], 1000)  # bob's heartbeat continues, alice's stopped
    clock.now = t0 + 999
    assert await backend.expire() == []
    clock.now = t0 + 1000  # alice's deadline: expired at exactly now + ttl
    assert await backend.expire() == [off("alice", t0)]
    assert await backend.expire() == []  # a transition is returned once
    clock.now = t0 + 1600
    assert await backend.expire() == [off("bob", t0 + 500)]
    assert await backend.online(["alice", "bob"]) == {"alice": (False, t0), "bob": (False, t0 + 500)}


async def test_expiry_of_one_edge_keeps_users_online_on_another(backend, clock):
    await backend.refresh("dead", ["alice", "bob"], 1000)
    await backend.refresh("alive", ["alice"], 60_000)
    clock.now += 2000
    assert await backend.expire() == [off("bob", clock.now - 2000)]
    assert (await backend.online(["alice"]))["alice"][0] is True


async def test_expire_sweeps_a_large_dead_edge(backend, clock):
    # More entries than the Redis backend sweeps per script call.
    users = [f"u{i}" for i in range(5000)]
    assert len(await backend.refresh("big", users, 1000)) == 5000
    clock.now += 1000
    gone = await backend.expire()
    assert sorted(p.user for p in gone) == sorted(users)
    assert all(not p.online for p in gone)


async def test_watches(backend):
    await backend.watch("w1", ["alice", "bob"])
    await backend.watch("w2", ["alice"])
    await backend.watch("w1", ["alice"])  # repeat: harmless
    await backend.watch("w3", [])
    assert await backend.watchers_of("alice") == {"w1", "w2"}
    assert await backend.watchers_of("nobody") == set()
    assert await backend.watchers_of_many(["alice", "bob", "zed"]) == {
        "alice": {"w1", "w2"}, "bob": {"w1"}, "zed": set()}
    await backend.unwatch_all("w1")
    assert await backend.watchers_of_many(["alice", "bob"]) == {"alice": {"w2"}, "bob": set()}
    await backend.unwatch_all("never-watched")


# (watch calls in order, each (users, expected result)); limit 3 throughout
WATCH_LIMIT_CASES = {
    "up to the limit": [(["a", "b"], True), (["c"], True)],
    "repeats do not count": [(["a", "b", "c"], True), (["a", "b", "c", "a"], True), (["c"], True)],
    "duplicates in one call count once": [(["a", "a", "b", "b", "c", "c"], True)],
    "over the limit adds nothing": [(["a", "b"], True), (["c", "d"], False), (["c"], True), (["d"], False)],
    "one call over the limit": [(["a", "b", "c", "d"], False), (["a"], True)],
}


@pytest.mark.parametrize("calls", WATCH_LIMIT_CASES.values(), ids=list(WATCH_LIMIT_CASES))
async def test_watch_limit_per_watcher(backend, calls):
    """Protects item 9 of issue 8: the watches of one watcher are bounded
    (checked and added atomically); a refused watch adds nothing."""
    expected: set[str] = set()
    for users, ok in calls:
        assert await backend.watch("w", users, limit=3) is ok, (users, ok)
        if ok:
            expected |= set(users)
        watched = {u for u, ws in (await backend.watchers_of_many(["a", "b", "c", "d"])).items() if "w" in ws}
        assert watched == expected
    assert await backend.watch("other", ["a", "b", "c"], limit=3) is True  # per watcher
    await backend.unwatch_all("w")
    assert await backend.watch("w", ["d"], limit=3) is True  # room again once the watches are gone


@pytest.mark.parametrize("how", ["remove", "expire"])
async def test_watches_end_with_the_watchers_last_device(backend, clock, how):
    await backend.refresh("e1", ["w"], 1000)
    await backend.refresh("e2", ["w"], 1000)
    await backend.watch("w", ["alice"])
    await backend.remove("e1", ["w"])  # one device left: the watch stays
    assert await backend.watchers_of("alice") == {"w"}
    if how == "remove":
        await backend.remove("e2", ["w"])
    else:
        clock.now += 1000
        assert [p.user for p in await backend.expire()] == ["w"]
    assert await backend.watchers_of("alice") == set()


async def test_concurrent_trackers_see_each_transition_once(backend, twin, clock):
    # Two trackers (queue group) process a connect of the same user from two
    # edges, then both sweep: one online and one offline change in total.
    results = await asyncio.gather(backend.refresh("e1", ["alice"], 1000), twin.refresh("e2", ["alice"], 1000))
    assert sum(len(r) for r in results) == 1
    clock.now += 1000
    swept = await asyncio.gather(backend.expire(), twin.expire(), backend.expire())
    assert [p.user for r in swept for p in r] == ["alice"]


@pytest.mark.parametrize("bad_url", [
    "postgres://x", "memory", "redis://127.0.0.1:1/0?prefix=a.b", "redis://127.0.0.1:1/0?prefix=",
])
def test_bad_urls_are_rejected(bad_url):
    with pytest.raises(ConfigError):
        open_presence(bad_url)
