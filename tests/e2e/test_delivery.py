"""Core delivery, end to end: real nats-server, edge + sequencer in-process,
clients over real WebSockets. No mocks.

Where a test must prove that the *edge* sends a message exactly once, it reads
with the raw client (helpers.Raw): the SDK drops duplicates by (conv, seq) and
would hide them.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest

from switchboard import ids
from tests.e2e.helpers import STEP, Raw, drain_messages, no_more_messages, seqs, stream_msgs, unique


async def send_paced(a: Raw, i: int, **frame) -> None:
    """Send ``m<i>`` without waiting for any answer: far more than the edge's
    in-flight bound (edge.sends.MAX_INFLIGHT_SENDS) at once, so these tests
    also check that the bound slows a client (its socket is not read) and
    never refuses a send."""
    await a.send({"type": "send", "id": f"m{i}", **frame})


async def slow_consumers(dep) -> float:
    """Sockets the edge closed for not draining (its /metrics)."""
    name = "switchboard_edge_slow_consumers_total"
    return (await dep.metrics(name))[name]


@pytest.fixture
async def dep(deploy):
    return await deploy()


# ------------------------------------------------------------------ online 1:1


@pytest.mark.parametrize("address", ["to", "conv"])
async def test_online_one_to_one(dep, address):
    alice, bob = unique("alice"), unique("bob")
    a = await dep.sdk(alice)
    b = await dep.sdk(bob)
    conv = ids.dm_conv(alice, bob)
    if address == "conv":
        # the 1:1 conversation exists after a first `to` send; then `conv` works too
        first = await a.send(to=bob, body="first")
        assert (await b.next_message(STEP)).seq == first.seq
    sent = await a.send(**{address: bob if address == "to" else conv}, body="hello bob", id="m-1")
    assert sent.conv == conv and sent.id == "m-1" and sent.seq >= 1 and sent.ts > 0
    m = await b.next_message(STEP)
    assert (m.conv, m.seq, m.id, m.from_, m.body) == (conv, sent.seq, "m-1", alice, "hello bob")
    assert m.cursor is not None and m.cursor > 0
    assert b.cursor == m.cursor
    await no_more_messages(b)


# ------------------------------------------------------------------ offline catch-up


@pytest.mark.parametrize("backlog", [1, 20, 300])  # 300 > replay_batch (256): several replay batches
async def test_offline_recipient_catches_up(dep, backlog):
    alice, bob = unique("alice"), unique("bob")
    b1 = await dep.raw(bob)
    cursor, epoch = b1.synced["cursor"], b1.welcome["epoch"]
    await b1.close()

    a = await dep.raw(alice)
    for i in range(backlog):
        await send_paced(a, i, to=bob, body=f"b{i}")
    for i in range(backlog):
        await a.answer(f"m{i}")

    b2 = await dep.raw(bob, cursor=cursor, epoch=epoch)
    got = b2.msgs()  # the replay arrives between welcome and synced
    assert seqs(got) == list(range(1, backlog + 1))
    assert [m["body"] for m in got] == [f"b{i}" for i in range(backlog)]
    cursors = [m["cursor"] for m in got]
    assert cursors == sorted(set(cursors)) and b2.synced["cursor"] == cursors[-1]
    assert not any(f["type"] == "resync" for f in b2.frames)

    # Live after catch-up: the next message arrives once, with the next seq.
    await a.send_msg(id="after", to=bob)
    await b2.wait_msgs(backlog + 1)
    await asyncio.sleep(0.2)
    assert seqs(b2.msgs()) == list(range(1, backlog + 2))

    # The SDK resumes the same way from (cursor, epoch) and gets nothing twice.
    c = await dep.sdk(bob, cursor=cursor, epoch=epoch)
    got = await drain_messages(c, backlog + 1)
    assert seqs(got) == list(range(1, backlog + 2))
    await no_more_messages(c)


# ------------------------------------------------------------------ several devices


async def test_two_devices_and_senders_other_device(dep):
    alice, bob = unique("alice"), unique("bob")
    a1, a2 = await dep.raw(alice), await dep.raw(alice)
    b1, b2 = await dep.raw(bob), await dep.raw(bob)
    sent = await a1.send_msg(id="hi", to=bob, body="to both devices")
    for dev in (b1, b2, a2):  # a2: the sender's other device sees the sender's own message
        [m] = await dev.wait_msgs(1)
        assert (m["conv"], m["seq"], m["id"], m["from"], m["body"]) == (
            sent["conv"], sent["seq"], "hi", alice, "to both devices")
    # And the reply reaches both of alice's devices.
    await b2.send_msg(id="re", to=alice, body="back")
    for dev in (a1, a2):
        await dev.wait_msgs(2)
    await asyncio.sleep(0.2)
    for dev in (a1, a2, b1, b2):
        assert seqs(dev.msgs()) == [1, 2], dev.msgs()


# ------------------------------------------------------------------ groups


async def test_group_of_50(dep):
    owner = unique("own")
    others = [f"{owner}-m{i}" for i in range(49)]
    offline = others[:10]
    # offline members connect once (to learn their cursor) and go away
    resume = {}
    for u in offline:
        r = await dep.raw(u)
        resume[u] = (r.synced["cursor"], r.welcome["epoch"])
        await r.close()
    o = await dep.sdk(owner)
    conv = await o.create_conversation(others, title="fifty")
    assert len(conv.members) == 50 and set(conv.members) == {owner, *others}
    online = {u: await dep.raw(u) for u in others[10:]}

    sent = [await o.send(conv=conv.conv, body=f"g{i}") for i in range(3)]
    assert [s.seq for s in sent] == [1, 2, 3]
    for r in online.values():
        await r.wait_msgs(3, conv.conv)
    await asyncio.sleep(0.3)
    for u, r in online.items():
        got = r.msgs(conv.conv)
        assert seqs(got) == [1, 2, 3], (u, got)
        assert all(m["from"] == owner for m in got)
    for u in offline:
        cursor, epoch = resume[u]
        r = await dep.raw(u, cursor=cursor, epoch=epoch)
        assert seqs(r.msgs(conv.conv)) == [1, 2, 3], u
        await r.close()


# ------------------------------------------------------------------ retried sends


@pytest.mark.parametrize("how", ["same_frame_twice", "retry_after_reconnect", "sdk_same_id"])
async def test_retried_send_stored_once(dep, how):
    alice, bob = unique("alice"), unique("bob")
    b = await dep.raw(bob)
    frame = {"type": "send", "id": "dup-1", "to": bob, "body": "once"}
    if how == "same_frame_twice":
        a = await dep.raw(alice)
        await a.send(frame)
        await a.send(frame)  # in flight together
        first = await a.answer("dup-1")
        second = await a.answer("dup-1", nth=1)
    elif how == "retry_after_reconnect":
        a0 = await dep.raw(alice)
        first = await a0.send_msg(id="dup-1", to=bob, body="once")
        await a0.close()
        a = await dep.raw(alice)
        second = await a.send_msg(id="dup-1", to=bob, body="once")
    else:
        c = await dep.sdk(alice)
        s1 = await c.send(to=bob, body="once", id="dup-1")
        s2 = await c.send(to=bob, body="once", id="dup-1")
        first, second = {"seq": s1.seq, "conv": s1.conv}, {"seq": s2.seq, "conv": s2.conv}
        a = await dep.raw(alice)
    assert first["seq"] == second["seq"] == 1 and first["conv"] == second["conv"]
    nxt = await a.send_msg(id="dup-2", to=bob, body="next")
    assert nxt["seq"] == 2  # no hole left by the duplicate
    await b.wait_msgs(2)
    await asyncio.sleep(0.2)
    assert [(m["seq"], m["id"]) for m in b.msgs()] == [(1, "dup-1"), (2, "dup-2")]
    stored = await stream_msgs(dep.settings, first["conv"])
    assert [(m.seq, m.id) for m in stored] == [(1, "dup-1"), (2, "dup-2")]


# ------------------------------------------------------------------ replay / live seam


@pytest.mark.parametrize("backlog,live", [(0, 300), (300, 300), (600, 100)])
async def test_replay_live_seam(dep, backlog, live):
    """Messages stored while a client is replaying reach it exactly once, in
    order: the seam between INBOX replay and live delivery has no gap and no
    duplicate."""
    alice, bob = unique("alice"), unique("bob")
    b0 = await dep.raw(bob)
    cursor, epoch = b0.synced["cursor"], b0.welcome["epoch"]
    await b0.close()
    a = await dep.raw(alice)
    for i in range(backlog):
        await send_paced(a, i, to=bob, body="x")
    for i in range(backlog):
        await a.answer(f"m{i}")

    async def keep_sending():
        for i in range(backlog, backlog + live):
            await send_paced(a, i, to=bob, body="x")
            if i % 10 == 0:
                await asyncio.sleep(0.001)  # spread the live ones over the replay

    sender = asyncio.create_task(keep_sending())
    await asyncio.sleep(0.01)
    b = await dep.raw(bob, hello=False)
    await b.send({"type": "hello", "cursor": cursor, "epoch": epoch})
    await sender
    for i in range(backlog, backlog + live):
        await a.answer(f"m{i}")
    total = backlog + live
    await b.wait_msgs(total, timeout=20)
    await asyncio.sleep(0.2)
    assert seqs(b.msgs()) == list(range(1, total + 1))
    cursors = [m["cursor"] for m in b.msgs()]
    assert cursors == sorted(set(cursors))


# ------------------------------------------------------------------ slow consumer


@pytest.mark.parametrize("queue,batch,backlog", [(32, 8, 100), (8, 256, 40)])
async def test_catch_up_larger_than_send_queue(deploy, queue, batch, backlog):
    """A healthy client that reconnects with more missed entries than its
    socket queue holds must still catch up (the replay has to pace itself to
    the socket), not be cut off as a slow consumer on every reconnect."""
    dep = await deploy(send_queue_frames=queue, replay_batch=batch)
    alice, bob = unique("alice"), unique("bob")
    b0 = await dep.raw(bob)
    cursor, epoch = b0.synced["cursor"], b0.welcome["epoch"]
    await b0.close()
    a = await dep.sdk(alice)
    await asyncio.gather(*(a.send(to=bob, body=f"b{i}") for i in range(backlog)))
    b = await dep.raw(bob, hello=False)
    await b.send({"type": "hello", "cursor": cursor, "epoch": epoch})
    with contextlib.suppress(AssertionError):
        await b.wait_msgs(backlog)
    await asyncio.sleep(0.2)
    assert not b.closed.is_set(), (
        f"a reading client was closed during catch-up: code {b.ws.close_code} {b.ws.close_reason!r}, "
        f"after {len(b.msgs())} of {backlog} messages")
    assert await slow_consumers(dep) == 0
    assert sorted(seqs(b.msgs())) == list(range(1, backlog + 1))
    assert seqs(b.msgs()) == list(range(1, backlog + 1))



@pytest.fixture
async def small_queue_dep(deploy):
    # A tiny per-socket queue so a stuck client overflows it quickly.
    return await deploy(send_queue_frames=8)


async def test_slow_consumer_closed_others_unaffected(small_queue_dep):
    dep = small_queue_dep
    owner, slow_u, fast_u = unique("own"), unique("slow"), unique("fast")
    o = await dep.sdk(owner)
    conv = (await o.create_conversation([slow_u, fast_u])).conv

    # The stuck client: tiny receive buffer, library reads at most one frame ahead, app never reads.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((dep.settings.host, dep.settings.port))
    slow = await dep.raw(slow_u, hello=False, read=False, sock=sock, max_queue=1)
    await slow.hello_then_stop_reading()
    slow_cursor, slow_epoch = slow.synced["cursor"], slow.welcome["epoch"]
    fast = await dep.sdk(fast_u)

    body = "z" * 8000
    n = 0
    while await slow_consumers(dep) == 0:
        assert n < 3000, "the stuck client was never disconnected"
        batch = [asyncio.ensure_future(o.send(conv=conv, body=body)) for _ in range(20)]
        await asyncio.gather(*batch)
        n += 20
        # the other member keeps receiving while the stuck one is backing up
        got = await drain_messages(fast, 20)
        assert seqs(got) == list(range(n - 19, n + 1))
    for _ in range(10):  # and after the disconnect too
        await o.send(conv=conv, body="after")
        n += 1
        assert (await fast.next_message(STEP)).seq == n

    # The stuck client now reads: what was already on the wire, then close 4008.
    slow.start_reading()
    await asyncio.wait_for(slow.closed.wait(), STEP)
    assert slow.ws.close_code == 4008, (slow.ws.close_code, slow.ws.close_reason)
    read = [m for m in slow.msgs(conv)]
    last_cursor = max([slow_cursor] + [m["cursor"] for m in read])
    # It reconnects from its cursor and gets everything, exactly once overall.
    again = await dep.raw(slow_u, cursor=last_cursor, epoch=slow_epoch)
    rest = again.msgs(conv)
    assert seqs(read) + seqs(rest) == list(range(1, n + 1))
