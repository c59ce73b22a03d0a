"""Recovery beyond the recent log (issue 3): the sequencer continuing a
conversation from the archive, and clients told to resync (new epoch, or a
cursor older than INBOX keeps) that fetch what they missed from history.
Real nats-server, SQLite archive, archiver running; no mocks."""

from __future__ import annotations

import asyncio

import pytest

from switchboard.bus import streams
from tests.e2e.helpers import STEP, unique, until

ROLES = ("sequencer", "edge", "archiver")


async def wait_archived(dep, conv: str, seq: int, timeout: float = 10.0) -> None:
    store = await dep.store()

    async def archived() -> bool:
        return await store.last_seq(conv) >= seq

    await until(archived, timeout, f"the archiver to store {conv} up to seq {seq}")


@pytest.mark.parametrize("lose", ["purge_subject", "recreate_stream"])
async def test_sequencer_continues_from_archive(deploy, lose):
    """MESSAGES no longer holds a conversation (its messages aged out, or the
    stream is new): a fresh sequencer continues at archive's last seq + 1,
    never restarting at 1 (which would collide with history)."""
    d = await deploy(roles=ROLES)
    alice, bob = unique("alice"), unique("bob")
    a = await d.sdk(alice)
    for i in range(5):
        sent = await a.send(to=bob, body=f"m{i}")
    conv = sent.conv
    await wait_archived(d, conv, 5)
    await a.close()
    js = (await d.nats()).jetstream()
    messages = streams.names(d.settings)[0]
    if lose == "purge_subject":  # what max-age does to an idle conversation
        await js.purge_stream(messages, subject=d.settings.subjects.msg(conv))
    else:
        await js.delete_stream(messages)
    # New roles: nothing cached. (The archiver's durable goes with a deleted stream.)
    await d.stop()
    await d.start(*ROLES)
    a = await d.sdk(alice)
    sent = await a.send(to=bob, body="after")
    assert (sent.conv, sent.seq) == (conv, 6)
    page = await a.history(conv, limit=10)
    assert [m.seq for m in page.messages] == [1, 2, 3, 4, 5, 6]


async def test_new_inbox_epoch_resyncs_and_sdk_fetches_history(deploy):
    """INBOX recreated from scratch: a client holding the old epoch is told to
    resync (never silently given a gap), with the conversations to fetch; the
    SDK fetches the messages it missed from history, in order, once.
    inbox_bounds_ttl=0: every hello reads INBOX's bounds and epoch afresh (no
    sleeping past a cache lifetime)."""
    dep = await deploy(roles=ROLES, inbox_bounds_ttl=0.0)
    alice, bob = unique("alice"), unique("bob")
    b = await dep.sdk(bob, fill_gaps=True)
    a = await dep.sdk(alice)
    first = await a.send(to=bob, body="before")
    assert (await b.next_message(STEP)).seq == first.seq
    cursor, old_epoch, convs = b.cursor, b.epoch, b.conv_seqs  # what an app persists
    await b.close()

    for i in range(3):
        await a.send(to=bob, body=f"missed{i}")
    await wait_archived(dep, first.conv, 4)
    js = (await dep.nats()).jetstream()
    inbox = streams.names(dep.settings)[1]
    await js.delete_stream(inbox)
    await streams.ensure_streams(js, dep.settings)
    new_epoch = await streams.epoch(js, inbox)
    assert new_epoch != old_epoch

    raw = await dep.raw(bob, cursor=cursor, epoch=old_epoch)
    resync = next(f for f in raw.frames if f["type"] == "resync")
    assert resync["reason"] == "epoch_changed"
    assert {"conv": first.conv, "upto": 4} in [{k: r[k] for k in ("conv", "upto")} for r in resync["ranges"]]

    b2 = await dep.sdk(bob, cursor=cursor, epoch=old_epoch, fill_gaps=True, conv_seqs=convs)
    got = [(await b2.next_message(STEP)).body for _ in range(3)]
    assert got == ["missed0", "missed1", "missed2"]
    assert b2.epoch == dep.component("edge").epoch == new_epoch


async def test_cursor_older_than_inbox_keeps_resyncs(deploy):
    """A device offline for longer than INBOX keeps (here: more entries than
    the per-user limit) gets `resync` with cursor_expired, and the SDK fills
    from history: every message exactly once, in order."""
    dep = await deploy(roles=ROLES, inbox_max_per_user=5)
    alice, bob = unique("alice"), unique("bob")
    b = await dep.sdk(bob, fill_gaps=True)
    a = await dep.sdk(alice)
    first = await a.send(to=bob, body="m0")
    assert (await b.next_message(STEP)).body == "m0"
    cursor, epoch, convs = b.cursor, b.epoch, b.conv_seqs
    await b.close()
    for i in range(1, 13):  # 12 more: bob's INBOX keeps only the last 5
        await a.send(to=bob, body=f"m{i}")
    await wait_archived(dep, first.conv, 13)

    raw = await dep.raw(bob, cursor=cursor, epoch=epoch)
    resync = next(f for f in raw.frames if f["type"] == "resync")
    assert resync["reason"] == "cursor_expired"

    b2 = await dep.sdk(bob, cursor=cursor, epoch=epoch, fill_gaps=True, conv_seqs=convs)
    got = [(await b2.next_message(STEP)).body for _ in range(12)]
    assert got == [f"m{i}" for i in range(1, 13)]
    with pytest.raises(asyncio.TimeoutError):
        await b2.next_message(0.5)


async def test_connected_client_is_moved_to_a_recreated_inbox(deploy):
    """INBOX recreated under a *connected* device: the new stream's sequences
    start again at 1, so its live entries would look like duplicates of what
    the socket already had (silent loss). The edge notices within its check
    interval, closes the socket (4009); the SDK reconnects with the old epoch,
    is told to resync, and later messages arrive."""
    dep = await deploy(roles=ROLES)
    alice, bob = unique("alice"), unique("bob")
    b = await dep.sdk(bob, fill_gaps=True)
    a = await dep.sdk(alice)
    for i in range(3):
        await a.send(to=bob, body=f"old{i}")
    assert [(await b.next_message(STEP)).body for _ in range(3)] == ["old0", "old1", "old2"]
    old_epoch = b.epoch
    js = (await dep.nats()).jetstream()
    inbox = streams.names(dep.settings)[1]
    await js.delete_stream(inbox)
    await streams.ensure_streams(js, dep.settings)
    reconnects = b.reconnects
    # The edge checks INBOX every few seconds (and at every hello).
    await until(lambda: b.reconnects != reconnects and b.epoch != old_epoch, 15,
                "the client moved to the new INBOX")
    await b.wait_synced(STEP)
    sent = await a.send(to=bob, body="new")
    m = await b.next_message(STEP)
    assert (m.body, m.seq) == ("new", sent.seq)


async def test_nats_server_restart_loses_nothing(make_nats, deploy):  # the server stops after the roles
    """The nats-server restarts (same port, same JetStream store) while two
    clients talk: services reconnect on their own, the sender's SDK resends
    what was refused meanwhile (same ids), and the recipient gets every
    message exactly once, in order (live entries missed during the outage are
    caught up from INBOX)."""
    srv = make_nats()
    dep = await deploy(nats_url=srv.url)
    alice, bob = unique("alice"), unique("bob")
    b = await dep.sdk(bob, fill_gaps=False, gap_wait=5.0)
    a = await dep.sdk(alice)
    for i in range(5):
        await a.send(to=bob, body=f"m{i}")
    srv.stop()
    sends = [asyncio.ensure_future(a.send(to=bob, body=f"m{i}")) for i in range(5, 10)]
    await asyncio.sleep(1.0)
    srv.start()
    await asyncio.wait_for(asyncio.gather(*sends), 60)
    for i in range(10, 15):
        await a.send(to=bob, body=f"m{i}")
    got = [(await b.next_message(30)).body for _ in range(15)]
    # one device's sends keep their order, resends included
    assert got == [f"m{i}" for i in range(15)]
    with pytest.raises(asyncio.TimeoutError):
        await b.next_message(0.5)


async def test_roles_stop_cleanly_after_their_nats_server_died(make_nats, deploy):
    """A deployment stopped after its nats-server is gone (``up`` killed with
    its server, a node lost for good) stops without raising: closing a
    connection whose socket was reset raised ConnectionResetError out of the
    roles' teardown."""
    srv = make_nats()
    dep = await deploy(nats_url=srv.url)
    a = await dep.sdk(unique("alice"))
    await a.send(to=unique("bob"), body="x")
    srv.stop()
    await asyncio.sleep(0.5)  # the roles see the connection drop and start reconnecting
    await dep.stop()
