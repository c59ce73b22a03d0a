"""The trace core (switchboard/trace.py) without servers: the sampler's
countdown, the record format other tools read, the subject, and that a
record that cannot be published never raises into the message's path."""

from __future__ import annotations

import time

import msgspec
import pytest

from switchboard import events, frames
from switchboard.config import Settings
from switchboard.errors import BadFrame, ConfigError, InvalidId
from switchboard.trace import (
    STAGES,
    TRACE_HEADER,
    TRACE_HEADERS,
    Sampler,
    Tracer,
    TraceRecord,
    decode_record,
    encode_record,
    trace_subject,
)

# (rate, messages, traced): a countdown traces exactly 1 in round(1/rate).
SAMPLES = [
    (0.0, 10_000, 0),
    (0.001, 10_000, 10),
    (0.01, 1_000, 10),
    (0.25, 100, 25),
    (0.3, 99, 33),  # 1 in round(3.33) = 3
    (1.0, 50, 50),
]


@pytest.mark.parametrize("rate,n,traced", SAMPLES)
def test_sampler_traces_one_in_round_inverse_rate(rate: float, n: int, traced: int) -> None:
    s = Sampler(rate)
    assert sum(s.hit() for _ in range(n)) == traced


def test_sampler_hits_are_evenly_spaced() -> None:
    """A countdown, not a random draw: exactly ``every`` messages between hits."""
    s = Sampler(0.01)
    hits = [i for i in range(1000) if s.hit()]
    assert [b - a for a, b in zip(hits, hits[1:])] == [100] * (len(hits) - 1)


@pytest.mark.parametrize("rate", [-0.1, 1.5])
def test_sampler_refuses_rates_outside_0_1(rate: float) -> None:
    with pytest.raises(ValueError):
        Sampler(rate)


@pytest.mark.parametrize("field,value", [("trace_sample", -0.001), ("trace_sample", 2.0),
                                         ("trace_max_age_sec", 0.0)])
def test_settings_refuse_bad_trace_settings(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=field):
        Settings(**{field: value})


def test_trace_defaults() -> None:
    s = Settings()
    assert (s.trace_sample, s.trace_max_age_sec, s.instance) == (0.001, 3600.0, "")


def test_record_json_has_the_contract_fields_and_omits_the_unset() -> None:
    """The format engineer G's reader and `switchboard trace --json` rely on."""
    rec = TraceRecord(stage="sequencer.stored", at=1700000000123, role="sequencer", instance="seq-1",
                      conv="dm-x", id="m1", sender="alice", seq=4, stream_seq=99)
    assert msgspec.json.decode(encode_record(rec)) == {
        "stage": "sequencer.stored", "at": 1700000000123, "role": "sequencer", "instance": "seq-1",
        "conv": "dm-x", "id": "m1", "sender": "alice", "seq": 4, "stream_seq": 99}
    assert decode_record(encode_record(rec)) == rec


def test_subject_checks_every_id() -> None:
    assert trace_subject("sb", "dm-1", "alice", "m-1") == "sb.trace.dm-1.alice.m-1"
    for bad in (("dm.1", "alice", "m"), ("c", "al*ce", "m"), ("c", "alice", "m>")):
        with pytest.raises(InvalidId):
            trace_subject("sb", *bad)


def test_tracer_stamps_and_publishes_on_the_records_subject() -> None:
    sent: list[tuple[str, bytes]] = []
    t = Tracer(publish=lambda subj, data: sent.append((subj, data)), prefix="tx", role="edge", instance="edge-a")
    seen: list[TraceRecord] = []
    t.exporters.append(seen.append)
    before = time.time_ns() // 1_000_000
    t.record("edge.received", conv="c1", id="m1", sender="alice", device="edge-a-7")
    [(subject, data)] = sent
    rec = decode_record(data)
    assert subject == "tx.trace.c1.alice.m1"
    assert (rec.stage, rec.role, rec.instance, rec.device) == ("edge.received", "edge", "edge-a", "edge-a-7")
    assert before <= rec.at <= time.time_ns() // 1_000_000
    assert seen == [rec] and t.published == 1


def test_a_failing_publish_drops_the_record_and_never_raises() -> None:
    def broken(subject: str, data: bytes) -> None:
        raise ConnectionError("bus closed")

    t = Tracer(publish=broken, prefix="sb", role="sequencer", instance="s")
    t.record("sequencer.stored", conv="c", id="m", sender="u")
    assert (t.published, t.dropped) == (0, 1)


async def test_arecord_awaits_a_coroutine_publish_and_record_refuses_one() -> None:
    """The pusher publishes with nats-py (a coroutine): ``arecord`` awaits it;
    ``record`` given one drops the record instead of leaving it unawaited."""
    got: list[str] = []

    async def publish(subject: str, data: bytes) -> None:
        got.append(subject)

    t = Tracer(publish=publish, prefix="sb", role="pusher", instance="p")
    await t.arecord("push.sent", conv="c", id="m", sender="u", user="bob", provider="apns")
    assert got == ["sb.trace.c.u.m"] and t.published == 1
    t.record("push.sent", conv="c", id="m", sender="u")
    assert t.dropped == 1 and got == ["sb.trace.c.u.m"]


def test_the_trace_flag_is_optional_on_the_wire() -> None:
    """Protocol v1 stays compatible: absent = false, and an untraced send
    encodes exactly as before (omit_defaults)."""
    f = frames.decode_client_frame(b'{"type":"send","id":"m1","to":"bob","body":"hi"}')
    assert f.trace is False
    assert b"trace" not in frames.encode(f)
    assert frames.decode_client_frame(b'{"type":"send","id":"m1","to":"bob","body":"hi","trace":true}').trace
    with pytest.raises(BadFrame):
        frames.decode_client_frame(b'{"type":"send","id":"m1","to":"bob","body":"hi","trace":"yes"}')
    req = events.SendRequest(sender="svc", id="m", conv="c", body="b")
    assert b"trace" not in events.encode(req)


def test_header_constants() -> None:
    assert TRACE_HEADER == "Sb-Trace"
    assert TRACE_HEADERS == b"NATS/1.0\r\nSb-Trace: 1\r\n\r\n"
    assert STAGES[0] == "edge.received" and STAGES[-1] == "error"


# ---------------------------------------------------------------- the edge's decision, without servers


class _Replies:
    def __init__(self) -> None:
        self.headers: list[bytes | None] = []

    def request(self, subject, data, on_reply, *, headers=None, timeout):
        self.headers.append(headers)


# (sample rate, the frames' trace flags, which sends go out marked)
DECISIONS = [
    (0.0, [False, False, False], [False, False, False]),
    (0.0, [False, True, False], [False, True, False]),
    (1.0, [False, False, False], [True, True, True]),
    (0.5, [False, False, False, False], None),  # every second one: which depends on the random start
]


@pytest.mark.parametrize("rate,flags,marked", DECISIONS)
async def test_edge_marks_traced_sends_and_only_those(rate, flags, marked) -> None:
    """A traced send request carries Sb-Trace and Nats-Trace-Dest (the
    nats-server's own trace events go to <record subject>.nats) and one
    edge.received record; an untraced one carries no header at all."""
    from edge.sends import Sends
    from switchboard.subjects import Subjects

    records: list[tuple[str, bytes]] = []
    tracer = Tracer(publish=lambda s, d: records.append((s, d)), prefix="sb", role="edge", instance="e1",
                    sample=rate)
    replies = _Replies()
    sends = Sends(user="alice", write=lambda b: True, replies=replies, subjects=Subjects("sb"), partitions=8,
                  timeout=1.0, tracer=tracer, device="e1-7")
    for i, flag in enumerate(flags):
        sends.send(frames.Send(id=f"m{i}", body="x", conv="c1", trace=flag))
    got = [h is not None for h in replies.headers]
    if marked is None:
        assert sum(got) == 2 and got[0] != got[1]
    else:
        assert got == marked
    for i, h in enumerate(replies.headers):
        if h is not None:
            assert h == (b"NATS/1.0\r\nSb-Trace: 1\r\nNats-Trace-Dest: sb.trace.c1.alice.m%d.nats\r\n\r\n" % i)
    assert [(s, decode_record(d).stage, decode_record(d).device) for s, d in records] == \
        [(f"sb.trace.c1.alice.m{i}", "edge.received", "e1-7") for i, h in enumerate(replies.headers) if h]


async def test_edge_records_the_refusal_of_a_traced_send() -> None:
    from edge.sends import Sends
    from switchboard.subjects import Subjects

    records: list[TraceRecord] = []
    tracer = Tracer(publish=lambda s, d: records.append(decode_record(d)), prefix="sb", role="edge", instance="e1")
    sends = Sends(user="alice", write=lambda b: True, replies=_Replies(), subjects=Subjects("sb"), partitions=8,
                  timeout=1.0, tracer=tracer, device="e1-7")
    sends.refused(frames.Send(id="m1", body="x", to="bob", trace=True), "rate_limited")
    sends.refused(frames.Send(id="m2", body="x", to="bob"), "rate_limited")  # untraced: nothing
    [rec] = records
    assert (rec.stage, rec.code, rec.id, rec.conv.startswith("dm-")) == ("error", "rate_limited", "m1", True)
