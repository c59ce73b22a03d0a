"""Per-user bounds on group creation and fan-out (issue 8, item 9).

Seen on main: ``conv.create`` with 500 made-up ids plus 100 sends wrote
50,000 INBOX and 49,900 PUSH entries in 3.5 s. Now a user may create
``max_groups_per_min`` groups a minute and cause ``max_fanout_per_min``
message copies a minute (each send costs its conversation's members); over
either bound the request is answered ``rate_limited`` with retry true, and
nothing is stored. Small bounds here so that the tests stay light; the
buckets refill far slower than the tests run.
"""

from __future__ import annotations

import msgspec
import nats

from switchboard import events
from tests.e2e.helpers import stream_msgs, unique


async def test_group_creation_is_bounded_per_user(deploy):
    """Protects item 9: a user could create groups without bound."""
    dep = await deploy(max_groups_per_min=3)
    alice, bob = unique("alice"), unique("bob")
    a = await dep.raw(alice)
    for i in range(3):
        await a.send({"type": "conv.create", "members": [unique("m") for _ in range(3)], "id": f"c{i}"})
        assert (await a.reply(f"c{i}"))["type"] == "conv"
    await a.send({"type": "conv.create", "members": [unique("m") for _ in range(500)], "id": "c3"})
    err = await a.reply("c3")
    assert (err["type"], err["code"], err["retry"]) == ("error", "rate_limited", True), err
    assert len(await (await dep.store()).conversations_of(alice)) == 3  # the refused one was not made
    # Another user has a bucket of its own.
    b = await dep.raw(bob)
    await b.send({"type": "conv.create", "members": [alice], "id": "b0"})
    assert (await b.reply("b0"))["type"] == "conv"
    # A backend service that names its group is not counted against the creator.
    nc = await nats.connect(dep.settings.nats_url)
    try:
        req = events.ConvCreateRequest(creator=alice, members=[bob], conv=unique("svc"))
        msg = await nc.request(dep.settings.subjects.api("conv", "create"), events.encode(req), timeout=5)
        reply = msgspec.json.decode(msg.data, type=events.ConvReply)
        assert reply.error is None and reply.conv == req.conv, reply
    finally:
        await nc.close()


async def test_fanout_is_bounded_per_sender(deploy):
    """Protects item 9: the copies one user's sends cause are bounded per
    minute (checked in the sequencer pipeline): with a bound of 10 copies, a
    member of a 5-member group sends twice, the third send is refused with
    rate_limited (retry) and not stored, while another member still sends."""
    dep = await deploy(max_fanout_per_min=10)
    alice, bob = unique("alice"), unique("bob")
    a = await dep.raw(alice)
    await a.send({"type": "conv.create", "members": [bob, unique("m"), unique("m"), unique("m")], "id": "c"})
    conv = (await a.reply("c"))["conv"]
    await a.send_msg(id="m1", conv=conv)
    await a.send_msg(id="m2", conv=conv)
    await a.send({"type": "send", "id": "m3", "conv": conv, "body": "x"})
    err = await a.reply("m3")
    assert (err["type"], err["code"], err["retry"]) == ("error", "rate_limited", True), err
    # A 1:1 costs 2: still over the bound for alice.
    await a.send({"type": "send", "id": "d1", "to": bob, "body": "x"})
    assert (await a.reply("d1"))["code"] == "rate_limited"
    b = await dep.raw(bob)
    assert (await b.send_msg(id="b1", conv=conv))["seq"] == 3
    stored = await stream_msgs(dep.settings, conv)
    assert [(m.seq, m.from_, m.id) for m in stored] == [(1, alice, "m1"), (2, alice, "m2"), (3, bob, "b1")]
