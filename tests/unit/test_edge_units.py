"""Edge building blocks without sockets: TokenBucket, Outbox, with_cursor, dm ids."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from websockets.exceptions import ConnectionClosedOK
from websockets.frames import Close

from edge.outbox import Outbox
from edge.ratelimit import TokenBucket
from switchboard import frames, ids
from switchboard.errors import InvalidId


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


# ---------------------------------------------------------------- TokenBucket


def test_bucket_burst_then_refuses():
    clock = Clock()
    b = TokenBucket(rate=2.0, burst=5, clock=clock)
    assert [b.take() for _ in range(6)] == [True] * 5 + [False]


@pytest.mark.parametrize("elapsed,expected", [(0.4, 0), (0.5, 1), (1.0, 2), (100.0, 5)])
def test_bucket_refills_at_rate_capped_by_burst(elapsed, expected):
    clock = Clock()
    b = TokenBucket(rate=2.0, burst=5, clock=clock)
    for _ in range(5):
        assert b.take()
    clock.t += elapsed
    got = 0
    while b.take():
        got += 1
    assert got == expected


def test_bucket_refused_take_costs_nothing():
    clock = Clock()
    b = TokenBucket(rate=1.0, burst=1, clock=clock)
    assert b.take()
    assert not b.take() and not b.take()
    clock.t += 1.0
    assert b.take()  # the refusals did not push the debt further


def test_bucket_take_n():
    b = TokenBucket(rate=1.0, burst=3, clock=Clock())
    assert not b.take(4)
    assert b.take(3)


# ---------------------------------------------------------------- Outbox


class FakeSocket:
    """Stands in for ws.send: records frames; can block or be closed."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.closed = False

    async def send(self, data, text=False):
        await self.gate.wait()
        if self.closed:
            raise ConnectionClosedOK(Close(1000, ""), None)
        self.sent.append(data)


async def test_outbox_sends_in_order():
    s = FakeSocket()
    o = Outbox(send=s.send, limit=10, on_overflow=lambda: None)
    for i in range(5):
        assert o.put(b"%d" % i)
    await o.flush(1.0)
    assert s.sent == [b"0", b"1", b"2", b"3", b"4"] and o.sent == 5 and len(o) == 0


async def test_outbox_overflow_closes_and_calls_back_once():
    s = FakeSocket()
    s.gate.clear()  # the peer does not read
    overflows = []
    o = Outbox(send=s.send, limit=3, on_overflow=lambda: overflows.append(1))
    results = [o.put(b"x") for _ in range(6)]
    # the writer has not run yet: 3 queued, the 4th overflows, later puts are refused
    await asyncio.sleep(0)
    assert overflows == [1]
    assert results[-1] is False and o.closed and len(o) == 0
    assert o.put(b"late") is False
    o.close()


async def test_outbox_overflow_counts_queued_frames_only():
    s = FakeSocket()
    s.gate.clear()
    overflows = []
    o = Outbox(send=s.send, limit=3, on_overflow=lambda: overflows.append(1))
    o.put(b"a")
    await asyncio.sleep(0)  # the writer takes "a" and blocks in send
    assert [o.put(b"b"), o.put(b"c"), o.put(b"d")] == [True, True, True]
    assert overflows == []
    assert o.put(b"e") is False and overflows == [1]
    o.close()


async def test_outbox_connection_closed_stops_quietly():
    s = FakeSocket()
    s.closed = True
    o = Outbox(send=s.send, limit=10, on_overflow=lambda: None)
    o.put(b"a")
    o.put(b"b")
    await o.flush(1.0)
    assert o.closed and s.sent == [] and o.put(b"c") is False


async def test_outbox_writer_restarts_after_drain():
    s = FakeSocket()
    o = Outbox(send=s.send, limit=10, on_overflow=lambda: None)
    o.put(b"a")
    await o.flush(1.0)
    o.put(b"b")
    await o.flush(1.0)
    assert s.sent == [b"a", b"b"]


# ---------------------------------------------------------------- with_cursor


@pytest.mark.parametrize("body", ["", "hi", 'quote " and brace } and unicode é', "x" * 5000])
@pytest.mark.parametrize("cursor", [0, 1, 2**53])
def test_with_cursor_is_the_msg_with_that_cursor(body, cursor):
    stored = frames.encode(frames.Msg(conv="c", seq=7, id="m", from_="alice", body=body, ts=123))
    assert b"cursor" not in stored  # stored without a cursor
    out = frames.with_cursor(stored, cursor)
    m = frames.decode_server_frame(out)
    assert isinstance(m, frames.Msg)
    assert (m.conv, m.seq, m.id, m.from_, m.body, m.ts, m.cursor) == ("c", 7, "m", "alice", body, 123, cursor)
    assert msgspec.json.decode(out)["type"] == "msg"


# ---------------------------------------------------------------- dm ids


def test_dm_conv_symmetric_valid_and_distinct():
    a = ids.dm_conv("alice", "bob")
    assert a == ids.dm_conv("bob", "alice")
    assert ids.is_valid(a) and ids.is_dm(a)
    assert a != ids.dm_conv("alice", "carol")
    assert ids.dm_conv("alice", "alice") != a


def test_dm_conv_no_ambiguity_on_concatenation():
    # "ab"+"c" vs "a"+"bc": the pair is joined with a separator that ids cannot contain
    assert ids.dm_conv("ab", "c") != ids.dm_conv("a", "bc")


def test_dm_conv_of_longest_ids_fits():
    a, b = "a" * 64, "b" * 64
    assert ids.is_valid(ids.dm_conv(a, b))


@pytest.mark.parametrize("bad", ["a.b", "*", ">", "a b", "", "x" * 65, "a\n"])
def test_dm_conv_rejects_bad_user_ids(bad):
    with pytest.raises(InvalidId):
        ids.dm_conv("alice", bad)
    with pytest.raises(InvalidId):
        ids.dm_conv(bad, "alice")
