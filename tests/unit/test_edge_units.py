"""Edge building blocks without sockets: TokenBucket, with_cursor, dm ids (the
socket layer: test_edge_transport.py)."""

from __future__ import annotations

import msgspec
import pytest

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
