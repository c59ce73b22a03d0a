"""sequencer/ordering.py: one conversation's ordering and fence step, without I/O.

The tables pin each transition; the property runs two processes that both
believe they own a conversation (a partition handover) against a model of
JetStream's MESSAGES stream (message-id dedup, the Expected-Last-Subject-
Sequence fence), in any interleaving of sends, acks, lost acks, loads and
reacquires, and checks what the pipeline promises: seqs contiguous in the
stream (a fence conflict never forks the conversation), one write in flight
per process, each process's sends stored in the order they arrived, and
every send answered once.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings, strategies as st

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


def test_one_load_at_a_time():
    """Sends arriving before the load task first runs (several in one socket
    read) wait for that load instead of each starting one."""
    o = order("a", last=None)
    assert o.next() is LOAD
    o.push("b")
    assert o.next() is None
    o.loaded(5, 50)
    o.load_done()
    assert o.next() == "a"


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
    assert o.needs_last()
    o.loaded(9, 90)
    assert not o.needs_last()  # loaded: a second read only after another reacquire
    o.load_done()
    assert o.next() == "a" and o.begin_write() == 10 and o.last_stream_seq == 90


def test_load_failure_refuses_every_waiting_send():
    o = order("a", "b", "c", last=None)
    assert o.next() is LOAD
    assert o.drop_head() == "a"  # e.g. its sender is not a member
    assert o.load_failed() == ["b", "c"]
    o.load_done()
    assert not o.queue and o.last_seq is None and o.idle


@pytest.mark.parametrize("o, known, stored, idle", [
    (order(), 5, 5, True),
    # Its ack will say what is last; 5 is still the last stored, which is
    # what a receipt is checked against (under load a write is always in
    # flight: known() alone sent every receipt to the stream for a read).
    (order(busy=True), None, 5, False),
    (order(reload=True), None, None, True),
    (order(last=None), None, None, True),
    (order("a"), 5, 5, False),
    (order(loading=True), 5, 5, False),
])
def test_known_and_idle(o, known, stored, idle):
    assert (o.known(), o.last_stored(), o.idle) == (known, stored, idle)


# -- property -------------------------------------------------------------------------


class Stream:
    """MESSAGES for one conversation's subject, as JetStream judges a write."""

    def __init__(self) -> None:
        self.seqs: list[int] = []  # conversation seqs in the order stored
        self.ids: set[str] = set()  # Nats-Msg-Id dedup
        self.stream_seq = 0  # the stream's last sequence (other subjects too)
        self.last_of_subject = 0  # what the fence is compared with

    def write(self, msg_id: str, seq: int, fence: int, others: int) -> str | int:
        if msg_id in self.ids:
            return "duplicate"
        if fence != self.last_of_subject:
            return "conflict"
        self.stream_seq += 1 + others
        self.last_of_subject = self.stream_seq
        self.seqs.append(seq)
        self.ids.add(msg_id)
        return self.stream_seq


class Process:
    """One sequencer as pipeline.py drives its ConvOrder (I/O resolved by the test)."""

    def __init__(self, stream: Stream) -> None:
        self.o: ConvOrder[str] = ConvOrder()
        self.stream = stream
        self.write: tuple[str, int, int] | None = None  # (id, seq, fence) awaiting its ack
        self.load = False  # a load task is under way
        self.arrived: list[str] = []
        self.stored: list[str] = []
        self.answers = 0

    def pump(self) -> None:
        while (s := self.o.next()) is not None:
            if s is LOAD:
                assert not self.load, "two loads at once"
                self.load = True
                return
            assert self.write is None, "two writes in flight"
            seq = self.o.begin_write()
            self.write = (s, seq, self.o.last_stream_seq)

    def do(self, op: str, n: int) -> None:
        o = self.o
        if op == "send":
            msg_id = f"m{n}"  # the same id again: a client's retry, maybe to the other process
            self.arrived.append(msg_id)
            o.push(msg_id)
        elif op == "ack" and self.write:
            (msg_id, seq, fence), self.write = self.write, None
            result = self.stream.write(msg_id, seq, fence, others=n)
            if result == "duplicate":
                o.duplicate()
                self.answers += 1
            elif result == "conflict":
                o.conflict(msg_id)  # retried first, after a reload
            else:
                o.stored(seq, result)
                self.stored.append(msg_id)
                self.answers += 1
        elif op == "ack_lost" and self.write:  # stored or not, nobody knows: the client retries
            (msg_id, seq, fence), self.write = self.write, None
            if n % 2 and self.stream.write(msg_id, seq, fence, others=0) not in ("duplicate", "conflict"):
                self.stored.append(msg_id)
            o.failed()
            self.answers += 1
        elif op == "load" and self.load:
            if o.needs_last():
                o.loaded(len(self.stream.seqs), self.stream.last_of_subject)
            o.load_done()
            self.load = False
        elif op == "load_fails" and self.load:
            self.answers += len(o.load_failed())
            o.load_done()
            self.load = False
            return  # pipeline.py does not pump after a failed load (nothing waits)
        elif op == "reacquire":
            o.reacquired()
            return
        self.pump()

    def settle(self) -> None:
        """Acks and loads come, nobody else writes: a conflict converges."""
        for _ in range(100):
            if not (self.write or self.load):
                return
            self.do("ack" if self.write else "load", 0)
        raise AssertionError("does not converge")


OPS = ["send", "send", "ack", "ack", "ack_lost", "load", "load_fails", "reacquire"]


@settings(max_examples=1000, deadline=None)
# A handover: both write from the same stale state; one is fenced off, reloads and goes on.
@example(ops=[("send", 0, 1), ("send", 1, 2), ("load", 0, 0), ("load", 1, 0), ("ack", 0, 0), ("ack", 1, 0)])
@given(ops=st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 1), st.integers(0, 5)), max_size=60))
def test_two_writers_never_fork_a_conversation(ops):
    """Whatever two processes do to one conversation (sends, acks, lost
    acks, loads, failed loads, reacquires, retried ids): the stream holds
    seqs 1..n in order (none twice: no fork), each process has one write
    and one load in flight at most (asserted as it goes), stores its new
    sends in arrival order, and answers every send once."""
    stream = Stream()
    procs = [Process(stream), Process(stream)]
    for op, who, n in ops:
        procs[who].do(op, n)
    for p in procs:
        p.settle()
    assert stream.seqs == list(range(1, len(stream.seqs) + 1))
    for p in procs:
        assert p.answers == len(p.arrived)
        order = iter(p.arrived)
        assert all(msg_id in order for msg_id in p.stored), "stored out of arrival order"

