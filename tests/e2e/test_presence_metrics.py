"""Presence cost on ``/metrics``: the edge's watch gauges and fan-out
counters, and the tracker's fan-out counter, read from the edge's real
``/metrics`` page over HTTP (the in-process fabric re-exports the tracker's
registry there, as ``switchboard up`` does from the tracker's process).

What it protects: an operator sizes presence from these series
(docs/operations.md, "Presence"); a watch that is not counted, a change that
is fanned out but not counted (or counted once where it went to two
sockets), or a gauge that keeps a gone watcher's entries would make them lie.
"""

from __future__ import annotations

import asyncio

from switchboard import frames
from tests.e2e.helpers import Events, kind, unique, until

FAST = dict(presence_heartbeat_sec=0.2, presence_sweep_sec=0.1)
NAMES = ("switchboard_edge_presence_watches", "switchboard_edge_presence_watchers",
         "switchboard_edge_presence_events_total", "switchboard_edge_presence_frames_total",
         "switchboard_presence_changes_total", "switchboard_presence_fanout_total")


async def test_watch_gauges_and_fanout_counters_move(deploy):
    d = await deploy(roles=("sequencer", "edge", "presence"), **FAST)
    alice, bob, carol, stranger = unique("alice"), unique("bob"), unique("carol"), unique("stranger")
    m0 = await d.metrics(*NAMES)
    assert set(m0) == set(NAMES), m0  # every series is there before anything happened
    assert m0["switchboard_edge_presence_watches"] == 0

    a1 = await d.sdk(alice)
    a2 = await d.sdk(alice)  # a second device of the watcher: one change, two frames
    await a1.create_conversation([bob, carol])
    ev1 = Events(a1)
    await a1.send_frame(frames.PresenceWatch(users=[bob, carol, stranger]))
    await ev1.expect(kind("presence", user=stranger))
    # the stranger (no shared conversation) is answered but not watched: 2 entries, 1 watcher
    m1 = await d.metrics(*NAMES)
    assert m1["switchboard_edge_presence_watches"] == 2, m1
    assert m1["switchboard_edge_presence_watchers"] == 1, m1
    # watching again adds nothing: the tracker holds a set per watcher
    await a2.send_frame(frames.PresenceWatch(users=[bob]))
    await Events(a2).expect(kind("presence", user=bob))
    assert (await d.metrics(*NAMES))["switchboard_edge_presence_watches"] == 2

    await d.sdk(bob)  # bob goes online: one change for one watcher with two sockets here
    await ev1.expect(kind("presence", user=bob, online=True))
    await Events(a2).expect(kind("presence", user=bob, online=True))

    async def counted() -> bool:
        m = await d.metrics(*NAMES)
        return (m["switchboard_edge_presence_events_total"] - m0["switchboard_edge_presence_events_total"] == 1
                and m["switchboard_edge_presence_frames_total"] - m0["switchboard_edge_presence_frames_total"] == 2
                and m["switchboard_presence_fanout_total"] - m0["switchboard_presence_fanout_total"] == 1)

    await until(counted, what="one presence event, two frames, one tracker fan-out")
    m2 = await d.metrics(*NAMES)
    # alice and bob each went online (bob's change is the one with a watcher)
    assert m2["switchboard_presence_changes_total"] - m0["switchboard_presence_changes_total"] >= 2

    await a1.close()  # one device left: the watches stay
    await asyncio.sleep(0.1)
    assert (await d.metrics(*NAMES))["switchboard_edge_presence_watches"] == 2
    await a2.close()  # the watcher's last socket here: its entries go

    async def dropped() -> bool:
        m = await d.metrics(*NAMES)
        return m["switchboard_edge_presence_watches"] == 0 and m["switchboard_edge_presence_watchers"] == 0

    await until(dropped, what="the gone watcher's entries dropped")
