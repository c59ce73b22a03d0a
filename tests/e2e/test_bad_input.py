"""Bad input gets a clear answer and loses nothing (raw WebSockets, real NATS).

For every case: the stable error code (or close code, for auth) is asserted;
afterwards the SAME connection still sends and receives, and an unrelated pair
of clients exchanging messages at the same time was not disturbed.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any, Callable

import jwt
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from switchboard import auth
from tests.e2e.helpers import STEP, Raw, deployment, seqs, unique

MAX_FRAME = 4096  # small limits so oversize cases stay cheap
MAX_BODY = 1024


@pytest.fixture(scope="module")
async def dep(nats_server, tmp_path_factory):
    async with deployment(tmp_path_factory.mktemp("bad"), nats_server.url, max_frame_bytes=MAX_FRAME,
                          max_body_bytes=MAX_BODY, rate_per_sec=1000.0, rate_burst=1000) as d:
        yield d


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

    async def __aenter__(self) -> "Observer":
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
            r = await Raw.open(dep.url, tok, **kw)
        except InvalidStatus as exc:  # refusing before the upgrade would be acceptable too
            raise AssertionError(f"expected close 4001 after upgrade, got HTTP {exc.response.status_code}")
        dep._raws.append(r)
        with pytest.raises(ConnectionClosed):
            await r.send({"type": "hello", "cursor": None})
            await asyncio.wait_for(r.closed.wait(), STEP)
            await r.ws.send("{}")
        assert r.ws.close_code == 4001, (r.ws.close_code, r.ws.close_reason)
        assert r.ws.close_reason  # says what was wrong...
        assert not original or original not in r.ws.close_reason  # ...never echoes the token
        assert not [f for f in r.frames if f["type"] in ("welcome", "msg")]


async def test_rate_limited(nats_server, tmp_path):
    async with deployment(tmp_path, nats_server.url, rate_per_sec=2.0, rate_burst=5) as d:
        alice, bob_user = unique("alice"), unique("bob")
        async with Observer(d):
            bob = await d.raw(bob_user)
            a = await d.raw(alice)
            for i in range(10):
                await a.send({"type": "ack", "cursor": 0})  # acks get no answer: only errors come back
            err = await a.expect("error")
            assert (err["code"], err["retry"]) == ("rate_limited", True)
            n_limited = sum(1 for f in a.frames if f.get("code") == "rate_limited")
            await asyncio.sleep(1.2)  # the bucket refills
            assert n_limited >= 1
            await good_send_works(d, a, alice, bob, bob_user)
