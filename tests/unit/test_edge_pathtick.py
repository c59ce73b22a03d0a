"""The path tick's chain check (edge/pathtick.py :class:`TickChain`), without I/O.

What it protects: an edge must re-read INBOX whenever ticks were lost on
the way to it (entries republished in the same moment were lost too, and the
last of them would wait for the user's next message), and must not re-read
for ticks that all arrived (every re-read is one INBOX read per socket).
Times are plain numbers; the interval is 0.5 s (silence after 1.5 s).
"""

from __future__ import annotations

import pytest

from edge.pathtick import RESUMED, SILENT_INTERVALS, TICK_LOST, TickChain

INTERVAL = 0.5


def chain() -> TickChain:
    return TickChain(interval=INTERVAL, now=0.0)


def test_an_unbroken_chain_never_breaks() -> None:
    """Ticks interleaved with users' entries (INBOX sequences in between):
    each tick's previous one is the last one seen."""
    c = chain()
    assert c.on_tick(10, 3, 0.5) is None  # the first after a (re)connect only starts the chain
    assert c.on_tick(14, 10, 1.0) is None
    assert c.on_tick(20, 14, 1.5) is None
    assert c.silent(1.9) is False


def test_a_lost_tick_breaks_the_chain_once() -> None:
    c = chain()
    c.on_tick(10, 3, 0.5)
    assert c.on_tick(30, 22, 1.5) == TICK_LOST  # 22 never arrived here
    assert c.on_tick(31, 30, 2.0) is None  # the new chain continues from 30


def test_several_writers_keep_one_chain() -> None:
    """Two sequencers tick on the same subject: the chain is the subject's,
    so their ticks interleave without a break."""
    c = chain()
    for seq, last, t in [(5, 0, 0.1), (6, 5, 0.3), (9, 6, 0.6), (11, 9, 0.8), (12, 11, 1.1)]:
        assert c.on_tick(seq, last, t) is None


def test_a_repeated_tick_is_ignored() -> None:
    c = chain()
    c.on_tick(10, 3, 0.5)
    assert c.on_tick(10, 3, 0.6) is None
    assert c.on_tick(12, 10, 1.0) is None


def test_silence_while_connected_is_reported_once_then_the_next_tick_resumes() -> None:
    """A cut that lasts: no tick for 3 intervals is a break (counted; the
    re-read waits: it would cross the same cut); when ticks come back the
    path is whole again, and the first one asks for the re-read even if its
    chain lines up (every sequencer was gone too, or the lost entries came
    after the last tick seen)."""
    c = chain()
    c.on_tick(10, 3, 1.0)
    limit = 1.0 + SILENT_INTERVALS * INTERVAL
    assert c.silent(limit - 0.01) is False
    assert c.silent(limit) is True
    assert c.silent(limit + 5) is False  # once per silence
    assert c.on_tick(11, 10, limit + 6) == RESUMED
    assert c.on_tick(12, 11, limit + 6.5) is None
    assert c.silent(limit + 6.5 + SILENT_INTERVALS * INTERVAL) is True


def test_silence_counts_from_the_start_without_any_tick() -> None:
    """An edge that starts while its path is already cut never sees a tick:
    the silence still shows, and the first tick after it asks for the re-read."""
    c = chain()
    assert c.silent(SILENT_INTERVALS * INTERVAL) is True
    assert c.on_tick(40, 39, 9.0) == RESUMED


def test_reset_after_a_reconnect_starts_a_new_chain() -> None:
    """The bus reconnected (the edge re-reads for that): the first tick
    after it skips the ticks missed while down without a second re-read,
    and the silence is counted from the reconnect."""
    c = chain()
    c.on_tick(10, 3, 0.5)
    c.reset(4.0)
    assert c.silent(4.0 + SILENT_INTERVALS * INTERVAL - 0.01) is False
    assert c.on_tick(50, 48, 4.2) is None
    assert c.on_tick(51, 50, 4.7) is None


@pytest.mark.parametrize("seqs", [[(1, 0), (2, 1), (3, 2)], [(7, 0), (8, 7)]])
def test_a_recreated_stream_starts_a_new_chain_without_a_reread(seqs) -> None:
    """INBOX recreated (sequences start again, below the last tick seen):
    no re-read (it would read the new stream after the sockets' cursors of
    the old one; edge.server closes those sockets, 4009, and they resync),
    and the new chain is followed from its first tick."""
    c = chain()
    c.on_tick(900, 899, 0.5)
    for s, last in seqs:
        assert c.on_tick(s, last, 1.0) is None
    s, last = seqs[-1]
    assert c.on_tick(s + 2, s + 1, 1.5) == TICK_LOST
