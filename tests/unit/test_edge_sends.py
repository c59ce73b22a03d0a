"""edge.sends without NATS: a fake Replies records requests and the test
answers them. In-flight bound, partition routing, answers, and the retry of
"no responders" (a partition handover) in order until send_timeout."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from edge.sends import MAX_INFLIGHT_SENDS, Sends
from switchboard import events, frames, ids
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

    def send(self, data: bytes) -> bool:
        self.out.append(data)
        return True


async def test_session_send_ack_read_make_no_task():
    from types import SimpleNamespace

    from edge.metrics import EdgeMetrics
    from edge.session import LIVE, Session
    from switchboard.config import Settings

    replies, acks, reads = FakeReplies(), [], []
    settings = Settings(jwt_secret="s" * 32)
    edge = SimpleNamespace(settings=settings, edge_id="e1", metrics=EdgeMetrics(), replies=replies,
                           subjects=settings.subjects, sync_handlers={frames.Read: lambda s, f: reads.append(f)},
                           on_ack=lambda s, c: acks.append(c), tracer=None)
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
