"""sequencer/ordering.py: one conversation's ordering and fence step, without I/O.

The tables pin each transition.
"""

from __future__ import annotations

import pytest

from sequencer.ordering import LOAD, ConvOrder


def order(*queue: str, last: int | None = 5, fence: int = 50, busy=False, loading=False,
          reload=False) -> ConvOrder[str]:
    o: ConvOrder[str] = ConvOrder()
    for s in queue:
        o.push(s)
    o.last_seq, o.last_stream_seq, o.busy, o.loading, o.reload = last, fence, busy, loading, reload
    return o


@pytest.mark.parametrize("o, step", [
    (order(), None),  # nothing waits
    (order("a", busy=True), None),  # one write in flight per conversation
    (order("a", loading=True), None),
    (order("a", last=None), LOAD),  # never written here, or reload after a conflict
    (order("a", reload=True), LOAD),  # partition taken (again): another may have written
    (order("a", "b"), "a"),  # first come, first written
])
def test_next(o, step):
    assert o.next() == step


def test_write_takes_the_next_seq_and_holds_the_rest():
    o = order("a", "b")
    assert o.next() == "a"
    assert o.begin_write() == 6 and o.last_stream_seq == 50  # seq and fence of this write
    assert o.next() is None and o.known() is None


@pytest.mark.parametrize("outcome, last, fence, queue", [
    (lambda o: o.stored(6, 61), 6, 61, ["b"]),  # the next write is fenced on this one
    (lambda o: o.duplicate(), 5, 50, ["b"]),  # a retried send stored before: nothing new
    (lambda o: o.conflict("a"), None, 50, ["a", "b"]),  # someone else wrote: reload, "a" first
    (lambda o: o.failed(), None, 50, ["b"]),  # unknown outcome: reload before the next write
    (lambda o: o.aborted(), 5, 50, ["b"]),  # never left
])
def test_write_outcome(outcome, last, fence, queue):
    o = order("a", "b")
    o.next()
    o.begin_write()
    outcome(o)
    assert (o.last_seq, o.last_stream_seq, o.busy, list(o.queue)) == (last, fence, False, queue)


def test_reacquire_rereads_the_last_seq_once():
    o = order("a")
    o.reacquired()
    assert o.next() is LOAD and o.known() is None
    o.load_started()
    assert o.needs_last()
    o.loaded(9, 90)
    assert not o.needs_last()  # loaded: a second read only after another reacquire
    o.load_done()
    assert o.next() == "a" and o.begin_write() == 10 and o.last_stream_seq == 90


def test_load_failure_refuses_every_waiting_send():
    o = order("a", "b", "c", last=None)
    o.load_started()
    assert o.drop_head() == "a"  # e.g. its sender is not a member
    assert o.load_failed() == ["b", "c"]
    o.load_done()
    assert not o.queue and o.last_seq is None and o.idle


@pytest.mark.parametrize("o, known, idle", [
    (order(), 5, True),
    (order(busy=True), None, False),  # its ack will say
    (order(reload=True), None, True),
    (order(last=None), None, True),
    (order("a"), 5, False),
    (order(loading=True), 5, False),
])
def test_known_and_idle(o, known, idle):
    assert (o.known(), o.idle) == (known, idle)
