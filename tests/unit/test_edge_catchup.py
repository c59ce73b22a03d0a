"""edge/catchup.py: a socket's cursor, gap and replay decisions, without I/O.

The tables pin each decision; the property drives the core the way
edge/session.py does, through any interleaving of stores, live entries
(lost, duplicated), bus reconnects, hello and INBOX reads, and checks what a
client must see: every entry after its starting cursor, once, in order.
"""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import example, given, settings, strategies as st

from edge.catchup import DELIVER, DROP, FROM_NOW, GAP, REPLAY, Catchup, stale_bounds


def core(cursor=0, *, live=True, reading=False, max_per_user=10_000) -> Catchup:
    c = Catchup(max_per_user=max_per_user)
    c.cursor, c.live, c.reading = cursor, live, reading
    return c


@pytest.mark.parametrize("live, reading, cursor, seq, last, action, cursor_after, again", [
    (False, False, 0, 5, 0, DROP, 0, False),  # before hello: hello's read will find it in INBOX
    (True, False, 5, 5, 4, DROP, 5, False),  # the replay/live seam: already sent
    (True, False, 5, 3, 1, DROP, 5, False),
    (True, True, 5, 7, 6, DROP, 5, True),  # a read is running: it reads once more instead
    (True, False, 5, 7, 6, GAP, 5, False),  # 6 was missed: read INBOX, never skip it
    (True, False, 5, 7, 5, DELIVER, 7, False),
    (True, False, 5, 7, 0, DELIVER, 7, False),  # the user's first entry
    (True, False, 5, 7, 3, DELIVER, 7, False),  # other users' entries in between are no gap
])
def test_live_entry(live, reading, cursor, seq, last, action, cursor_after, again):
    c = core(cursor, live=live, reading=reading)
    assert c.on_live(seq, last) == action
    assert (c.cursor, c.again) == (cursor_after, again)
    assert c.reading == (reading or action == GAP)  # a gap starts the (one) read


@pytest.mark.parametrize("cursor, epoch, first, last, plan, cursor_after", [
    (None, None, 1, 10, FROM_NOW, 10),  # a new device starts from now
    (None, "old", 1, 10, "epoch_changed", 10),  # the epoch is checked first
    (5, "old", 1, 10, "epoch_changed", 10),
    (11, None, 1, 10, "cursor_unknown", 10),  # ahead of INBOX: would drop every live entry
    (3, None, 5, 10, "cursor_expired", 10),  # 4 is gone from INBOX
    (4, None, 5, 10, REPLAY, 4),  # 5, the first kept, is the next one
    (10, "e", 1, 10, REPLAY, 10),
    (0, None, 1, 0, REPLAY, 0),  # an empty stream
])
def test_hello(cursor, epoch, first, last, plan, cursor_after):
    c = core(live=False)
    assert c.hello(cursor, epoch, "e", first, last) == plan
    assert c.cursor == cursor_after and not c.live  # live entries count once the read starts


@pytest.mark.parametrize("cursor, last, stale", [(None, 10, False), (10, 10, False), (11, 10, True)])
def test_stale_bounds(cursor, last, stale):
    """A cursor beyond cached bounds re-reads them before calling it unknown."""
    assert stale_bounds(cursor, last) is stale


@pytest.mark.parametrize("batches, trimmed", [
    ([(11, 100)], False),  # the entry after the cursor is still there
    ([(13, 5)], True),  # entries skipped and the user is at the limit: trimmed
    ([(13, 4)], False),  # under the limit: the skipped seqs were other users'
    ([(0, 0)], False),  # nothing after the cursor
    ([(11, 6), (17, 5)], False),  # only a pass's first batch is checked
])
def test_trimmed_checks_first_batch_of_a_checking_read(batches, trimmed):
    c = core(10, max_per_user=5)
    c.start_read(check_trimmed=True)
    assert [c.trimmed(first, total) for first, total in batches][-1] is trimmed


def test_trimmed_only_when_asked_and_again_on_each_pass():
    """The hello replay checks the first batch of every pass (as before the
    core existed); a gap or reconnect read never checks."""
    c = core(10, max_per_user=5)
    c.start_read()
    assert not c.trimmed(13, 5)
    c.start_read(check_trimmed=True)
    assert not c.trimmed(11, 5)
    c.again = True
    assert c.after_batch(0, 0)  # a new pass
    assert c.trimmed(13, 5)


@pytest.mark.parametrize("count, pending, again, more, reading_after", [
    (3, 2, False, True, True),  # more pending: next batch
    (3, 0, False, False, False),  # done
    (0, 0, False, False, False),
    (3, 0, True, True, True),  # live entries came meanwhile: once more
])
def test_after_batch(count, pending, again, more, reading_after):
    c = core(10)
    c.start_read()
    c.again = again
    assert c.after_batch(count, pending) is more
    assert c.reading is reading_after and not c.again


def test_replay_sends_only_beyond_the_cursor():
    c = core(10)
    assert [c.on_replay(s) for s in (9, 10, 11, 11, 14)] == [False, False, True, False, True]
    assert c.cursor == 14


@pytest.mark.parametrize("live, reading, start, again", [
    (False, False, False, False),  # before hello: its own read covers it
    (True, False, True, False),
    (True, True, False, True),  # running: it reads once more
])
def test_reconnect(live, reading, start, again):
    c = core(live=live, reading=reading)
    assert c.on_reconnect() is start
    assert c.again is again


# -- property -------------------------------------------------------------------------

# store: an entry is stored, its live copy on the way; arrive: stored and
# received live at once; live: the oldest copy on the way arrives; lose: stored,
# its live copy lost (a bus cut); dup: a copy received again.
OPS = ["store", "arrive", "arrive", "live", "lose", "dup", "reconnect", "hello", "fetch", "process"]


class Model:
    """INBOX (this user's entries), the live pipe, and one reader driven as
    edge/session.py drives the core: spawned, then fetch/process in steps,
    with live entries arriving between them."""

    def __init__(self, hello_cursor: int | None, batch: int) -> None:
        self.core = Catchup(max_per_user=10_000)
        self.hello_cursor, self.batch = hello_cursor, batch
        self.last_seq = 0  # INBOX's last sequence (all users)
        self.inbox: list[int] = []  # this user's entries
        self.pipe: deque[tuple[int, int]] = deque()
        self.seen: list[tuple[int, int]] = []  # live copies received
        self.lost = False  # a live entry was lost since the last reconnect
        self.start: int | None = None  # the cursor hello started from
        self.reader: str | tuple[list[int], int] | None = None  # "spawned" | "next" | (fetched batch, pending)
        self.check = False
        self.delivered: list[int] = []

    def deliver(self, seq: int) -> None:
        assert not self.delivered or seq > self.delivered[-1], "out of order or twice"
        self.delivered.append(seq)

    def spawn(self, check: bool = False) -> None:
        assert self.reader is None, "two reads at once"
        self.reader, self.check = "spawned", check

    def receive(self, seq: int, last: int) -> None:
        self.seen.append((seq, last))
        action = self.core.on_live(seq, last)
        if action == DELIVER:
            self.deliver(seq)
        elif action == GAP:
            self.spawn()

    def do(self, op: str, n: int) -> None:
        c = self.core
        if op in ("store", "arrive", "lose"):
            self.last_seq += 1 + n  # others' entries in between
            entry = (self.last_seq, self.inbox[-1] if self.inbox else 0)
            self.inbox.append(self.last_seq)
            if op == "lose":
                self.lost = True
            elif op == "store":
                self.pipe.append(entry)
            elif self.pipe:
                self.pipe.append(entry)  # behind the copies on the way: the pipe keeps order
            else:
                self.receive(*entry)
        elif op == "live" and self.pipe:
            self.receive(*self.pipe.popleft())
        elif op == "dup" and self.seen:
            self.receive(*self.seen[-1 - n % len(self.seen)])
        elif op == "reconnect":
            self.lost = False
            if c.on_reconnect():
                self.spawn()
        elif op == "hello" and self.start is None:
            cursor = None if self.hello_cursor is None else min(self.hello_cursor, self.last_seq)
            plan = c.hello(cursor, None, "e", 1, self.last_seq)
            assert plan in (FROM_NOW, REPLAY)
            self.start = c.cursor
            self.spawn(check=plan == REPLAY)
        elif op == "fetch" and self.reader in ("spawned", "next"):
            if self.reader == "spawned":
                c.start_read(check_trimmed=self.check)
            after = [s for s in self.inbox if s > c.cursor]
            assert not c.trimmed(after[0] if after else 0, len(after))
            self.reader = (after[:self.batch], len(after[self.batch:]))
        elif op == "process" and isinstance(self.reader, tuple):
            got, pending = self.reader
            for seq in got:
                if c.on_replay(seq):
                    self.deliver(seq)
            self.reader = "next" if c.after_batch(len(got), pending) else None

    def drain(self) -> None:
        self.do("hello", 0)
        if self.lost:
            self.do("reconnect", 0)
        while self.pipe or self.reader is not None:
            for op in ("live", "fetch", "process"):
                self.do(op, 0)


def ops_of(names: str) -> list[tuple[str, int]]:
    return [(name, 0) for name in names.split()]


@settings(max_examples=1000, deadline=None)
# The races the core exists for, always tried: a lost copy shown by the next
# one (gap), an entry stored after a read's last fetch and received before it
# ends (read once more), a cut whose last copy leaves no gap (reconnect).
@example(ops=ops_of("hello fetch process lose arrive"), hello_cursor=None, batch=1)
@example(ops=ops_of("arrive hello fetch arrive process"), hello_cursor=0, batch=2)
@example(ops=ops_of("hello fetch process arrive lose reconnect"), hello_cursor=None, batch=1)
@given(ops=st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 2)), max_size=80),
       hello_cursor=st.none() | st.integers(0, 30), batch=st.integers(1, 3))
def test_each_entry_reaches_the_socket_once_in_order(ops, hello_cursor, batch):
    """Whatever the interleaving of live entries (lost, duplicated), reads,
    reconnects and hello: every entry after the hello's starting cursor is
    sent exactly once, in cursor order, and at most one read runs at a time."""
    m = Model(hello_cursor, batch)
    for op, n in ops:
        m.do(op, n)
    m.drain()
    assert m.delivered == [s for s in m.inbox if s > m.start]
    assert not m.core.reading
