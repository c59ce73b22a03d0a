"""edge.sends without NATS: a fake Replies records requests and the test
answers them. In-flight bound, partition routing, answers, and the retry of
"no responders" (a partition handover) in order until send_timeout."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from edge.sends import DM_CACHE, MAX_INFLIGHT_SENDS, SendBudget, Sends
from switchboard import events, frames, ids, log
from switchboard.bus.conn import BusMsg, BusUnavailable
from switchboard.subjects import Subjects, partition_of

P = 64


class FakeReplies:
    def __init__(self) -> None:
        self.requests: list[tuple[str, bytes, object, float]] = []

    def request(self, subject, data, on_reply, *, headers=None, timeout):
        self.requests.append((subject, data, on_reply, timeout))

    def ids(self) -> list[str]:
        return [msgspec.json.decode(d)["id"] for _, d, _, _ in self.requests]


@pytest.fixture
async def rig():
    out: list[dict] = []
    replies = FakeReplies()
    s = Sends(user="alice", write=lambda b: out.append(msgspec.json.decode(b)) or True, replies=replies,
              subjects=Subjects("sb"), partitions=P, timeout=0.2,
              retry_delay=(0.001, 0.002))  # retries within the 0.2 s a send may live
    return s, replies, out


def ok(seq: int, conv: str = "c1") -> BusMsg:
    return BusMsg("_INBOX.x.1", "", events.encode(events.SendReply(conv=conv, seq=seq, ts=5)))


async def test_send_goes_to_the_partition_subject_and_answers_sent(rig):
    s, replies, out = rig
    s.send(frames.Send(id="m1", body="hi", conv="team-1"))
    s.send(frames.Send(id="m2", body="hi", to="bob"))
    dm = ids.dm_conv("alice", "bob")
    assert [r[0] for r in replies.requests] == [f"sb.send.{partition_of('team-1', P)}.team-1",
                                                f"sb.send.{partition_of(dm, P)}.{dm}"]
    req = msgspec.json.decode(replies.requests[0][1], type=events.SendRequest)
    assert (req.sender, req.id, req.conv, req.body) == ("alice", "m1", "team-1", "hi")
    assert s.inflight == 2
    replies.requests[0][2](ok(7, "team-1"), None)
    assert out == [{"type": "sent", "id": "m1", "conv": "team-1", "seq": 7, "ts": 5}]
    assert s.inflight == 1


async def test_dm_conversation_ids_stay_right_past_the_cache(rig):
    """Sends keeps peer -> 1:1 conversation ids (DM_CACHE per socket) and
    starts over when full: every send, first, repeated or after the
    cache was cleared, goes to the pair's own conversation."""
    s, replies, _ = rig
    peers = [f"p{i}" for i in range(DM_CACHE + 5)] + ["p0", "p1", f"p{DM_CACHE + 4}"]
    for i, p in enumerate(peers):
        s.send(frames.Send(id=f"m{i}", body="x", to=p))
    want = [ids.dm_conv("alice", p) for p in peers]
    assert [msgspec.json.decode(d)["conv"] for _, d, _, _ in replies.requests] == want
    assert [r[0] for r in replies.requests] == [f"sb.send.{partition_of(c, P)}.{c}" for c in want]


async def test_sequencer_error_is_passed_on(rig):
    s, replies, out = rig
    s.send(frames.Send(id="m1", body="x", conv="g"))
    err = events.SendReply(error=events.ErrorBody(code="not_member", message="no", retry=False))
    replies.requests[0][2](BusMsg("r", "", events.encode(err)), None)
    assert out == [{"type": "error", "ref": "m1", "code": "not_member", "message": "no", "retry": False}]


async def test_at_the_inflight_bound_reading_pauses_until_half_are_answered(rig):
    """A client that sends faster than the sequencer answers is slowed by TCP
    backpressure (its socket is not read), never refused."""
    _, replies, out = rig
    calls: list[str] = []
    s = Sends(user="alice", write=lambda b: out.append(msgspec.json.decode(b)) or True, replies=replies,
              subjects=Subjects("sb"), partitions=P, timeout=0.2,
              pause=lambda: calls.append("pause"), resume=lambda: calls.append("resume"))
    for i in range(MAX_INFLIGHT_SENDS + 3):  # frames read before the pause took effect still go out
        s.send(frames.Send(id=f"m{i}", body="x", conv="c1"))
    assert len(replies.requests) == MAX_INFLIGHT_SENDS + 3 and out == []
    assert calls == ["pause"]
    answered = MAX_INFLIGHT_SENDS + 3 - MAX_INFLIGHT_SENDS // 2  # down to half in flight
    for n, r in enumerate(replies.requests[: answered - 1]):
        r[2](ok(n + 1), None)
    assert calls == ["pause"]
    replies.requests[answered - 1][2](ok(answered), None)
    assert calls == ["pause", "resume"]  # resumed once, at half
    assert len(out) == answered and all(f["type"] == "sent" for f in out)


async def test_no_responders_retried_in_order_then_sent(rig):
    s, replies, out = rig
    for i in range(3):
        s.send(frames.Send(id=f"m{i}", body="x", conv="c1"))
    for _, _, cb, _ in list(replies.requests):
        cb(None, BusUnavailable("no responders"))
    s.send(frames.Send(id="m3", body="x", conv="c1"))  # same partition: waits behind the retries
    s.send(frames.Send(id="other", body="x", conv="elsewhere-7"))  # another partition: not held
    assert partition_of("elsewhere-7", P) != partition_of("c1", P)
    assert replies.ids() == ["m0", "m1", "m2", "other"]
    await asyncio.sleep(0.02)
    assert replies.ids()[4:] == ["m0", "m1", "m2", "m3"]
    assert all(0 < t <= 0.2 for _, _, _, t in replies.requests[4:])  # what is left of send_timeout
    assert out == [] and s.inflight == 5


async def test_no_responders_until_send_timeout_is_unavailable(rig):
    s, replies, out = rig
    s.send(frames.Send(id="m1", body="x", conv="c1"))
    answered = 0
    for _ in range(400):
        if len(replies.requests) > answered:  # answer each (re)sent request once
            answered = len(replies.requests)
            replies.requests[-1][2](None, BusUnavailable("no responders"))
        if out:
            break
        await asyncio.sleep(0.005)
    assert len(replies.requests) > 1  # it was retried...
    [err] = out  # ...then given up with retry: true
    assert (err["ref"], err["code"], err["retry"]) == ("m1", "unavailable", True)
    assert s.inflight == 0


async def test_closed_socket_forgets_retries(rig):
    s, replies, out = rig
    s.send(frames.Send(id="m1", body="x", conv="c1"))
    replies.requests[0][2](None, BusUnavailable("no responders"))
    s.close()
    await asyncio.sleep(0.02)
    assert replies.ids() == ["m1"] and out == []


# ---------------------------------------------------------------- the session's hot path


class FakeConn:
    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.paused: set[str] = set()

    def send(self, data: bytes) -> bool:
        self.out.append(data)
        return True

    def pause_reading(self, reason: str) -> None:
        self.paused.add(reason)

    def resume_reading(self, reason: str) -> None:
        self.paused.discard(reason)


async def test_session_send_ack_read_make_no_task():
    from types import SimpleNamespace

    from edge.metrics import EdgeMetrics
    from edge.session import LIVE, Session
    from switchboard.config import Settings

    replies, acks, reads = FakeReplies(), [], []
    settings = Settings(jwt_secret="s" * 32)
    edge = SimpleNamespace(settings=settings, edge_id="e1", metrics=EdgeMetrics(), replies=replies,
                           subjects=settings.subjects, sync_handlers={frames.Read: lambda s, f: reads.append(f)},
                           on_ack=lambda s, c: acks.append(c), tracer=None, send_budget=SendBudget(1024),
                           session_log=log.get("edge.session"))
    conn = FakeConn()
    sess = Session(edge=edge, conn=conn, user="alice")  # type: ignore[arg-type]
    sess.state, sess.cursor = LIVE, 100  # past hello: its timeout, when it fires, finds the session live
    before = len(asyncio.all_tasks())
    for i in range(50):
        sess.on_frame(frames.encode(frames.Send(id=f"m{i}", body="x", conv="c1")))
        sess.on_frame(b'{"type":"ack","cursor":%d}' % i)
        sess.on_frame(b'{"type":"read","conv":"c1","seq":%d}' % i)
    assert len(asyncio.all_tasks()) == before
    assert replies.ids() == [f"m{i}" for i in range(50)]
    assert acks == list(range(1, 50)) and len(reads) == 50 and conn.out == []
    replies.requests[0][2](ok(1), None)
    assert msgspec.json.decode(conn.out[0])["type"] == "sent"


def _socket(replies: FakeReplies, budget: SendBudget, calls: list[str], name: str) -> Sends:
    return Sends(user=name, write=lambda b: True, replies=replies, subjects=Subjects("sb"), partitions=P,
                 timeout=5.0, budget=budget,
                 pause=lambda: calls.append(f"pause {name}"), resume=lambda: calls.append(f"resume {name}"))


async def test_the_edge_wide_bound_pauses_every_sending_socket_until_half_are_answered():
    """Protects the fabric past its capacity: without an edge-wide bound each
    socket kept 64 sends queued at the sequencer, they outlived send_timeout,
    and clients' resends (a duplicate's read-back and fan-out each) took the
    delivered rate down to a fraction of capacity."""
    replies, calls, budget = FakeReplies(), [], SendBudget(8)
    a, b = _socket(replies, budget, calls, "a"), _socket(replies, budget, calls, "b")
    for i in range(4):
        a.send(frames.Send(id=f"a{i}", body="x", conv="c1"))
        b.send(frames.Send(id=f"b{i}", body="x", conv="c2"))
    assert budget.inflight == 8 and budget.over
    assert calls == ["pause b"]  # the send that reached the bound
    a.send(frames.Send(id="a4", body="x", conv="c1"))  # read before its pause: still sent, and pauses it
    assert calls == ["pause b", "pause a"] and len(replies.requests) == 9
    for _, _, cb, _ in replies.requests[:4]:  # 9 -> 5 in flight: not yet half
        cb(ok(1), None)
    assert calls == ["pause b", "pause a"]
    replies.requests[4][2](ok(2), None)  # 4 = half of 8: both read again
    assert sorted(calls[2:]) == ["resume a", "resume b"] and not budget.over


async def test_a_closed_socket_gives_back_its_share_of_the_edge_wide_bound():
    """Sends waiting for a retry when their socket closes are never sent
    again: they must not hold the edge's bound forever (a leak would end with
    every socket of the edge paused)."""
    replies, calls, budget = FakeReplies(), [], SendBudget(100)
    a = _socket(replies, budget, calls, "a")
    a.send(frames.Send(id="a0", body="x", conv="c1"))
    a.send(frames.Send(id="a1", body="x", conv="c1"))
    replies.requests[0][2](None, BusUnavailable("no responders"))  # waits for a retry
    assert budget.inflight == 2
    a.close()
    assert budget.inflight == 1  # the waiting one given back
    replies.requests[1][2](ok(1), None)  # the other's answer still comes
    assert budget.inflight == 0


async def test_a_socket_paused_by_its_own_bound_is_resumed_by_the_edge_wide_one():
    """A socket paused at its own bound whose answers all come while the edge
    is over its bound cannot resume then; the edge's bound must resume it
    when it clears, or the socket is never read again (its later sends were
    left unanswered in bench delivery at 9,000 msgs/s)."""
    replies, calls, budget = FakeReplies(), [], SendBudget(100)
    a, b = _socket(replies, budget, calls, "a"), _socket(replies, budget, calls, "b")
    for i in range(MAX_INFLIGHT_SENDS):  # 64: a's own bound
        a.send(frames.Send(id=f"a{i}", body="x", conv="c1"))
    assert calls == ["pause a"] and not budget.over
    for i in range(60):  # the edge's bound is reached at b's 36th
        b.send(frames.Send(id=f"b{i}", body="x", conv="c2"))
    assert budget.over and calls == ["pause a", "pause b"]
    for _, _, cb, _ in replies.requests[:MAX_INFLIGHT_SENDS]:  # all of a's: 124 -> 60 in flight, still over
        cb(ok(1), None)
    assert calls == ["pause a", "pause b"]
    for _, _, cb, _ in replies.requests[MAX_INFLIGHT_SENDS:MAX_INFLIGHT_SENDS + 10]:  # 50: clear
        cb(ok(1), None)
    assert calls[2:] == ["resume a"]  # b still has 50 in flight: past its own resume point (32)
    for _, _, cb, _ in replies.requests[MAX_INFLIGHT_SENDS + 10:MAX_INFLIGHT_SENDS + 28]:
        cb(ok(1), None)
    assert calls[2:] == ["resume a", "resume b"]


async def test_frames_read_after_the_pause_wait_in_the_session_in_order():
    """The bounds are hard: frames that came in the same socket read as the
    one that reached the bound are held (not sent on), and handled in order,
    acks included, when the socket resumes. Soft by a whole read, the
    edge-wide bound let hundreds of frames per socket through at once."""
    from types import SimpleNamespace

    from edge.metrics import EdgeMetrics
    from edge.session import LIVE, Session
    from switchboard.config import Settings

    replies, acks = FakeReplies(), []
    settings = Settings(jwt_secret="s" * 32)
    edge = SimpleNamespace(settings=settings, edge_id="e1", metrics=EdgeMetrics(), replies=replies,
                           subjects=settings.subjects, sync_handlers={}, on_ack=lambda s, c: acks.append(c),
                           tracer=None, send_budget=SendBudget(4), session_log=log.get("edge.session"))
    conn = FakeConn()
    sess = Session(edge=edge, conn=conn, user="alice")  # type: ignore[arg-type]
    sess.state, sess.cursor = LIVE, 100
    for i in range(6):  # one socket read: the 4th send reaches the edge's bound
        sess.on_frame(frames.encode(frames.Send(id=f"m{i}", body="x", conv="c1")))
    sess.on_frame(b'{"type":"ack","cursor":7}')
    assert replies.ids() == ["m0", "m1", "m2", "m3"] and conn.paused == {"sends"} and acks == []
    replies.requests[0][2](ok(1), None)  # 3 in flight: not yet half
    assert replies.ids() == ["m0", "m1", "m2", "m3"]
    replies.requests[1][2](ok(2), None)  # 2: resumed; m4 takes it to 3, m5 to 4: paused again
    assert replies.ids() == ["m0", "m1", "m2", "m3", "m4", "m5"] and conn.paused == {"sends"} and acks == []
    for r in replies.requests[2:4]:
        r[2](ok(3), None)
    assert acks == [7] and conn.paused == set()  # the held ack, after the sends before it
    sess.sends.close()
