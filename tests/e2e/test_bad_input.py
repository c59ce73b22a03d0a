"""Bad input gets a clear answer and loses nothing (raw WebSockets, real NATS).

For every case: the stable error code (or close code, for auth) is asserted;
afterwards the SAME connection still sends and receives, and an unrelated pair
of clients exchanging messages at the same time was not disturbed.

The second table covers the frames around messages (push.register,
presence.watch, read, receipts, typing): each gets an ``error`` frame with a
stable code (and the frame's ``id`` as ``ref`` when it had one), nothing is
stored, and the connection stays usable.

One deployment (sequencer, edge, presence tracker, pusher with the log
provider) serves both tables; every case uses fresh users.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from switchboard import auth
from tests.e2e.helpers import STEP, Raw, kind, seqs, unique

MAX_FRAME = 4096  # small limits so oversize cases stay cheap
MAX_BODY = 1024
# Receipts are coalesced this long by the edge, then by the sequencer: set
# here so the checks that nothing was stored wait for a known time.
RECEIPT_TICK = 0.02


@pytest.fixture(scope="module")
async def dep(deploy_module):
    return await deploy_module(roles=("sequencer", "edge", "presence", "pusher"), max_frame_bytes=MAX_FRAME,
                               max_body_bytes=MAX_BODY, rate_per_sec=1000.0, rate_burst=1000,
                               edge_receipt_flush_sec=RECEIPT_TICK, sequencer_receipt_flush_sec=RECEIPT_TICK)


@pytest.fixture(scope="module")
async def store(dep):
    """The deployment's store, read by the checks that nothing was stored."""
    return await dep.store()


@pytest.fixture(scope="module")
async def foreign_group(dep):
    """A group that the test users are not members of."""
    x = await dep.sdk(unique("x"))
    return (await x.create_conversation([unique("y")])).conv


@dataclass(frozen=True)
class Case:
    name: str
    frame: Callable[[dict], Any]  # ctx -> str (sent as is) or dict (JSON-encoded)
    code: str
    ref: str | None = None


def send(**kw: Any) -> Callable[[dict], dict]:
    def make(ctx: dict) -> dict:
        f = {"type": "send"}
        for k, v in kw.items():
            f[k] = v(ctx) if callable(v) else v
        return f
    return make


BOB = lambda ctx: ctx["bob"]  # noqa: E731

CASES = [
    Case("malformed_json", lambda c: '{"type": "send", "id": ', "bad_json"),
    Case("not_json_at_all", lambda c: "hello there", "bad_json"),
    Case("json_array", lambda c: "[1, 2, 3]", "bad_frame"),
    Case("unknown_type", lambda c: {"type": "dance", "id": "u1"}, "unknown_type", "u1"),
    Case("missing_type", lambda c: {"id": "u2", "body": "x"}, "unknown_type", "u2"),
    Case("send_missing_body", send(id="m1", to=BOB), "bad_frame", "m1"),
    Case("send_missing_id", send(to=BOB, body="x"), "bad_frame"),
    Case("send_neither_conv_nor_to", send(id="m2", body="x"), "bad_frame", "m2"),
    Case("send_both_conv_and_to", send(id="m3", body="x", to=BOB, conv="c1"), "bad_frame", "m3"),
    Case("send_wrong_field_type", send(id="m4", body=5, to=BOB), "bad_frame", "m4"),
    Case("ack_negative", lambda c: {"type": "ack", "cursor": -1}, "bad_frame"),
    Case("oversized_frame", send(id="big", to=BOB, body="x" * (MAX_FRAME + 100)), "frame_too_large", "big"),
    Case("oversized_body", send(id="fat", to=BOB, body="é" * (MAX_BODY // 2 + 1)), "limit_exceeded", "fat"),
    Case("conv_with_dot", send(id="i1", conv="a.b", body="x"), "invalid_id", "i1"),
    Case("conv_with_star", send(id="i2", conv="*", body="x"), "invalid_id", "i2"),
    Case("conv_with_gt", send(id="i3", conv=">", body="x"), "invalid_id", "i3"),
    Case("conv_with_space", send(id="i4", conv="a b", body="x"), "invalid_id", "i4"),
    Case("to_with_dot", send(id="i5", to="bob.>", body="x"), "invalid_id", "i5"),
    Case("to_with_star", send(id="i6", to="*", body="x"), "invalid_id", "i6"),
    Case("to_with_gt", send(id="i7", to=">", body="x"), "invalid_id", "i7"),
    Case("to_with_space", send(id="i8", to="bo b", body="x"), "invalid_id", "i8"),
    Case("id_with_dot", send(id="a.b", to=BOB, body="x"), "invalid_id", "a.b"),
    Case("id_with_star", send(id="*", to=BOB, body="x"), "invalid_id", "*"),
    Case("id_with_gt", send(id=">", to=BOB, body="x"), "invalid_id", ">"),
    Case("id_with_space", send(id="a b", to=BOB, body="x"), "invalid_id", "a b"),
    Case("id_empty", send(id="", to=BOB, body="x"), "invalid_id", ""),
    Case("id_too_long", send(id="x" * 65, to=BOB, body="x"), "invalid_id", "x" * 65),
    Case("conv_create_bad_member", lambda c: {"type": "conv.create", "members": ["a.>"], "id": "cc1"},
         "invalid_id", "cc1"),
    Case("conv_create_no_member", lambda c: {"type": "conv.create", "members": [], "id": "cc2"}, "bad_frame", "cc2"),
    Case("not_member", send(id="nm", conv=lambda c: c["group"], body="x"), "not_member", "nm"),
    Case("not_found", send(id="nf", conv="no-such-conv", body="x"), "not_found", "nf"),
    Case("hello_twice", lambda c: {"type": "hello", "cursor": None}, "bad_frame"),
]


class Observer:
    """An unrelated pair exchanging messages while a case runs."""

    def __init__(self, dep) -> None:
        self.dep = dep

    async def __aenter__(self) -> Observer:
        self.dave, self.erin = unique("dave"), unique("erin")
        self.d = await self.dep.raw(self.dave)
        self.e = await self.dep.raw(self.erin)
        self.sent = 0
        await self.ping()
        return self

    async def ping(self) -> None:
        self.sent += 1
        await self.d.send_msg(id=f"obs{self.sent}", to=self.erin, body="still here")

    async def __aexit__(self, *exc: object) -> None:
        if exc[0] is None:
            await self.ping()
            await self.e.wait_msgs(self.sent)
            await asyncio.sleep(0.1)
            assert seqs(self.e.msgs()) == list(range(1, self.sent + 1))
            assert not [f for f in self.d.frames + self.e.frames if f["type"] == "error"]
            assert not self.d.closed.is_set() and not self.e.closed.is_set()
        await self.d.close()
        await self.e.close()


async def good_send_works(dep, a: Raw, alice: str, bob: Raw, bob_user: str) -> None:
    """The connection that sent bad input still works both ways, and nothing
    of the bad input reached the correspondent."""
    sent = await a.send_msg(id=unique("ok"), to=bob_user, body="good")
    [m] = await bob.wait_msgs(1)
    assert (m["seq"], m["body"], m["from"]) == (sent["seq"], "good", alice)
    assert sent["seq"] == 1  # nothing of the bad input was stored in that conversation
    await bob.send_msg(id=unique("back"), to=alice, body="reply")
    await a.wait_msgs(2)  # its own message + the reply


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_bad_frame_answered_and_nothing_disturbed(dep, foreign_group, case):
    alice, bob_user = unique("alice"), unique("bob")
    async with Observer(dep):
        a = await dep.raw(alice)
        bob = await dep.raw(bob_user)
        ctx = {"bob": bob_user, "group": foreign_group}
        await a.send(case.frame(ctx))
        err = await a.expect("error")
        assert err["code"] == case.code, err
        assert err["ref"] == case.ref, err
        assert err["retry"] is False and err["message"]
        await good_send_works(dep, a, alice, bob, bob_user)
        assert [f["code"] for f in a.frames if f["type"] == "error"] == [case.code]  # exactly one answer
        assert not a.closed.is_set()


async def test_frames_before_hello(dep):
    alice, bob_user = unique("alice"), unique("bob")
    async with Observer(dep):
        bob = await dep.raw(bob_user)
        a = await dep.raw(alice, hello=False)
        await a.send({"type": "send", "id": "early", "to": bob_user, "body": "too soon"})
        err = await a.expect("error")
        assert (err["code"], err["ref"], err["retry"]) == ("hello_required", "early", False)
        await a.send("{broken")  # still before hello: the decode error wins
        assert (await a.expect("error"))["code"] == "bad_json"
        await a.hello()
        await good_send_works(dep, a, alice, bob, bob_user)  # "early" was never stored: first seq is 1


async def test_frame_far_above_limit_closes_1009(dep):
    """Above 4x max_frame_bytes the WebSocket layer refuses the frame (close
    1009) before it is buffered; only that connection is affected."""
    async with Observer(dep):
        a = await dep.raw(unique("alice"))
        await a.send(json.dumps({"type": "send", "id": "huge", "to": "bob", "body": "x" * (MAX_FRAME * 5)}))
        await asyncio.wait_for(a.closed.wait(), STEP)
        assert a.ws.close_code == 1009


def _token(secret: str, claims: dict) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


AUTH_CASES = {
    "missing": lambda s: None,
    "empty": lambda s: "",
    "garbage": lambda s: "not-a-jwt",
    "forged": lambda s: auth.issue("a-different-secret-that-is-long-enough-for-hs256", "mallory"),
    "expired": lambda s: auth.issue(s, "mallory", ttl_sec=-3600),
    "no_exp": lambda s: _token(s, {"sub": "mallory"}),
    "bad_subject": lambda s: _token(s, {"sub": "a.>", "exp": int(time.time()) + 60}),
    "alg_none": lambda s: jwt.encode({"sub": "mallory", "exp": int(time.time()) + 60}, None, algorithm="none"),
}


@pytest.mark.parametrize("how", list(AUTH_CASES))
@pytest.mark.parametrize("where", ["query", "header"])
async def test_bad_token_closed_4001(dep, how, where):
    async with Observer(dep):
        tok = original = AUTH_CASES[how](dep.settings.jwt_secret)
        kw = {}
        if where == "header" and tok is not None:
            kw["additional_headers"] = {"Authorization": f"Bearer {tok}"}
            tok = None
        try:
            r = await dep.raw(token=tok, hello=False, **kw)
        except InvalidStatus as exc:  # refusing before the upgrade would be acceptable too
            raise AssertionError(f"expected close 4001 after upgrade, got HTTP {exc.response.status_code}") from exc
        with pytest.raises(ConnectionClosed):
            await r.send({"type": "hello", "cursor": None})
            await asyncio.wait_for(r.closed.wait(), STEP)
            await r.ws.send("{}")
        assert r.ws.close_code == 4001, (r.ws.close_code, r.ws.close_reason)
        assert r.ws.close_reason  # says what was wrong...
        assert not original or original not in r.ws.close_reason  # ...never echoes the token
        assert not [f for f in r.frames if f["type"] in ("welcome", "msg")]


async def test_rate_limited(deploy):
    d = await deploy(rate_per_sec=2.0, rate_burst=5)
    alice, bob_user = unique("alice"), unique("bob")
    async with Observer(d):
        bob = await d.raw(bob_user)
        a = await d.raw(alice)
        for _ in range(10):
            await a.send({"type": "ack", "cursor": 0})  # acks get no answer: only errors come back
        err = await a.expect("error")
        assert (err["code"], err["retry"]) == ("rate_limited", True)
        n_limited = sum(1 for f in a.frames if f.get("code") == "rate_limited")
        await asyncio.sleep(1.2)  # the bucket refills: 1/rate_per_sec per token
        assert n_limited >= 1
        await good_send_works(d, a, alice, bob, bob_user)


# ---------------------------------------------------------------- receipts, typing, presence, push frames


@dataclass
class World:
    alice: str  # the one sending the bad frame
    bob: str
    carol: str  # not a member of conv
    conv: str  # 1:1 of alice and bob holding one message (seq 1)
    other: str  # 1:1 of bob and carol: alice is not a member


@dataclass
class SignalCase:
    frame: Callable[[World], Any]
    code: str
    ref: str | None = "bad-1"  # the frame's id, echoed in the error
    checks: tuple[str, ...] = ()  # what must not have been stored: devices, marks, watch


R = "bad-1"
WEBPUSH_HTTP = '{"endpoint":"http://push.example/x","keys":{"p256dh":"AA","auth":"BB"}}'

SIGNAL_CASES = {
    # push.register: validated at the edge, again by the pusher; nothing stored
    "register_unknown_platform": SignalCase(lambda w: {"type": "push.register", "platform": "sms", "token": "ab" * 32,
                                                 "id": R}, "unknown_platform", checks=("devices",)),
    "register_apns_not_hex": SignalCase(lambda w: {"type": "push.register", "platform": "apns", "token": "zz" * 32,
                                             "id": R}, "bad_token", checks=("devices",)),
    "register_fcm_too_short": SignalCase(lambda w: {"type": "push.register", "platform": "fcm", "token": "short",
                                              "id": R}, "bad_token", checks=("devices",)),
    "register_webpush_not_json": SignalCase(lambda w: {"type": "push.register", "platform": "webpush",
                                                 "token": "not json", "id": R}, "bad_token", checks=("devices",)),
    "register_webpush_http": SignalCase(lambda w: {"type": "push.register", "platform": "webpush",
                                             "token": WEBPUSH_HTTP, "id": R}, "bad_token", checks=("devices",)),
    "register_token_not_string": SignalCase(lambda w: {"type": "push.register", "platform": "apns", "token": 7,
                                                 "id": R}, "bad_frame", checks=("devices",)),
    # presence.watch: one malformed id rejects the whole frame (bob is not watched either)
    "watch_wildcard": SignalCase(lambda w: {"type": "presence.watch", "users": [w.bob, "a.>"], "id": R}, "invalid_id",
                           checks=("watch",)),
    "watch_space": SignalCase(lambda w: {"type": "presence.watch", "users": ["a b", w.bob], "id": R}, "invalid_id",
                        checks=("watch",)),
    "watch_too_long": SignalCase(lambda w: {"type": "presence.watch", "users": ["u" * 65], "id": R}, "invalid_id"),
    "watch_not_a_list": SignalCase(lambda w: {"type": "presence.watch", "users": w.bob, "id": R}, "bad_frame",
                             checks=("watch",)),
    # read: seq beyond the conversation's last, not a member, no such conversation, malformed
    "read_beyond_last": SignalCase(lambda w: {"type": "read", "conv": w.conv, "seq": 99, "id": R}, "invalid_seq",
                             checks=("marks",)),
    "read_not_member": SignalCase(lambda w: {"type": "read", "conv": w.other, "seq": 1, "id": R}, "not_member",
                            checks=("marks",)),
    "read_no_such_conv": SignalCase(lambda w: {"type": "read", "conv": unique("nope"), "seq": 1, "id": R}, "not_found"),
    "read_negative": SignalCase(lambda w: {"type": "read", "conv": w.conv, "seq": -1, "id": R}, "bad_frame",
                          checks=("marks",)),
    "read_conv_wildcard": SignalCase(lambda w: {"type": "read", "conv": "c.>", "seq": 1, "id": R}, "invalid_id"),
    # receipts query and typing in someone else's conversation
    "receipts_not_member": SignalCase(lambda w: {"type": "receipts", "conv": w.other, "id": R}, "not_member"),
    "typing_not_member": SignalCase(lambda w: {"type": "typing", "conv": w.other}, "not_member", ref=None),
}


async def world(dep) -> World:
    alice, bob, carol = unique("alice"), unique("bob"), unique("carol")
    b = await dep.raw(bob)
    conv = (await b.send_msg(id="w1", to=alice, body="hi alice"))["conv"]
    other = (await b.send_msg(id="w2", to=carol, body="hi carol"))["conv"]
    await b.close()
    return World(alice, bob, carol, conv, other)


async def marks(store, conv: str) -> dict[str, tuple[int, int]]:
    return {w.user: (w.delivered, w.read) for w in await store.watermarks(conv)}


@pytest.mark.parametrize("case", SIGNAL_CASES.values(), ids=SIGNAL_CASES.keys())
async def test_bad_signal_frame_answered_stores_nothing(dep, store, case):
    w = await world(dep)
    before = {c: await marks(store, c) for c in (w.conv, w.other)}
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
        assert await dep.component("pusher").devices.tokens_of(w.alice) == []
    if "marks" in case.checks:
        await asyncio.sleep(5 * 2 * RECEIPT_TICK)  # well past both coalescing ticks: a write would have landed
        after = {c: await marks(store, c) for c in (w.conv, w.other)}
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
        await a.nothing(kind("presence"), wait=0.4)
        await b.close()
