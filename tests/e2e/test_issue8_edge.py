"""Issue 8 at the edge, black-box over real sockets and a real nats-server:
bad input (deep JSON, impossible cursors) gets an error frame and costs
nothing else; a cursor ahead of INBOX resyncs instead of silently dropping
live messages; a resync is followed by exactly one ``synced``.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import nats
import pytest

from switchboard.bus import streams
from tests.e2e.helpers import STEP, Raw, deployment, unique

MAX_FRAME = 16384  # room for JSON nested past the decoder's recursion limit (~1000)
DEEP = 2000


@pytest.fixture(scope="module")
async def dep(nats_server, tmp_path_factory):
    async with deployment(tmp_path_factory.mktemp("issue8"), nats_server.url, max_frame_bytes=MAX_FRAME,
                          max_body_bytes=1024) as d:
        yield d


async def still_works(dep, a: Raw, alice: str) -> None:
    """The socket that got the bad input still sends and receives, live."""
    bob = unique("bob")
    b = await dep.raw(bob)
    sent = await a.send_msg(id=unique("ok"), to=bob, body="good")
    [m] = await b.wait_msgs(1)
    assert (m["seq"], m["from"]) == (sent["seq"], alice)
    await b.send_msg(id=unique("back"), to=alice, body="reply")
    await a.expect("msg", body="reply")
    assert not a.closed.is_set()


async def inbox_last_seq(settings) -> int:
    """INBOX's last sequence, read now (the edge caches its own view)."""
    nc = await nats.connect(settings.nats_url)
    try:
        _, inbox, _ = streams.names(settings)
        return (await nc.jetstream().stream_info(inbox)).state.last_seq
    finally:
        await nc.close()


# ---------------------------------------------------------------- item 7: deep JSON

NESTED = {
    "array": "[" * DEEP + "]" * DEEP,
    "object": '{"a":' * DEEP + "1" + "}" * DEEP,
    "in_id": '{"type":"send","id":' + "[" * DEEP + "]" * DEEP + ',"to":"bob","body":"x"}',
    "in_unknown_field": '{"type":"ack","cursor":0,"x":' + "[" * DEEP + "]" * DEEP + "}",
    "in_body": '{"type":"send","id":"d1","to":"bob","body":' + "[" * DEEP + "]" * DEEP + "}",
}


@pytest.mark.parametrize("before_hello", [False, True], ids=["live", "first_frame"])
@pytest.mark.parametrize("name", list(NESTED))
async def test_deeply_nested_json_gets_bad_frame_not_1011(dep, name, before_hello):
    """Issue 8 item 7: JSON nested past the decoder's recursion limit made
    frames.guess_ref raise RecursionError and the edge closed the socket with
    1011. It is a bad frame like any other: an error frame, the socket stays."""
    payload = NESTED[name]
    assert len(payload) < MAX_FRAME
    alice = unique("alice")
    a = await dep.raw(alice, hello=not before_hello)
    await a.send(payload)
    err = await a.expect("error")
    assert (err["code"], err["retry"]) == ("bad_frame", False), err
    assert err["message"]
    if before_hello:
        await a.hello()
    await still_works(dep, a, alice)
    assert [f["code"] for f in a.frames if f["type"] == "error"] == ["bad_frame"]
