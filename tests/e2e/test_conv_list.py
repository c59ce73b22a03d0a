"""``conv.list``: a user's conversations, newest activity first, each with its
last seq, the caller's own read watermark and last message.

Real nats-server, sequencer + edge in-process, the SDK and raw sockets.
Protects what a chat list screen is built from: the order (a message moves
its conversation to the top), unread = last_seq - read (own messages count
as read; reading clears it), the last message's text, and that nobody sees
a conversation they are not in.
"""

from __future__ import annotations

import pytest

from switchboard import frames, ids
from tests.e2e.helpers import drain_messages, stream_msgs, unique, until


@pytest.fixture
async def dep(deploy):
    return await deploy()


def by_conv(convs: list[frames.ConvSummary]) -> dict[str, frames.ConvSummary]:
    return {c.conv: c for c in convs}


async def test_three_conversations_newest_first_with_unread(dep):
    alice, bob, carol = unique("alice"), unique("bob"), unique("carol")
    a, b, c = await dep.sdk(alice), await dep.sdk(bob), await dep.sdk(carol)

    # 1) a 1:1 with bob (alice writes twice, bob once)
    await a.send(to=bob, body="hi bob")
    await b.send(to=alice, body="hi alice")
    dm_bob = (await a.send(to=bob, body="lunch?")).conv
    # 2) a group with bob and carol, carol writes
    group = await a.create_conversation([bob, carol], "team")
    await c.send(conv=group.conv, body="standup at 10")
    await c.send(conv=group.conv, body="room 4")
    # 3) a 1:1 with carol, carol writes last of all
    dm_carol = (await c.send(to=alice, body="are you there?")).conv
    assert dm_carol == ids.dm_conv(alice, carol)

    convs = await a.list_conversations()
    assert [x.conv for x in convs] == [dm_carol, group.conv, dm_bob]  # newest activity first
    got = by_conv(convs)
    assert (got[dm_bob].last_seq, got[dm_bob].read) == (3, 3)  # alice sent the last one: nothing unread
    assert got[dm_bob].last.body == "lunch?" and got[dm_bob].last.from_ == alice
    assert sorted(got[dm_bob].members) == sorted([alice, bob]) and got[dm_bob].title == ""
    assert (got[group.conv].last_seq, got[group.conv].read) == (2, 0)  # two unread
    assert got[group.conv].last.body == "room 4" and got[group.conv].title == "team"
    assert sorted(got[group.conv].members) == sorted([alice, bob, carol])
    assert (got[dm_carol].last_seq, got[dm_carol].read) == (1, 0)
    assert got[dm_carol].last.body == "are you there?" and got[dm_carol].last.cursor is None

    # alice reads the group: unread 0 there, the others unchanged
    await drain_messages(a, 6)
    await a.read(group.conv, 2)

    async def group_read() -> bool:
        return by_conv(await a.list_conversations())[group.conv].read == 2

    await until(group_read)
    got = by_conv(await a.list_conversations())
    assert got[dm_carol].read == 0 and got[dm_bob].read == 3

    # alice answers bob: the 1:1 with bob moves to the top
    await a.send(to=bob, body="see you")
    convs = await a.list_conversations()
    assert [x.conv for x in convs] == [dm_bob, dm_carol, group.conv]
    assert (convs[0].last_seq, convs[0].read, convs[0].last.body) == (4, 4, "see you")

    # carol's view: her two conversations, none of alice's 1:1 with bob
    carol_convs = by_conv(await c.list_conversations())
    assert set(carol_convs) == {dm_carol, group.conv}
    assert carol_convs[group.conv].read == 2  # her own messages count as read


async def test_a_user_in_no_conversation_gets_an_empty_list(dep):
    raw = await dep.raw(unique("loner"))
    await raw.send({"type": "conv.list", "id": "l1"})
    reply = await raw.reply("l1")
    assert reply == {"type": "conv.list", "ref": "l1", "convs": []}


async def test_wire_shape(dep):
    """The frame as other SDKs read it: every field present, last null for a
    group without messages (listed by its creation time)."""
    alice, bob = unique("alice"), unique("bob")
    a = await dep.sdk(alice)
    await a.send(to=bob, body="first")
    group = await a.create_conversation([bob], "quiet")  # created after: newer activity, no message
    raw = await dep.raw(alice)
    await raw.send({"type": "conv.list", "id": "l2"})
    reply = await raw.reply("l2")
    assert reply["type"] == "conv.list" and reply["ref"] == "l2" and "more" not in reply
    first, second = reply["convs"]
    assert first == {"conv": group.conv, "members": sorted([alice, bob]), "title": "quiet", "last_seq": 0,
                     "read": 0, "last": None}
    assert second["conv"] == ids.dm_conv(alice, bob) and second["last_seq"] == 1 and second["read"] == 1
    assert {k: second["last"][k] for k in ("type", "conv", "seq", "from", "body")} == {
        "type": "msg", "conv": second["conv"], "seq": 1, "from": alice, "body": "first"}
    assert second["last"].get("kind", "user") == "user" and second["last"]["ts"] > 0
    assert "cursor" not in second["last"]


async def test_non_member_never_sees_a_conversation(dep):
    alice, bob, mallory = unique("alice"), unique("bob"), unique("mallory")
    a, m = await dep.sdk(alice), await dep.sdk(mallory)
    await a.send(to=bob, body="secret")
    group = await a.create_conversation([bob], "private")
    await a.send(conv=group.conv, body="also secret")
    await m.send(to=alice, body="hello?")  # mallory has a 1:1 with alice, and only that
    seen = await m.list_conversations()
    assert [x.conv for x in seen] == [ids.dm_conv(mallory, alice)]
    assert all("secret" not in (x.last.body if x.last else "") for x in seen)


async def test_list_is_capped_by_the_setting(deploy):
    """conv_list_max: the most recently active ones, and ``more`` says there are others."""
    d = await deploy(conv_list_max=2)
    alice = unique("alice")
    a = await d.sdk(alice)
    convs = [(await a.send(to=unique("peer"), body=f"n{i}")).conv for i in range(3)]
    raw = await d.raw(alice)
    await raw.send({"type": "conv.list", "id": "l3"})
    reply = await raw.reply("l3")
    assert [x["conv"] for x in reply["convs"]] == [convs[2], convs[1]]
    assert reply["more"] is True


async def test_big_answers_are_cut_to_fit_the_send_queue(deploy):
    """Long last messages: the answer stays under half the socket's send
    queue (a bigger frame would close the socket as a slow consumer); the
    least recent conversations are left out and ``more`` is set."""
    d = await deploy(send_queue_bytes=160 * 1024, max_frame_bytes=64 * 1024, max_body_bytes=16 * 1024)
    alice = unique("alice")
    a = await d.sdk(alice)
    convs = [(await a.send(to=unique("peer"), body=f"{i}" + "x" * 16_000)).conv for i in range(8)]
    raw = await d.raw(alice)
    await raw.send({"type": "conv.list", "id": "l4"})
    reply = await raw.reply("l4")
    got = [x["conv"] for x in reply["convs"]]
    assert 1 <= len(got) < 8 and got == convs[::-1][:len(got)]
    assert reply["more"] is True
    assert not raw.closed.is_set()


async def test_conversations_gone_from_the_stream_come_from_the_archive(deploy):
    """MESSAGES keeps recent messages only: a conversation whose messages all
    aged out is still listed, with its last message read from the archive."""
    d = await deploy(roles=("sequencer", "edge", "archiver"), messages_max_age_sec=2.0, dedup_window_sec=1.0)
    alice, bob, carol = unique("alice"), unique("bob"), unique("carol")
    a = await d.sdk(alice)
    await a.send(to=bob, body="old news")
    old = (await a.send(to=bob, body="older than the stream")).conv

    async def aged_out() -> bool:
        return await stream_msgs(d.settings, old) == []

    await until(aged_out, timeout=20, what="MESSAGES expiring the old conversation")
    new = (await a.send(to=carol, body="fresh")).conv
    convs = await a.list_conversations()
    assert [x.conv for x in convs] == [new, old]
    assert (convs[1].last_seq, convs[1].read, convs[1].last.body) == (2, 2, "older than the stream")


async def test_rate_limited_per_user(deploy):
    """conv_list_per_min: a client asking in a loop gets rate_limited (retry)
    instead of keeping the sequencer busy; a reconnect does not refill it."""
    d = await deploy(conv_list_per_min=4)  # 2 at once
    alice = unique("alice")
    raw = await d.raw(alice)
    for ref in ("a", "b"):
        await raw.send({"type": "conv.list", "id": ref})
        assert (await raw.reply(ref))["type"] == "conv.list"
    await raw.send({"type": "conv.list", "id": "c"})
    err = await raw.reply("c")
    assert (err["type"], err["code"], err["retry"]) == ("error", "rate_limited", True)
    await raw.close()
    again = await d.raw(alice)
    await again.send({"type": "conv.list", "id": "d"})
    assert (await again.reply("d"))["code"] == "rate_limited"
    other = await d.raw(unique("bob"))  # per user: others are not affected
    await other.send({"type": "conv.list", "id": "e"})
    assert (await other.reply("e"))["type"] == "conv.list"
