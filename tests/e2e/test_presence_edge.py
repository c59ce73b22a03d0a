"""Presence through the edge, end to end: clients send ``presence.watch`` over
real WebSockets; edges report connects/disconnects and heartbeats; the tracker
(in-process, memory:// or a real Redis) publishes changes to watchers only.

Heartbeats every 0.2 s (TTL 0.6 s) and a 0.1 s sweep, so an edge that dies is
noticed in about a second.

A user may watch only users who share a conversation with it (issue 8): the
tests create one first; strangers are answered as never seen and not watched.
"""

from __future__ import annotations

import pytest

from switchboard import frames
from tests.e2e.helpers import Events, PresenceChanges, kind, unique

FAST = dict(presence_heartbeat_sec=0.2, presence_sweep_sec=0.1)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def presence_url(request) -> str:
    return "memory://" if request.param == "memory" else request.getfixturevalue("redis_url")


@pytest.fixture
async def dep(deploy, presence_url):
    return await deploy(roles=("sequencer", "edge", "presence"), presence_url=presence_url, **FAST)


async def test_watch_answers_current_state(dep):
    alice, bob, never = unique("alice"), unique("bob"), unique("never")
    async with PresenceChanges(dep.settings) as changes:
        await dep.sdk(bob)
        await changes.wait(bob, online=True)
    a = await dep.sdk(alice)
    await a.create_conversation([bob, never])
    await a.send_frame(frames.PresenceWatch(users=[bob, never]))
    ev = Events(a)
    pb = await ev.expect(kind("presence", user=bob))
    pn = await ev.expect(kind("presence", user=never))
    assert pb.online is True and pb.last_seen is not None
    # a user never seen is simply offline, with no last-seen
    assert (pn.online, pn.last_seen) == (False, None)


async def test_changes_reach_watchers_only_and_any_device_counts(dep):
    alice, bob, dave = unique("alice"), unique("bob"), unique("dave")
    a = await dep.sdk(alice)
    await a.create_conversation([bob, dave])
    d = await dep.sdk(dave)  # connected, watches nobody
    ev = Events(a)
    await a.send_frame(frames.PresenceWatch(users=[bob]))
    first = await ev.expect(kind("presence", user=bob))
    assert first.online is False

    b1 = await dep.sdk(bob)
    assert (await ev.expect(kind("presence", user=bob))).online is True
    b2 = await dep.sdk(bob)  # a second device: still online, no change to report
    await b1.close()  # one device left: still online
    await ev.nothing(kind("presence", user=bob))
    await b2.close()  # last device gone
    gone = await ev.expect(kind("presence", user=bob))
    assert gone.online is False and gone.last_seen is not None
    # dave never asked: nothing about bob reached him
    await Events(d).nothing(kind("presence"), wait=0.1)


async def test_edge_that_dies_takes_its_users_offline(dep):
    """An edge killed without a word sends no disconnect: its users go
    offline when their heartbeated entries expire (TTL 0.6 s here)."""
    alice, bob = unique("alice"), unique("bob")
    edge2 = await dep.start("edge", mode="processes")  # a second edge, as a process to kill
    b = await dep.sdk(bob, edge=edge2, backoff_min=5.0, backoff_max=5.0)  # no quick reconnect elsewhere
    a = await dep.sdk(alice)
    await a.create_conversation([bob])
    ev = Events(a)
    await a.send_frame(frames.PresenceWatch(users=[bob]))
    # the watch answer says online, or (if bob's connect event is still
    # on its way) the change that follows it does
    await ev.expect(kind("presence", user=bob, online=True))
    edge2.kill()
    gone = await ev.expect(kind("presence", user=bob, online=False), timeout=5.0)
    assert gone.online is False and gone.last_seen is not None
    await b.close()


async def test_watch_of_a_stranger_tells_nothing(dep):
    """Protects item 9 (privacy): presence.watch returned anyone's online
    state and last seen. A user who shares no conversation with the watcher
    is answered exactly like a user never seen (offline, last_seen null),
    whatever their real state, and their later changes never reach the
    watcher. A member of a shared conversation is answered truly; so is the
    watcher itself."""
    alice, bob, carol, erin = unique("alice"), unique("bob"), unique("carol"), unique("erin")
    async with PresenceChanges(dep.settings) as changes:
        c = await dep.sdk(carol)  # a stranger to alice, online, with a conversation of her own
        await c.create_conversation([erin])
        await changes.wait(carol, online=True)
        e = await dep.sdk(erin)
        await changes.wait(erin, online=True)
        await e.close()  # erin: offline now, with a last seen
        await changes.wait(erin, online=False)
    a = await dep.sdk(alice)
    await a.create_conversation([bob])
    ev = Events(a)
    await a.send_frame(frames.PresenceWatch(users=[carol, bob, erin, alice]))
    got = {}
    for _ in range(4):
        p = await ev.expect(kind("presence"))
        got[p.user] = (p.online, p.last_seen)
    assert got[carol] == (False, None)  # online in truth
    assert got[erin] == (False, None)  # has a last seen in truth
    assert got[bob] == (False, None)  # a contact, never seen: the same answer, truly
    assert got[alice][0] is True  # herself
    # carol's and erin's changes are not sent to alice; bob's are
    await c.close()
    await dep.sdk(erin)
    await dep.sdk(bob)
    assert (await ev.expect(kind("presence", user=bob))).online is True
    await ev.nothing(kind("presence", user=carol), wait=0.3)
    await ev.nothing(kind("presence", user=erin), wait=0.1)


async def test_watches_per_user_are_capped(deploy, presence_url):
    """Protects item 9 (amplification): watches were capped per request only,
    so one user could watch without bound over many requests. At
    presence_max_watches_per_user distinct users a watch that would add more
    is refused (limit_exceeded) and adds nothing; watching the same users
    again stays allowed."""
    dep = await deploy(roles=("sequencer", "edge", "presence"), presence_url=presence_url,
                       presence_max_watches_per_user=3, **FAST)
    alice = unique("alice")
    others = [unique("u") for _ in range(5)]
    r = await dep.raw(alice)
    await r.send({"type": "conv.create", "members": others, "id": "c1"})
    await r.expect("conv")
    await r.send({"type": "presence.watch", "users": others[:2], "id": "w1"})
    await r.send({"type": "presence.watch", "users": others[1:3], "id": "w2"})  # one new: 3 in all
    await r.send({"type": "presence.watch", "users": others[:3], "id": "w3"})  # nothing new
    await r.send({"type": "presence.watch", "users": others[2:4], "id": "w4"})  # a 4th: refused
    err = await r.expect("error", ref="w4")
    assert err["code"] == "limit_exceeded" and err["retry"] is False
    await r.send({"type": "presence.watch", "users": others[4:], "id": "w5"})  # a 5th: refused too
    assert (await r.expect("error", ref="w5"))["code"] == "limit_exceeded"
    assert not [r.replies.get(ref) for ref in ("w1", "w2", "w3") if r.replies.get(ref)]
    # What was watched, seen on the wire: the three accepted users' coming
    # online reaches alice, the two refused ones' does not.
    for u in others:
        await dep.sdk(u)
    for u in others[:3]:
        await r.expect("presence", user=u, online=True)
    await r.nothing(lambda f: f.get("type") == "presence" and f.get("user") in others[3:], wait=0.5)
