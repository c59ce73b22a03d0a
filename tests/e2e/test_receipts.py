"""Receipts end to end: real nats-server, sequencer + edge (+ presence) in-process,
SDK clients over real WebSockets.

Delivered receipts come from the recipient's acks (the SDK auto-acks), read
receipts from the ``read`` frame; both are monotonic per-conversation
watermarks that reach every member's devices as ``receipt`` frames and are
stored (a reconnecting sender asks with ``{"type":"receipts","conv":C}``).
"""

from __future__ import annotations

import pytest

from switchboard import frames
from tests.e2e.helpers import STEP, Events, drain_messages, kind, unique, until


@pytest.fixture
async def dep(deploy):
    return await deploy()


def receipt_of(user: str, conv: str, **marks: int):
    return kind("receipt", user=user, conv=conv, **marks)


async def test_delivered_then_read_reach_sender_devices(dep):
    alice, bob = unique("alice"), unique("bob")
    a1, a2 = await dep.sdk(alice), await dep.sdk(alice)  # two devices of the sender
    b = await dep.sdk(bob)
    ev1, ev2, evb = Events(a1), Events(a2), Events(b)
    await a1.send(to=bob, body="one")
    sent = await a1.send(to=bob, body="two")
    conv = sent.conv
    await drain_messages(b, 2)  # bob's SDK acks the cursor: that is the delivered receipt
    for ev in (ev1, ev2):
        r = await ev.expect(receipt_of(bob, conv, delivered=sent.seq))
        assert r.read == 0
    await b.send_frame(frames.Read(conv=conv, seq=sent.seq))
    for ev in (ev1, ev2, evb):  # the reader's own devices see it too (other tabs clear their badge)
        await ev.expect(receipt_of(bob, conv, delivered=sent.seq, read=sent.seq))


async def test_delivered_after_offline_catch_up(dep):
    """A recipient who was offline acks on replay: the sender learns it then."""
    alice, bob = unique("alice"), unique("bob")
    b = await dep.sdk(bob)
    cursor, epoch = b.cursor, b.epoch
    await b.close()
    a = await dep.sdk(alice)
    ev = Events(a)
    sent = await a.send(to=bob, body="while you were away")
    await ev.nothing(kind("receipt", user=bob))  # nobody acked yet
    b2 = await dep.sdk(bob, cursor=cursor, epoch=epoch)
    assert (await b2.next_message(STEP)).seq == sent.seq
    await ev.expect(receipt_of(bob, sent.conv, delivered=sent.seq, read=0))


# Each step is (read seq sent, expected (delivered, read) afterwards, whether a
# receipt frame must follow). A lower or repeated read changes nothing and
# publishes nothing; a read implies delivered.
MONOTONIC = {
    "lower_after_higher": [(3, (3, 3), True), (1, (3, 3), False)],
    "duplicate": [(2, (3, 2), True), (2, (3, 2), False)],
    "rising": [(1, (3, 1), True), (2, (3, 2), True), (3, (3, 3), True)],
    "zero_is_noop": [(0, (3, 0), False), (2, (3, 2), True), (0, (3, 2), False)],
}


@pytest.mark.parametrize("steps", MONOTONIC.values(), ids=MONOTONIC.keys())
async def test_watermarks_are_monotonic(dep, steps):
    alice, bob = unique("alice"), unique("bob")
    a, b = await dep.sdk(alice), await dep.sdk(bob)
    ev = Events(a)
    for i in range(3):
        sent = await a.send(to=bob, body=f"m{i}")
    conv = sent.conv
    await drain_messages(b, 3)
    await ev.expect(receipt_of(bob, conv, delivered=3, read=0))
    for seq, (delivered, read), publishes in steps:
        await b.send_frame(frames.Read(conv=conv, seq=seq))
        if publishes:
            await ev.expect(receipt_of(bob, conv, delivered=delivered, read=read))
        else:
            await ev.nothing(kind("receipt", user=bob), wait=0.3)
        got = await current(a, conv, {alice, bob})
        assert (got[bob].delivered, got[bob].read) == (delivered, read)
    # stored (after the 50 ms coalescing tick) exactly as the frames said
    final = steps[-1][1]
    store = await dep.store()
    await until(lambda: stored(store, conv, bob, final), what="watermark stored")


async def current(client, conv, members: set[str]) -> dict[str, frames.Receipt]:
    """The watermarks the edge answers to a ``receipts`` frame, by user.

    Read up to the answer's ``ok``, after forgetting what was buffered: under
    load bob's three acks can be broadcast as two receipts (delivered 2, then
    3), and the earlier one, still unread, was once taken for the answer.
    Broadcasts may still interleave with the answer; watermarks only rise, so
    the highest per user is the current one."""
    ev = Events(client)
    ev.skip_all()
    await client.send_frame(frames.ReceiptsRequest(conv=conv, id="now"))
    out: dict[str, frames.Receipt] = {}
    while True:
        f = await ev.expect(lambda f: isinstance(f, frames.Ok) and f.ref == "now"
                            or isinstance(f, frames.Receipt) and f.conv == conv)
        if isinstance(f, frames.Ok):
            break
        seen = out.get(f.user)
        if seen is None or (f.delivered, f.read) > (seen.delivered, seen.read):
            out[f.user] = f
    assert set(out) == members, out
    return out


async def stored(store, conv, user, marks) -> bool:
    got = {w.user: (w.delivered, w.read) for w in await store.watermarks(conv)}
    return got.get(user) == marks


async def test_reconnecting_sender_gets_stored_state_after_sequencer_restart(deploy):
    """The receipts frame answers from the store: even a restarted sequencer
    (empty memory, same store) gives the sender the current watermarks."""
    d = await deploy()
    store = await d.store()
    alice, bob = unique("alice"), unique("bob")
    a, b = await d.sdk(alice), await d.sdk(bob)
    ev = Events(a)
    await a.send(to=bob, body="one")
    sent = await a.send(to=bob, body="two")
    await drain_messages(b, 2)
    await b.send_frame(frames.Read(conv=sent.conv, seq=1))
    await ev.expect(receipt_of(bob, sent.conv, delivered=2, read=1))
    await a.close()
    await b.close()

    async def flushed() -> bool:
        return {(w.user, w.delivered, w.read) for w in await store.watermarks(sent.conv)} >= {(bob, 2, 1)}

    await until(flushed, what="watermarks written to the store")
    await d.stop()
    await d.start("sequencer", "edge")  # new sequencer and edge, same store and streams
    a = await d.sdk(alice)
    ev = Events(a)
    await a.send_frame(frames.ReceiptsRequest(conv=sent.conv))
    r = await ev.expect(kind("receipt", conv=sent.conv, user=bob))
    assert (r.delivered, r.read) == (2, 1)


async def test_group_of_five_every_members_watermarks_visible(dep):
    users = [unique(f"m{i}") for i in range(5)]
    clients = [await dep.sdk(u) for u in users]
    evs = [Events(c) for c in clients]
    conv = (await clients[0].create_conversation(users[1:], title="five")).conv
    for i in range(4):
        await clients[0].send(conv=conv, body=f"g{i}")
    for c in clients[1:]:
        await drain_messages(c, 4)
    # member k reads up to seq k (member 0, the sender, read by sending)
    for k in range(1, 5):
        await clients[k].send_frame(frames.Read(conv=conv, seq=k))
    # every member's devices see every other reader's watermark; a member's own
    # devices hear its read watermark (read state syncs across devices) but not
    # its delivered one, which only matters to the others
    for j, ev in enumerate(evs):
        for k in range(1, 5):
            if k != j:
                await ev.expect(receipt_of(users[k], conv, delivered=4, read=k))
            else:
                await ev.expect(lambda f, k=k: isinstance(f, frames.Receipt) and f.user == users[k]
                               and f.conv == conv and f.read == k)
    # and a receipts query lists all five members (the sender's own devices
    # acked their copies too, so the sender has delivered=4; sending a
    # message marks the sender's conversation read up to it, so read=4)
    ev0 = Events(clients[0])
    await clients[0].send_frame(frames.ReceiptsRequest(conv=conv))
    got = {}
    while len(got) < 5:
        r = await ev0.expect(kind("receipt", conv=conv))
        got[r.user] = (r.delivered, r.read)
    assert got == {users[0]: (4, 4), **{users[k]: (4, k) for k in range(1, 5)}}


async def test_receipts_query_with_id_ends_with_ok(dep):
    """A ``receipts`` query with an ``id`` is answered by one ``receipt`` per
    member and then ``ok`` with that ``ref``: without the end marker a client
    (the JS SDK, the web app) could only guess when the answer was complete."""
    alice, bob = unique("alice"), unique("bob")
    a, b = await dep.sdk(alice), await dep.sdk(bob)
    sent = await a.send(to=bob, body="hi")
    ev = Events(a)
    await drain_messages(b, 1)
    await ev.expect(receipt_of(bob, sent.conv, delivered=sent.seq))  # bob's mark exists now
    ev.skip_all()  # from here on: only the query's answer
    await a.send_frame(frames.ReceiptsRequest(conv=sent.conv, id="q1"))
    users = set()
    while True:
        f = await ev.expect(lambda f: isinstance(f, (frames.Receipt, frames.Ok)))
        if isinstance(f, frames.Ok):
            assert f.ref == "q1"
            break
        users.add(f.user)
    assert users == {alice, bob}  # every member came before the end marker
    await a.send_frame(frames.ReceiptsRequest(conv=sent.conv))  # no id: no end marker
    await ev.nothing(lambda f: isinstance(f, frames.Ok), wait=0.3)


@pytest.mark.parametrize(("failures", "arrives"), [
    (2, True),  # a busy spell: the edge sends the delivered receipt again with its next flushes
    (50, False),  # a sequencer that keeps refusing is not asked forever (DELIVERED_RETRIES)
])
async def test_delivered_receipt_refused_as_busy_is_sent_again(dep, monkeypatch, failures, arrives):
    """A delivered receipt is the edge's own doing (from the recipient's ack):
    no client resends it. The sequencer answers `unavailable` when it has
    more API requests in hand than [sequencer] api_max_inflight (a storm of
    hellos did that to 1,744 of 21,655 receipts); the edge dropped such a
    receipt, and the sender saw no delivered mark until the recipient's
    next ack in that conversation, maybe never."""
    from switchboard.errors import Unavailable

    receipts = dep.component("sequencer").receipts
    real, refused = receipts.apply, []

    async def busy_at_first(**kw):
        if kw["user"] == bob and kw["delivered"] and len(refused) < failures:
            refused.append(kw)
            raise Unavailable("sequencer busy; retry")
        return await real(**kw)

    alice, bob = unique("alice"), unique("bob")
    monkeypatch.setattr(receipts, "apply", busy_at_first)
    a, b = await dep.sdk(alice), await dep.sdk(bob)
    ev = Events(a)
    sent = await a.send(to=bob, body="hi")
    await drain_messages(b, 1)  # bob's SDK acks: the edge makes the delivered receipt
    if arrives:
        await ev.expect(receipt_of(bob, sent.conv, delivered=sent.seq))
        assert len(refused) == failures
    else:
        await ev.nothing(receipt_of(bob, sent.conv, delivered=sent.seq), wait=1.0)
        assert len(refused) == 6  # the first try and DELIVERED_RETRIES more


async def test_receipt_batch_refuses_items_one_by_one(dep):
    """``sb.api.receipts.batch`` (one request per edge flush): a refused
    receipt is reported by its index and never fails the others; a batch
    over the bound is refused whole."""
    from switchboard import api, events, rpc
    from switchboard.errors import LimitExceeded

    alice, bob, eve = unique("alice"), unique("bob"), unique("eve")
    a = await dep.sdk(alice)
    ev = Events(a)
    sent = await a.send(to=bob, body="hi")
    nc = await dep.nats()
    R = events.ReceiptRequest
    batch = [R(user=eve, conv=sent.conv, delivered=sent.seq),  # not a member
             R(user=bob, conv=sent.conv, delivered=sent.seq),  # fine
             R(user=bob, conv=sent.conv, read=sent.seq + 5),  # beyond the last message
             R(user=bob, conv="no such conv!", delivered=1)]  # not an id
    reply = await rpc.call(nc, api.RECEIPT_BATCH, events.ReceiptBatch(batch), subjects=dep.settings.subjects,
                           timeout=5)
    assert {f.index: f.error.code for f in reply.failed} == {0: "not_member", 2: "invalid_seq", 3: "invalid_id"}
    await ev.expect(receipt_of(bob, sent.conv, delivered=sent.seq, read=0))  # the good one was applied
    too_many = events.ReceiptBatch([batch[1]] * (events.RECEIPT_BATCH_MAX + 1))
    with pytest.raises(LimitExceeded):
        await rpc.call(nc, api.RECEIPT_BATCH, too_many, subjects=dep.settings.subjects, timeout=5)
