"""An edge whose NATS connection drops and comes back delivers what was
stored meanwhile, without the client reconnecting.

Live INBOX entries reach an edge as core NATS republishes: those published
while the edge's bus is down are never delivered to it. A later entry of the
same user shows the gap (Nats-Last-Sequence), but the *last* one did not: it
waited for the user's next message (a benchmark under load saw exactly that:
2 of 25,999 deliveries, both copies of a conversation's last message). The
edge now reads INBOX after every session's cursor once the bus is back.

The fault is real: the edge talks to nats-server through a TCP proxy that the
test cuts (and refuses new connections) while a service stores a message.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import msgspec
import pytest

from switchboard.bus import streams
from switchboard.events import SendReply, SendRequest
from tests.e2e.helpers import STEP, CuttableProxy, Raw, unique


@pytest.fixture
async def proxy(nats_server):
    p = CuttableProxy(int(nats_server.url.rsplit(":", 1)[1]))
    await p.start()
    yield p
    await p.close()


async def test_entry_stored_while_edge_bus_is_down_arrives_after_reconnect(proxy, deploy):  # proxy closes last
    d = await deploy(roles=("sequencer",))
    edge = await d.start("edge", nats_url=f"nats://127.0.0.1:{proxy.port}")  # its bus goes through the proxy
    alice, bob = unique("alice"), unique("bob")
    nc = await d.nats()
    a = await d.sdk(alice, edge=edge)
    b = await d.sdk(bob, edge=edge)
    conv = await a.create_conversation([bob], title="ops")
    first = await a.send(conv=conv.conv, body="before the cut")
    assert (await b.next_message(STEP)).seq == first.seq
    assert (await a.next_message(STEP)).seq == first.seq  # the sender's own copy

    proxy.cut()  # the edge's NATS connections drop; its reconnects are refused
    await asyncio.sleep(0.3)
    req = SendRequest(sender="system", id=unique("sys"), conv=conv.conv, body="stored while cut", kind="system")
    reply = msgspec.json.decode((await nc.request(d.settings.subjects.api("system", "send"),
                                                  msgspec.json.encode(req), timeout=STEP)).data,
                                type=SendReply)
    assert reply.error is None and reply.seq == first.seq + 1
    await asyncio.sleep(0.3)  # INBOX republished it to nobody on this edge
    proxy.heal()

    # The last message of the conversation: no later entry reveals the
    # gap, only the edge's re-read after its bus reconnect delivers it.
    for client in (b, a):
        got = await client.next_message(STEP)
        assert (got.seq, got.body) == (reply.seq, "stored while cut")


@contextlib.asynccontextmanager
async def stored_while_cut_and_unreadable(d, proxy, conv: str) -> AsyncIterator[SendReply]:
    """Cut the edge's bus, store a system message in ``conv`` meanwhile,
    heal, and yield its reply, with direct gets on INBOX switched off
    (allow_direct) so every re-read fails until the block ends."""
    nc = await d.nats()
    js = nc.jetstream()
    inbox = streams.names(d.settings)[1]
    config = (await js.stream_info(inbox)).config
    config.allow_direct = False
    await js.update_stream(config)
    try:
        proxy.cut()
        await asyncio.sleep(0.3)
        req = SendRequest(sender="system", id=unique("sys"), conv=conv, body="stored while cut", kind="system")
        reply = msgspec.json.decode((await nc.request(d.settings.subjects.api("system", "send"),
                                                      msgspec.json.encode(req), timeout=STEP)).data, type=SendReply)
        assert reply.error is None
        proxy.heal()
        yield reply
    finally:
        config.allow_direct = True
        await js.update_stream(config)


async def bob_reading(d, edge) -> tuple[str, Raw, dict]:
    """A conversation alice -> bob on ``edge``, bob's raw socket, and the
    first message as bob got it."""
    alice, bob = unique("alice"), unique("bob")
    a = await d.sdk(alice, edge=edge)
    conv = await a.create_conversation([bob], title="ops")
    b = await d.raw(bob, edge=edge)
    first = await a.send(conv=conv.conv, body="before the cut")
    return conv.conv, b, await b.expect("msg", seq=first.seq)


async def test_a_failed_reread_closes_the_socket_so_it_replays(proxy, deploy):  # proxy closes last
    """After the bus is back, a socket whose INBOX re-read keeps failing cannot be
    told what it missed, and no later entry may come to show the gap: the
    edge closes it with 1013 (try again) and the client replays from its
    cursor. Before, the failure was a task exception nobody retrieved and the
    socket stayed open with the entry undelivered. Direct gets on INBOX are
    switched off (allow_direct) to make the re-read fail for certain; the
    edge retries a failed re-read for reread_retry_sec (1 s here) first."""
    d = await deploy(roles=("sequencer",))
    edge = await d.start("edge", nats_url=f"nats://127.0.0.1:{proxy.port}", reread_retry_sec=1.0)
    conv, b, seen = await bob_reading(d, edge)
    async with stored_while_cut_and_unreadable(d, proxy, conv) as reply:
        await asyncio.wait_for(b.closed.wait(), 3 * STEP)
        assert b.ws.close_code == 1013, (b.ws.close_code, b.ws.close_reason)
    # hello with bob's cursor: the replay, then synced
    again = await d.raw(b.welcome["user"], edge=edge, cursor=seen["cursor"], epoch=b.welcome["epoch"])
    replayed = [(f["seq"], f["body"]) for f in again.frames if f["type"] == "msg"]
    assert replayed == [(reply.seq, "stored while cut")], again.frames


async def test_a_reread_that_fails_for_a_moment_is_retried(proxy, deploy):  # proxy closes last
    """The other side: a re-read failing only for a moment (INBOX's leader
    being elected, a gateway re-forming) is retried and the socket stays
    open: closing every socket of the edge at the first failure turned each
    such blip into a reconnect of all of them (test_cells saw it after a
    cell's restart). Direct gets are off while the bus comes back, on again
    1.5 s later, within reread_retry_sec."""
    d = await deploy(roles=("sequencer",))
    edge = await d.start("edge", nats_url=f"nats://127.0.0.1:{proxy.port}", reread_retry_sec=10.0)
    conv, b, _ = await bob_reading(d, edge)
    async with stored_while_cut_and_unreadable(d, proxy, conv) as reply:
        await asyncio.sleep(1.5)  # the bus is back and the first re-reads failed
    got = await b.expect("msg", seq=reply.seq)
    assert got["body"] == "stored while cut" and not b.closed.is_set()
