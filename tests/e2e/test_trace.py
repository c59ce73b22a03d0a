"""Per-message trace (issue 12) against a real deployment: a real
nats-server, the roles in-process (sbctl.fabric), clients over
WebSockets; the push provider is the local HTTP/2 fake of tests/fakes.

Records are read the simplest way: an ordered JetStream consumer on the
message's subject ``<prefix>.trace.<conv>.<sender>.<id>`` (stream SB_TRACE),
in the order the stream stored them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import msgspec
import nats
import nats.errors
import pytest

from switchboard import frames
from switchboard.bus import streams
from switchboard.config import Settings
from switchboard.events import SendReply, SendRequest
from switchboard.trace import TraceRecord, decode_record, trace_subject
from tests.e2e.helpers import STEP, Events, PresenceChanges, kind, unique, until
from tests.e2e.test_push_flow import fakes, material, plat, push_settings, pusher, register  # noqa: F401 - fixtures

Until = Callable[[list[TraceRecord]], bool]


async def read_trace(settings: Settings, conv: str, sender: str, id: str, done: Until,
                     timeout: float = STEP) -> list[TraceRecord]:
    """The records of one message in stream order, read until ``done`` holds
    (fails with what was read if it never does)."""
    nc = await nats.connect(settings.nats_url)
    try:
        sub = await nc.jetstream().subscribe(trace_subject(settings.subject_prefix, conv, sender, id),
                                             ordered_consumer=True)
        out: list[TraceRecord] = []

        async def complete() -> bool:
            if not done(out):
                with contextlib.suppress(nats.errors.TimeoutError):
                    out.append(decode_record((await sub.next_msg(timeout=0.2)).data))
            return done(out)

        await until(complete, timeout,
                    lambda: f"trace of {conv}/{sender}/{id} complete: {[(r.stage, r.role, r.user) for r in out]}",
                    every=0)
        await sub.unsubscribe()
        return out
    finally:
        await nc.close()


async def trace_info(settings: Settings, **kw):
    nc = await nats.connect(settings.nats_url)
    try:
        return await nc.jetstream().stream_info(streams.trace_name(settings), **kw)
    finally:
        await nc.close()


def stages(recs: list[TraceRecord], stage: str, **match) -> list[TraceRecord]:
    return [r for r in recs if r.stage == stage and all(getattr(r, k) == v for k, v in match.items())]


def at_index(recs: list[TraceRecord], rec: TraceRecord) -> int:
    return next(i for i, r in enumerate(recs) if r is rec)


# ---------------------------------------------------------------- a traced 1:1 message, end to end


async def test_traced_direct_message_shows_every_hop_in_order(deploy):
    """edge.received, sequencer.stored, sequencer.fanout, edge.delivered on
    each of the recipient's two devices, edge.acked when each acks, and
    archiver.stored: each hop recorded once, after the hop it depends on
    (stream order and clock), with what the contract says it carries."""
    d = await deploy(roles=("sequencer", "edge", "archiver"), trace_sample=0.0)
    alice, bob = unique("alice"), unique("bob")
    phone, laptop = await d.raw(bob), await d.raw(bob)
    a = await d.sdk(alice)
    mid = unique("m")
    sent = await a.send(to=bob, body="where is it?", id=mid, trace=True)
    cursors = []
    for dev in (phone, laptop):
        m = await dev.expect("msg", id=mid)
        await dev.send({"type": "ack", "cursor": m["cursor"]})
        cursors.append(m["cursor"])

    def complete(recs: list[TraceRecord]) -> bool:
        return (len(stages(recs, "edge.acked", user=bob)) == 2 and bool(stages(recs, "archiver.stored"))
                and len(stages(recs, "edge.delivered", user=bob)) == 2)

    recs = await read_trace(d.settings, sent.conv, alice, mid, complete)

    [received] = stages(recs, "edge.received")
    [stored] = stages(recs, "sequencer.stored")
    [fanout] = stages(recs, "sequencer.fanout")
    [archived] = stages(recs, "archiver.stored")
    delivered = stages(recs, "edge.delivered", user=bob)
    acked = stages(recs, "edge.acked", user=bob)
    assert not stages(recs, "error") and not [r for r in recs if r.stage.startswith("push.")]
    # who recorded what, and what each hop knew
    assert (received.role, stored.role, fanout.role, archived.role) == ("edge", "sequencer", "sequencer", "archiver")
    assert all(r.instance and r.conv == sent.conv and r.id == mid and r.sender == alice for r in recs)
    assert received.device and received.device not in {r.device for r in delivered}
    assert (stored.seq, archived.seq) == (sent.seq, sent.seq)
    assert stored.stream_seq and stored.stream_seq == archived.stream_seq
    assert (fanout.members, fanout.mode) == (2, "inbox")
    assert len({r.device for r in delivered}) == 2  # one record per socket written
    assert {(r.device, r.cursor) for r in acked} == {(r.device, r.cursor) for r in delivered}
    assert sorted(r.cursor for r in delivered) == sorted(cursors)  # the INBOX cursor each device got
    # order: each hop after the one it depends on, in the stream and on the clock
    chain = [received, stored, fanout]
    for before, after in zip(chain, chain[1:]):
        assert at_index(recs, before) < at_index(recs, after) and before.at <= after.at
    for dl in delivered:
        [ack] = [r for r in acked if r.device == dl.device]
        assert at_index(recs, fanout) < at_index(recs, dl) < at_index(recs, ack) and fanout.at <= dl.at <= ack.at
    assert at_index(recs, stored) < at_index(recs, archived) and stored.at <= archived.at


async def test_traced_large_group_message_is_delivered_in_pull_mode(deploy):
    """Above fanout_max_members there are no INBOX copies: the sequencer
    publishes the stored message on the conversation subject, with the mark,
    and each member's socket records edge.delivered without a cursor."""
    d = await deploy(trace_sample=0.0, fanout_max_members=2)
    alice, bob, carol = unique("alice"), unique("bob"), unique("carol")
    a, b, c = await d.sdk(alice), await d.sdk(bob), await d.sdk(carol)
    conv = (await a.create_conversation([bob, carol], "big")).conv
    await asyncio.sleep(0.3)  # members' edges subscribe on the conv notice
    mid = unique("m")
    sent = await a.send(conv=conv, body="to the crowd", id=mid, trace=True)
    for member in (b, c):
        assert (await member.next_message(STEP)).cursor is None
    recs = await read_trace(d.settings, conv, alice, mid,
                            lambda rs: {r.user for r in stages(rs, "edge.delivered")} >= {bob, carol})
    [fanout] = stages(recs, "sequencer.fanout")
    assert (fanout.members, fanout.mode, fanout.seq) == (3, "pull", sent.seq)
    assert all(r.cursor is None for r in stages(recs, "edge.delivered"))


async def test_refused_send_records_error_with_its_code(deploy):
    """A traced send to a conversation the sender is not a member of: the
    sequencer's refusal and the edge's answer are both recorded as ``error``
    with the code the client got."""
    d = await deploy(trace_sample=0.0)
    alice, bob, carol = unique("alice"), unique("bob"), unique("carol")
    b = await d.sdk(bob)
    conv = await b.create_conversation([carol], title="not for alice")
    raw = await d.raw(alice)
    mid = unique("m")
    await raw.send({"type": "send", "id": mid, "conv": conv.conv, "body": "let me in", "trace": True})
    answer = await raw.reply(mid)
    assert (answer["type"], answer["code"]) == ("error", "not_member")
    recs = await read_trace(d.settings, conv.conv, alice, mid, lambda rs: len(stages(rs, "error")) == 2)
    assert [r.stage for r in recs] == ["edge.received", "error", "error"]
    assert {(r.role, r.code) for r in stages(recs, "error")} == {("sequencer", "not_member"), ("edge", "not_member")}


# ---------------------------------------------------------------- which messages are traced

# (sample, which of N sends carry "trace": true, which are traced). A countdown
# sampler at 1.0 traces all; at 0 only those that ask; untraced ones write nothing.
N = 6
WHICH = [
    pytest.param(0.0, set(), set(), id="sample-0-no-flag-writes-nothing"),
    pytest.param(0.0, {1, 4}, {1, 4}, id="sample-0-flagged-only"),
    pytest.param(1.0, set(), set(range(N)), id="sample-1-traces-all"),
]


@pytest.mark.parametrize("sample,flagged,traced", WHICH)
async def test_which_messages_are_traced(deploy, sample, flagged, traced):
    d = await deploy(roles=("sequencer", "edge", "archiver"), trace_sample=sample)
    alice, bob = unique("alice"), unique("bob")
    a, b = await d.sdk(alice), await d.sdk(bob)
    ids = [unique("m") for _ in range(N)]
    for i, mid in enumerate(ids):
        sent = await a.send(to=bob, body=f"#{i}", id=mid, trace=i in flagged)
    for _ in ids:
        await b.next_message(STEP)
    conv = sent.conv
    for i in sorted(traced):  # every hop of each traced one, up to the archive
        await read_trace(d.settings, conv, alice, ids[i], lambda rs: bool(stages(rs, "archiver.stored")))

    async def archived() -> bool:  # all N in the archive: every hop that could record has run
        return len((await b.history(conv)).messages) == N

    await until(archived, what="all messages archived")
    await asyncio.sleep(0.3)  # a late record would land by now
    info = await trace_info(d.settings, subjects_filter=f"{d.settings.subject_prefix}.trace.>")
    # <prefix>.trace.<conv>.<sender>.<id>[.nats]: which messages wrote anything
    assert {subj.split(".")[4] for subj in (info.state.subjects or {})} == {ids[i] for i in traced}
    if not traced:
        assert info.state.messages == 0  # not one record, not one server trace event


async def test_system_message_is_traced_on_request(deploy):
    """A service's system message with ``trace: true`` (sampling off): the
    sequencer marks it, so its store, fan-out and delivery are recorded."""
    d = await deploy(trace_sample=0.0)
    alice, bob = unique("alice"), unique("bob")
    a = await d.sdk(alice)
    conv = await a.create_conversation([bob], title="sys")
    mid = unique("sys")
    nc = await nats.connect(d.settings.nats_url)
    try:
        req = SendRequest(sender="system", id=mid, conv=conv.conv, body="maintenance at 5", trace=True)
        reply = msgspec.json.decode((await nc.request(d.settings.subjects.api("system", "send"),
                                                      msgspec.json.encode(req), timeout=STEP)).data,
                                    type=SendReply)
    finally:
        await nc.close()
    assert reply.error is None
    await a.next_message(STEP)
    recs = await read_trace(d.settings, conv.conv, "system", mid,
                            lambda rs: bool(stages(rs, "edge.delivered", user=alice)))
    assert [r.stage for r in recs][:2] == ["sequencer.stored", "sequencer.fanout"]
    assert stages(recs, "sequencer.stored")[0].seq == reply.seq


# ---------------------------------------------------------------- expiry


async def test_trace_records_expire(deploy):
    """SB_TRACE keeps records trace_max_age_sec: here 1 s; after it the
    records of a traced message are gone."""
    d = await deploy(trace_sample=0.0, trace_max_age_sec=1.0)
    info = await trace_info(d.settings)
    assert info.config.max_age == 1.0
    alice, bob = unique("alice"), unique("bob")
    a = await d.sdk(alice)
    mid = unique("m")
    sent = await a.send(to=bob, body="short-lived", id=mid, trace=True)
    await read_trace(d.settings, sent.conv, alice, mid, lambda rs: bool(stages(rs, "sequencer.fanout")))

    async def gone() -> bool:
        return (await trace_info(d.settings)).state.messages == 0

    await until(gone, timeout=10.0, what="trace records expired")


# ---------------------------------------------------------------- push


@pytest.fixture
async def push_dep(deploy, tmp_path, material, fakes):  # noqa: F811 - fixtures from test_push_flow
    push = push_settings(tmp_path / "push.toml", material, fakes)
    return await deploy(roles=("sequencer", "edge", "presence"), trace_sample=0.0, **push)


async def test_offline_recipient_push_sent_then_skipped_when_read_elsewhere(push_dep, fakes):  # noqa: F811
    """Bob is offline with one push device: a traced message is enqueued by
    the sequencer and sent by the pusher (provider = the device's platform).
    A second one waits in PUSH while no pusher runs; bob reads it on another
    device first; the pusher, started again, skips it: read_elsewhere."""
    d = push_dep
    p = plat("fcm", fakes)
    alice, bob = unique("alice"), unique("bob")
    token, _ = p.new()
    a = await d.sdk(alice)
    async with pusher(d) as svc:
        await register(d, svc, bob, "fcm", token)
        first = unique("m")
        sent = await a.send(to=bob, body="ping", id=first, trace=True)
        recs = await read_trace(d.settings, sent.conv, alice, first, lambda rs: bool(stages(rs, "push.sent")))
    [enqueued] = stages(recs, "push.enqueued")
    [pushed] = stages(recs, "push.sent")
    assert (enqueued.role, enqueued.user, pushed.role, pushed.user) == ("sequencer", bob, "pusher", bob)
    assert pushed.provider == "fcm" and pushed.device and pushed.seq == sent.seq
    assert at_index(recs, enqueued) < at_index(recs, pushed) and enqueued.at <= pushed.at
    assert not stages(recs, "edge.delivered", user=bob)  # offline: nothing written to a socket of bob's

    second = unique("m")
    read = await a.send(to=bob, body="read me elsewhere", id=second, trace=True)
    await read_trace(d.settings, read.conv, alice, second, lambda rs: bool(stages(rs, "push.enqueued")))
    async with PresenceChanges(d.settings) as changes:
        web = await d.sdk(bob)  # bob's browser: no push device; reads it
        await web.send_frame(frames.Read(conv=read.conv, seq=read.seq))
        await Events(a).expect(kind("receipt", user=bob, read=read.seq))
        await web.close()
        await changes.wait(bob, online=False)
    async with pusher(d):
        recs = await read_trace(d.settings, read.conv, alice, second, lambda rs: bool(stages(rs, "push.skipped")))
    [skipped] = stages(recs, "push.skipped")
    assert (skipped.role, skipped.user, skipped.reason) == ("pusher", bob, "read_elsewhere")
    assert not stages(recs, "push.sent")
