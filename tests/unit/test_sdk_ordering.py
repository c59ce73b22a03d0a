"""switchboard/ordering.py: the SDK's per-conversation order, without I/O.

The tables pin each decision.
"""

from __future__ import annotations

import pytest

from switchboard.frames import Msg, ResyncRange
from switchboard.ordering import Fill, Ordering


def msg(seq: int, conv: str = "c") -> Msg:
    return Msg(conv=conv, seq=seq, id=f"m{seq}", from_="alice", body="x", ts=0)


def feed(o: Ordering, *seqs: int, conv: str = "c") -> list[int]:
    for s in seqs:
        o.receive(msg(s, conv))
    return [m.seq for m in o.take_ready()]


@pytest.mark.parametrize("known, arrivals, ready, waits", [
    (0, [1, 2, 3], [1, 2, 3], []),  # in order from the start
    (3, [4, 4, 3, 2], [4], []),  # duplicates and old seqs are dropped
    (3, [5], [], ["c"]),  # 4 missing: wait for it
    (3, [5, 6, 4], [4, 5, 6], ["c"]),  # it came: everything held is released
    (3, [6, 5, 7], [], ["c"]),  # one deadline per conversation, however many arrive early
    (0, [5, 6], [], ["c"]),  # first sight mid-stream: wait to see where it starts
])
def test_receive(known, arrivals, ready, waits):
    o = Ordering({"c": known} if known else None)
    assert feed(o, *arrivals) == ready
    assert o.take_waits() == waits


@pytest.mark.parametrize("known, arrivals, fill_gaps, fill, after_expire, after_skip", [
    (3, [5, 6], True, Fill("c", 3, 4), [], [5, 6]),  # fetch 4, then give up on it
    (3, [5, 8], True, Fill("c", 3, 4), [], [5, 8]),  # only up to the first held one
    (3, [5, 6], False, None, [], [5, 6]),  # no fill: skip at the deadline
    (0, [7, 5, 6], True, None, [5, 6, 7], []),  # first sight: starts at the lowest seen
    (0, [9, 5], True, Fill("c", 5, 8), [5], [9]),
])
def test_deadline(known, arrivals, fill_gaps, fill, after_expire, after_skip):
    o = Ordering({"c": known} if known else None, fill_gaps=fill_gaps)
    feed(o, *arrivals)
    assert o.take_waits() == ["c"]
    assert o.expire("c") == fill
    assert [m.seq for m in o.take_ready()] == after_expire
    o.skip("c")
    assert [m.seq for m in o.take_ready()] == after_skip
    o.repair_over("c")
    o.receive(msg(100))
    assert o.take_waits() == ["c"]  # a later gap starts a new deadline


def test_fill_merges_with_held_messages():
    o = Ordering({"c": 3})
    assert feed(o, 6) == []
    fill = o.expire("c")
    assert fill == Fill("c", 3, 5)
    assert feed(o, 4, 5) == [4, 5, 6]  # history's messages go through receive like live ones


def test_too_many_held_skips_the_gap():
    """A gap that never fills cannot hold memory without bound."""
    o = Ordering({"c": 1}, max_held=3)
    assert feed(o, 3, 4, 5) == []
    assert feed(o, 6) == [3, 4, 5, 6]


def test_synced_groups():
    o = Ordering({"seen": 4, "same": 9})
    fills = o.synced([ResyncRange(conv="new", upto=7), ResyncRange(conv="seen", upto=10),
                      ResyncRange(conv="same", upto=9)])
    assert fills == [Fill("seen", 4, 10)]  # a new group starts from now; nothing to fetch for "same"
    assert o.conv_seqs() == {"new": 7, "seen": 4, "same": 9}
    assert Ordering({"seen": 4}, fill_gaps=False).synced([ResyncRange(conv="seen", upto=10)]) == []


def test_resync_ranges_less_what_the_client_has():
    o = Ordering({"a": 5, "b": 9}, fill_gaps=False)  # resync ranges are fetched regardless
    fills = o.resync([ResyncRange(conv="a", after=2, upto=8), ResyncRange(conv="b", upto=9),
                      ResyncRange(conv="c", after=3), ResyncRange(conv="d", after=0, upto=4)])
    assert fills == [Fill("a", 5, 8), Fill("c", 3, None), Fill("d", 0, 4)]
