"""Bad input to the issue-4 frames (push.register, presence.watch, read,
receipts, typing), end to end over a real WebSocket: each gets an ``error``
frame with a stable code (and the frame's ``id`` as ``ref`` when it had
one), nothing is stored, and the connection stays usable.

One deployment (sequencer, edge, presence tracker, pusher with the log
provider) serves the whole table; every case uses fresh users.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Callable

import pytest

from tests.e2e.helpers import deployment, unique
from tests.e2e.issue4_helpers import kind, nothing


@pytest.fixture(scope="module")
async def dep(nats_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("issue4-bad")
    async with deployment(tmp, nats_server.url, roles=("sequencer", "edge", "presence", "pusher")) as d:
        yield d


@dataclass
class World:
    alice: str  # the one sending the bad frame
    bob: str
    carol: str  # not a member of conv
    conv: str  # 1:1 of alice and bob holding one message (seq 1)
    other: str  # 1:1 of bob and carol: alice is not a member


@dataclass
class Case:
    frame: Callable[[World], Any]
    code: str
    ref: str | None = "bad-1"  # the frame's id, echoed in the error
    checks: tuple[str, ...] = ()  # what must not have been stored: devices, marks, watch


R = "bad-1"
WEBPUSH_HTTP = '{"endpoint":"http://push.example/x","keys":{"p256dh":"AA","auth":"BB"}}'

CASES = {
    # push.register: validated at the edge, again by the pusher; nothing stored
    "register_unknown_platform": Case(lambda w: {"type": "push.register", "platform": "sms", "token": "ab" * 32,
                                                 "id": R}, "unknown_platform", checks=("devices",)),
    "register_apns_not_hex": Case(lambda w: {"type": "push.register", "platform": "apns", "token": "zz" * 32,
                                             "id": R}, "bad_token", checks=("devices",)),
    "register_fcm_too_short": Case(lambda w: {"type": "push.register", "platform": "fcm", "token": "short",
                                              "id": R}, "bad_token", checks=("devices",)),
    "register_webpush_not_json": Case(lambda w: {"type": "push.register", "platform": "webpush",
                                                 "token": "not json", "id": R}, "bad_token", checks=("devices",)),
    "register_webpush_http": Case(lambda w: {"type": "push.register", "platform": "webpush",
                                             "token": WEBPUSH_HTTP, "id": R}, "bad_token", checks=("devices",)),
    "register_token_not_string": Case(lambda w: {"type": "push.register", "platform": "apns", "token": 7,
                                                 "id": R}, "bad_frame", checks=("devices",)),
    # presence.watch: one malformed id rejects the whole frame (bob is not watched either)
    "watch_wildcard": Case(lambda w: {"type": "presence.watch", "users": [w.bob, "a.>"], "id": R}, "invalid_id",
                           checks=("watch",)),
    "watch_space": Case(lambda w: {"type": "presence.watch", "users": ["a b", w.bob], "id": R}, "invalid_id",
                        checks=("watch",)),
    "watch_too_long": Case(lambda w: {"type": "presence.watch", "users": ["u" * 65], "id": R}, "invalid_id"),
    "watch_not_a_list": Case(lambda w: {"type": "presence.watch", "users": w.bob, "id": R}, "bad_frame",
                             checks=("watch",)),
    # read: seq beyond the conversation's last, not a member, no such conversation, malformed
    "read_beyond_last": Case(lambda w: {"type": "read", "conv": w.conv, "seq": 99, "id": R}, "invalid_seq",
                             checks=("marks",)),
    "read_not_member": Case(lambda w: {"type": "read", "conv": w.other, "seq": 1, "id": R}, "not_member",
                            checks=("marks",)),
    "read_no_such_conv": Case(lambda w: {"type": "read", "conv": unique("nope"), "seq": 1, "id": R}, "not_found"),
    "read_negative": Case(lambda w: {"type": "read", "conv": w.conv, "seq": -1, "id": R}, "bad_frame",
                          checks=("marks",)),
    "read_conv_wildcard": Case(lambda w: {"type": "read", "conv": "c.>", "seq": 1, "id": R}, "invalid_id"),
    # receipts query and typing in someone else's conversation
    "receipts_not_member": Case(lambda w: {"type": "receipts", "conv": w.other, "id": R}, "not_member"),
    "typing_not_member": Case(lambda w: {"type": "typing", "conv": w.other}, "not_member", ref=None),
}


async def world(dep) -> World:
    alice, bob, carol = unique("alice"), unique("bob"), unique("carol")
    b = await dep.raw(bob)
    conv = (await b.send_msg(id="w1", to=alice, body="hi alice"))["conv"]
    other = (await b.send_msg(id="w2", to=carol, body="hi carol"))["conv"]
    await b.close()
    return World(alice, bob, carol, conv, other)


async def marks(dep, conv: str) -> dict[str, tuple[int, int]]:
    return {w.user: (w.delivered, w.read) for w in await dep.fab.store.watermarks(conv)}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_bad_input_answers_error_stores_nothing(dep, case):
    w = await world(dep)
    before = {c: await marks(dep, c) for c in (w.conv, w.other)}
    a = await dep.raw(w.alice)
    await a.send(case.frame(w))
    err = await a.expect("error")
    assert (err["code"], err["ref"], err["retry"]) == (case.code, case.ref, False), err
    assert err["message"]  # a human-readable reason

    # the connection is still usable
    sent = await a.send_msg(id="after-1", conv=w.conv, body="still here")
    assert sent["seq"] == 2
    assert len([f for f in a.frames if f["type"] == "error"]) == 1  # one error, for the bad frame only

    if "devices" in case.checks:
        assert await dep.fab.components["pusher"].devices.tokens_of(w.alice) == []
    if "marks" in case.checks:
        await asyncio.sleep(0.15)  # past the receipts' 50 ms coalescing tick
        after = {c: await marks(dep, c) for c in (w.conv, w.other)}
        # alice is not in `other`: nothing of hers is stored there (bob's own
        # watermark from his "hi carol" may land meanwhile: sending marks read)
        assert w.alice not in after[w.other]
        # in `conv`, bob's read watermark did not move (alice's bad read is hers only)
        assert after[w.conv].get(w.bob, (0, 0))[1] == before[w.conv].get(w.bob, (0, 0))[1] or \
            after[w.conv][w.bob][1] == 1  # his own "hi alice" (seq 1), stored within a second
        # alice's read watermark can only come from her own "still here" (seq
        # 2: sending marks read, stored within a second); the bad read stored nothing
        assert after[w.conv].get(w.alice, (0, 0))[1] in (0, 2)
    if "watch" in case.checks:
        b = await dep.raw(w.bob)  # bob comes online: alice must not hear of it
        await nothing(a, kind("presence"), wait=0.4)
        await b.close()
