"""Presence end to end: real nats-server, a tracker, two edges' PresenceReporters.

Checks that transitions reach only watchers' ``ev.presence`` subjects, that a
second device is not a change, and that an edge that dies without a word
takes its users offline within the TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import msgspec
import nats
import pytest

from presence.tracker import PresenceTracker, TrackerConfig
from switchboard.frames import Presence, decode_server_frame
from switchboard.presence import open_presence
from switchboard.presence.messages import PresenceReply, QueryRequest, WatchRequest, encode
from switchboard.presence.reporter import PresenceReporter
from switchboard.subjects import Subjects
from tests.e2e.helpers import CuttableProxy, until

# The raw reply body: these tests read the wire itself (error body + headers),
# where a service would use switchboard.rpc.call.
decode_reply = msgspec.json.Decoder(PresenceReply).decode

INTERVAL = 0.15  # heartbeat every 150 ms, TTL 450 ms: a dead edge is noticed fast


class Inbox:
    """Everything published on one subject, decoded as server frames."""

    def __init__(self) -> None:
        self.frames: asyncio.Queue = asyncio.Queue()

    async def cb(self, msg) -> None:
        await self.frames.put(decode_server_frame(msg.data))

    async def next(self, timeout: float = 3.0) -> Presence:
        return await asyncio.wait_for(self.frames.get(), timeout)

    async def nothing(self, wait: float = 0.3) -> None:
        await asyncio.sleep(wait)
        assert self.frames.empty(), f"unexpected: {self.frames.get_nowait()}"


@pytest.fixture
async def world(nats_server):
    subjects = Subjects(f"p{uuid.uuid4().hex[:10]}")  # own subjects on the shared server
    nc_tracker = await nats.connect(nats_server.url)
    nc_a = await nats.connect(nats_server.url)
    proxy_b = CuttableProxy(int(nats_server.url.rsplit(":", 1)[1]))  # edge B's network, which a test cuts
    await proxy_b.start()
    nc_b = await nats.connect(f"nats://127.0.0.1:{proxy_b.port}", max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    backend = open_presence("memory://")
    await backend.open()
    tracker = PresenceTracker(nc=nc_tracker, backend=backend, subjects=subjects,
                              config=TrackerConfig(sweep_sec=0.05))
    await tracker.start()
    a = PresenceReporter(nc=nc_a, subjects=subjects, edge_id="edge-a", interval_sec=INTERVAL)
    b = PresenceReporter(nc=nc_b, subjects=subjects, edge_id="edge-b", interval_sec=INTERVAL)
    await a.start()
    await b.start()
    yield subjects, nc_tracker, tracker, a, b, proxy_b
    await a.stop()
    await b.stop()
    await tracker.stop()
    for nc in (nc_a, nc_b, nc_tracker):
        with contextlib.suppress(Exception):
            await nc.close()
    await proxy_b.close()


async def listen(nc, subject) -> Inbox:
    box = Inbox()
    await nc.subscribe(subject, cb=box.cb)
    await nc.flush()
    return box


async def request(nc, subject, payload):
    msg = await nc.request(subject, encode(payload), timeout=2)
    return msg, decode_reply(msg.data)


async def wait_online(nc, subjects, user, online: bool, timeout: float = 3.0) -> None:
    async def now() -> bool:
        _, reply = await request(nc, subjects.api("presence", "query"), QueryRequest(users=[user]))
        return reply.users[0].online is online

    await until(now, timeout, f"{user} online={online}")


async def test_transitions_reach_watchers_only(world):
    subjects, nc, tracker, a, b, proxy_b = world
    watcher_live = await listen(nc, subjects.ev_presence("w"))
    other_live = await listen(nc, subjects.ev_presence("nw"))
    changed = await listen(nc, subjects.presence_changed("alice"))
    a.connected("w")
    b.connected("nw")
    await wait_online(nc, subjects, "w", True)

    # The watch answers the current state: never seen = offline, no last_seen.
    _, reply = await request(nc, subjects.api("presence", "watch"), WatchRequest(watcher="w", users=["alice", "bob"]))
    assert reply.error is None
    assert reply.users == [Presence(user="alice", online=False), Presence(user="bob", online=False)]

    a.connected("alice")
    got = await watcher_live.next()
    assert (got.user, got.online) == ("alice", True)
    assert (await changed.next()).online is True

    # Multi-device: a second device elsewhere, then losing the first, is no
    # change. Edges are not ordered with each other, so let the tracker see
    # B's connect before A's disconnect (else offline->online is correct too).
    seen = tracker.reports
    b.connected("alice")
    await until(lambda: tracker.reports != seen, what="the tracker counting B's connect", every=0.005)
    a.connected("alice")
    a.disconnected("alice")
    a.disconnected("alice")
    await watcher_live.nothing()
    b.disconnected("alice")
    got = await watcher_live.next()
    assert (got.user, got.online) == ("alice", False) and got.last_seen is not None

    await other_live.nothing(0.05)  # nw watches nobody: it got nothing at all


async def test_dead_edge_users_go_offline_within_ttl(world):
    subjects, nc, tracker, a, b, proxy_b = world
    watcher_live = await listen(nc, subjects.ev_presence("w2"))
    a.connected("w2")
    b.connected("bob")
    await wait_online(nc, subjects, "bob", True)
    await request(nc, subjects.api("presence", "watch"), WatchRequest(watcher="w2", users=["bob"]))
    await asyncio.sleep(2 * INTERVAL)  # a few heartbeats keep bob online
    assert watcher_live.frames.empty()

    # Edge B's network dies: no disconnect and no heartbeat reaches the
    # tracker any more (its connection is cut and reconnects are refused).
    proxy_b.cut()
    t0 = asyncio.get_running_loop().time()
    got = await watcher_live.next(timeout=5)
    elapsed = asyncio.get_running_loop().time() - t0
    assert (got.user, got.online) == ("bob", False)
    assert elapsed < 3 * INTERVAL + 1.0  # the TTL plus sweep and scheduling slack, not forever


async def test_watch_ends_when_watcher_goes_offline(world):
    subjects, nc, tracker, a, b, proxy_b = world
    watcher_live = await listen(nc, subjects.ev_presence("w3"))
    a.connected("w3")
    await wait_online(nc, subjects, "w3", True)
    await request(nc, subjects.api("presence", "watch"), WatchRequest(watcher="w3", users=["carol"]))
    a.disconnected("w3")
    await wait_online(nc, subjects, "w3", False)
    b.connected("carol")
    await wait_online(nc, subjects, "carol", True)
    await watcher_live.nothing(0.1)


@pytest.mark.parametrize("endpoint, payload, code", [
    ("query", b'{"users":["ok","a.>"]}', "invalid_id"),
    ("watch", b'{"watcher":"a b","users":["ok"]}', "invalid_id"),
    ("watch", b'{"watcher":"w","users":["*"]}', "invalid_id"),
    ("query", b'{"users":', "bad_request"),  # not a QueryRequest: switchboard/rpc's decode error
    ("query", b'{"users":"alice"}', "bad_request"),
    ("query", b'{"users":[' + b",".join(b'"u%d"' % i for i in range(1001)) + b"]}", "limit_exceeded"),
])
async def test_bad_requests_get_coded_errors(world, endpoint, payload, code):
    subjects, nc, *_ = world
    msg = await nc.request(subjects.api("presence", endpoint), payload, timeout=2)
    reply = decode_reply(msg.data)
    assert reply.error is not None and reply.error.code == code
    assert msg.headers["Nats-Service-Error-Code"] == code  # `nats micro stats` counts it


async def test_heartbeat_repairs_a_lost_connect_event(nats_server):
    # A connect event lost on the way (core NATS is at most once; here: sent
    # while no tracker listened): the next heartbeat names the user, and the
    # tracker turns them online.
    subjects = Subjects(f"p{uuid.uuid4().hex[:10]}")
    nc = await nats.connect(nats_server.url)
    edge = PresenceReporter(nc=nc, subjects=subjects, edge_id="edge-l", interval_sec=INTERVAL)
    backend = open_presence("memory://")
    await backend.open()
    tracker = PresenceTracker(nc=nc, backend=backend, subjects=subjects, config=TrackerConfig(sweep_sec=0.05))
    try:
        await edge.start()
        edge.connected("dave")
        await nc.flush()  # published, to nobody: lost
        await tracker.start()
        await wait_online(nc, subjects, "dave", True, timeout=3 * INTERVAL + 1)
    finally:
        await edge.stop()
        await tracker.stop()
        await nc.close()


@pytest.mark.redis
async def test_two_trackers_on_redis_publish_each_change_once(nats_server, redis_url):
    # Several trackers in the queue group share Redis: every heartbeat and
    # every sweep may land on either, but a change is published exactly once.
    subjects = Subjects(f"p{uuid.uuid4().hex[:10]}")
    url = f"{redis_url}?prefix=e{uuid.uuid4().hex[:10]}"
    conns, backends, trackers = [], [], []
    for _ in range(2):
        nc = await nats.connect(nats_server.url)
        backend = open_presence(url)
        await backend.open()
        tracker = PresenceTracker(nc=nc, backend=backend, subjects=subjects, config=TrackerConfig(sweep_sec=0.05))
        await tracker.start()
        conns.append(nc)
        backends.append(backend)
        trackers.append(tracker)
    nc_edge = await nats.connect(nats_server.url)
    edge = PresenceReporter(nc=nc_edge, subjects=subjects, edge_id="edge-r", interval_sec=INTERVAL)
    await edge.start()
    try:
        nc = conns[0]
        live = await listen(nc, subjects.ev_presence("w"))
        edge.connected("w")
        await wait_online(nc, subjects, "w", True)
        # Both trackers take part before the changes: the queue group picks
        # one per heartbeat at random, and in CI nine heartbeats once all
        # went to one tracker, which proved nothing about the other.
        await until(lambda: all(t.reports > 0 for t in trackers), 10, "a heartbeat at each tracker")
        await request(nc, subjects.api("presence", "watch"),
                      WatchRequest(watcher="w", users=[f"u{i}" for i in range(20)]))
        for i in range(20):
            edge.connected(f"u{i}")
        got = [await live.next() for _ in range(20)]
        assert sorted(p.user for p in got) == sorted(f"u{i}" for i in range(20)) and all(p.online for p in got)
        await asyncio.sleep(3 * INTERVAL)  # heartbeats spread over both trackers: no repeats
        assert live.frames.empty()
        for i in range(10):
            edge.disconnected(f"u{i}")
        got = [await live.next() for _ in range(10)]
        assert sorted(p.user for p in got) == sorted(f"u{i}" for i in range(10)) and not any(p.online for p in got)
        await live.nothing(0.3)
    finally:
        await edge.stop()
        for t in trackers:
            await t.stop()
        for b in backends:
            await b.close()
        for c in (*conns, nc_edge):
            await c.close()


async def test_reporter_sends_first_connect_and_last_disconnect_only(nats_server):
    from switchboard.presence.messages import Events, decode_report

    subjects = Subjects(f"p{uuid.uuid4().hex[:10]}")
    nc = await nats.connect(nats_server.url)
    reports: asyncio.Queue = asyncio.Queue()

    async def cb(msg):
        await reports.put(decode_report(msg.data))

    await nc.subscribe(subjects.presence_hb("edge-x"), cb=cb)
    rep = PresenceReporter(nc=nc, subjects=subjects, edge_id="edge-x", interval_sec=60)
    try:
        rep.connected("ann")
        rep.connected("ann")  # second device: same entry
        rep.connected("ghost")
        rep.disconnected("ghost")  # gone before anything was sent: never reported
        rep.disconnected("nobody")  # unknown: ignored
        await rep.start()
        first = await asyncio.wait_for(reports.get(), 2)
        assert first == Events(edge="edge-x", connected=["ann"], ttl_ms=180_000)
        hb = await asyncio.wait_for(reports.get(), 2)  # the first heartbeat goes out at once
        assert hb.users == ["ann"]
        rep.disconnected("ann")
        await asyncio.sleep(0.1)
        assert reports.empty()  # one device left
        rep.disconnected("ann")
        assert await asyncio.wait_for(reports.get(), 2) == Events(edge="edge-x", disconnected=["ann"], ttl_ms=180_000)
        rep.connected("bea")
        await asyncio.wait_for(reports.get(), 2)
        await rep.stop()  # stop reports everyone gone
        assert await asyncio.wait_for(reports.get(), 2) == Events(edge="edge-x", disconnected=["bea"])
    finally:
        await rep.stop()
        await nc.close()
