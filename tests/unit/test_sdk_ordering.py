"""switchboard_client/ordering.py: the SDK's per-conversation order, without I/O.

The tables pin each decision; the property plays any interleaving of live
messages, history fills, duplicates and gap deadlines and checks what an
application relies on: each seq once, in order, none missing when history
has them.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings, strategies as st

from switchboard_client.frames import Msg, ResyncRange
from switchboard_client.ordering import Fill, Ordering


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


def repair(o: Ordering, conv: str, history: set[int], during: list[int]) -> list[Fill]:
    """What client.py's _repair does once the deadline passed: fetch each
    fill from ``history`` (``during``: live arrivals while the first fill
    runs), until no fill is left, then give up on what is still missing."""
    fills = []
    fill = o.expire(conv)
    while fill is not None:
        fills.append(fill)
        for seq in during:
            o.receive(msg(seq, conv))
        during = []
        for seq in sorted(history):
            if fill.after < seq <= fill.upto:
                o.receive(msg(seq, conv))
        fill = o.filled(conv, fill)
    o.skip(conv)
    o.repair_over(conv)
    return fills


ALL = set(range(1, 20))


@pytest.mark.parametrize("known, arrivals, fill_gaps, history, during, fills, ready", [
    (3, [5, 6], True, ALL, [], [(3, 5)], [4, 5, 6]),
    # Two gaps open at the deadline: both are fetched (the fill used to stop
    # at the first held message, and 6 and 7 were then skipped).
    (3, [5, 8], True, ALL, [], [(3, 7)], [4, 5, 6, 7, 8]),
    (3, [5, 8], True, ALL - {4}, [], [(3, 7)], [5, 6, 7, 8]),  # not in history: given up, the rest fetched
    (3, [5, 6], False, ALL, [], [], [5, 6]),  # no fill: skipped at the deadline
    (0, [7, 5, 6], True, ALL, [], [], [5, 6, 7]),  # first sight: starts at the lowest seen
    (0, [9, 5], True, ALL, [], [(5, 8)], [5, 6, 7, 8, 9]),
    (3, [5], True, ALL, [8], [(3, 4), (5, 7)], [4, 5, 6, 7, 8]),  # a gap opened during the fill: fetched too
])
def test_deadline(known, arrivals, fill_gaps, history, during, fills, ready):
    o = Ordering({"c": known} if known else None, fill_gaps=fill_gaps)
    assert feed(o, *arrivals) == []
    assert o.take_waits() == ["c"]
    assert [(f.after, f.upto) for f in repair(o, "c", history, during)] == fills
    assert [m.seq for m in o.take_ready()] == ready
    o.receive(msg(100))
    assert o.take_waits() == ["c"]  # the repair is over: a later gap starts a new deadline


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


# -- property -------------------------------------------------------------------------

CONVS = ("c1", "c2")
HISTORY = 12  # every conversation holds seqs 1..12 in history


class Model:
    """A client as client.py drives the core: live copies arriving in any
    order (and again), gap deadlines and history fills that end whenever,
    with arrivals in between."""

    def __init__(self, known: int) -> None:
        self.o = Ordering({c: known for c in CONVS} if known else None)
        self.due: list[str] = []  # conversations whose gap deadline runs
        self.filling: dict[str, Fill] = {}  # conversations with a fill under way
        self.before_deadline: dict[str, list[int]] = {c: [] for c in CONVS}  # arrivals until the first one
        self.expired: set[str] = set()
        self.got: dict[str, list[int]] = {c: [] for c in CONVS}

    def collect(self) -> None:
        for m in self.o.take_ready():
            got = self.got[m.conv]
            assert not got or m.seq > got[-1], "out of order or twice"
            got.append(m.seq)
        for conv in self.o.take_waits():
            assert conv not in self.due and conv not in self.filling, "two repairs of one conversation"
            self.due.append(conv)

    def arrive(self, conv: str, seq: int) -> None:
        if conv not in self.expired:
            self.before_deadline[conv].append(seq)
        self.o.receive(msg(seq, conv))
        self.collect()

    def next_fill(self, conv: str, fill: Fill | None) -> None:
        if fill is not None:
            self.filling[conv] = fill
        else:
            self.o.skip(conv)
            self.o.repair_over(conv)
        self.collect()

    def deadline(self, i: int) -> None:
        conv = self.due.pop(i % len(self.due))
        self.expired.add(conv)
        self.next_fill(conv, self.o.expire(conv))

    def fill_ends(self, i: int) -> None:
        conv = list(self.filling)[i % len(self.filling)]
        fill = self.filling.pop(conv)
        assert fill.upto is not None
        for seq in range(fill.after + 1, min(fill.upto, HISTORY) + 1):
            self.arrive(conv, seq)
        self.next_fill(conv, self.o.filled(conv, fill))


EVENTS = st.tuples(st.sampled_from(["arrive", "arrive", "arrive", "deadline", "fill"]),
                   st.integers(0, 1), st.integers(1, HISTORY))


@settings(max_examples=1000, deadline=None)
@example(known=0, events=[("arrive", 0, 3), ("deadline", 0, 1), ("arrive", 0, 1)])  # first sight, then an older seq
@example(known=1, events=[("arrive", 0, 3), ("arrive", 0, 5)])  # two gaps at one deadline
@example(known=1, events=[("arrive", 0, 3), ("deadline", 0, 1), ("arrive", 0, 6)])  # a gap opens during a fill
@given(known=st.integers(0, 3), events=st.lists(EVENTS, max_size=40))
def test_each_seq_reaches_the_app_once_in_order(known, events):
    """Whatever the interleaving of live messages, duplicates, gap deadlines
    and history fills: each conversation's messages reach the application
    once each, in order; and since history holds every seq, none is missing
    from where the client started to the highest seq that arrived."""
    m = Model(known)
    for kind, c, n in events:
        if kind == "arrive":
            m.arrive(CONVS[c], n)
        elif kind == "deadline" and m.due:
            m.deadline(n)
        elif kind == "fill" and m.filling:
            m.fill_ends(n)
    while m.due or m.filling:  # the repairs still running end
        if m.due:
            m.deadline(0)
        else:
            m.fill_ends(0)
    for c in CONVS:
        seen = [n for kind, ci, n in events if kind == "arrive" and CONVS[ci] == c and n > known]
        if not seen:
            assert m.got[c] == []
            continue
        # A conversation known up to ``known`` continues after it; one seen
        # first mid-stream starts at the lowest seq that came by its deadline.
        start = known + 1 if known else min(m.before_deadline[c])
        assert m.got[c] == list(range(start, max(seen) + 1))
