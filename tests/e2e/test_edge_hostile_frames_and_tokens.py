"""Issue 8 at the edge, black-box over real sockets and a real nats-server:
bad input (deep JSON, impossible cursors) gets an error frame and costs
nothing else; a cursor ahead of INBOX resyncs instead of silently dropping
live messages; a resync is followed by exactly one ``synced``; token time
claims are numbers, honoured with the 5 s leeway, and a socket ends when its
token expires.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

import jwt
import nats
import pytest

from switchboard.bus import streams
from switchboard_client import Client, ClientError, ConnectionLost
from tests.e2e.helpers import STEP, Raw, unique, until

MAX_FRAME = 16384  # room for JSON nested past the decoder's recursion limit (~1000)
DEEP = 2000


@pytest.fixture(scope="module")
async def dep(deploy_module):
    # No path tick: "a cursor just ahead of INBOX" must stay ahead while the
    # test says hello, and a tick stored meanwhile would make it a real sequence.
    return await deploy_module(max_frame_bytes=MAX_FRAME, max_body_bytes=1024, tick_interval=0.0)


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


# ---------------------------------------------------------------- item 5: impossible cursors

@dataclass(frozen=True)
class CursorCase:
    name: str
    cursor: object  # sent as JSON as is


BAD_CURSORS = [
    CursorCase("negative", -1),
    CursorCase("two_pow_63", 2**63),
    CursorCase("two_pow_64", 2**64),
    CursorCase("huge", 10**30),
    CursorCase("float", 1.5),
    CursorCase("string", "12"),
]


@pytest.mark.parametrize("case", BAD_CURSORS, ids=[c.name for c in BAD_CURSORS])
async def test_hello_cursor_out_of_range_is_bad_frame(dep, case):
    """Issue 8 item 5: a hello cursor outside [0, 2^63) is a bad frame (2^64
    used to reach the INBOX read and close the socket with 1011). The socket
    still waits for a good hello."""
    alice = unique("alice")
    a = await dep.raw(alice, hello=False)
    await a.send(json.dumps({"type": "hello", "cursor": case.cursor, "epoch": None}))
    err = await a.expect("error")
    assert (err["code"], err["retry"]) == ("bad_frame", False), err
    await a.hello()
    await still_works(dep, a, alice)


@pytest.mark.parametrize("ahead", [1, 1000, None], ids=["just_ahead", "far_ahead", "max"])
async def test_hello_cursor_ahead_of_inbox_resyncs_and_delivers_live(dep, ahead):
    """Issue 8 item 5: a cursor ahead of everything INBOX holds used to be
    echoed in synced, and every live entry (all at or below it) was then
    dropped on that socket: silent loss. It gets resync (from the current
    end), one synced, and live messages arrive."""
    alice, bob = unique("alice"), unique("bob")
    b0 = await dep.raw(bob)
    epoch = b0.welcome["epoch"]
    await b0.close()
    cursor = 2**63 - 1 if ahead is None else await inbox_last_seq(dep.settings) + ahead
    b = await dep.raw(bob, hello=False)
    await b.send({"type": "hello", "cursor": cursor, "epoch": epoch})
    resync = await b.expect("resync")
    assert resync["reason"] == "cursor_unknown"
    assert resync["cursor"] < cursor
    synced = await b.expect("synced")
    assert synced["cursor"] == resync["cursor"]
    a = await dep.raw(alice)
    sent = await a.send_msg(id=unique("m"), to=bob, body="are you there")
    [m] = await b.wait_msgs(1)
    assert m["seq"] == sent["seq"] and m["cursor"] > synced["cursor"]


async def test_hello_cursor_just_delivered_is_not_ahead(dep):
    """The other side of the check above: a client that reconnects at once
    with the cursor of the entry it just got live (the edge's cached INBOX
    bounds may predate it) resumes normally, without a resync."""
    alice, bob = unique("alice"), unique("bob")
    b = await dep.raw(bob)
    a = await dep.raw(alice)
    for i in range(3):
        await a.send_msg(id=unique("m"), to=bob, body=f"m{i}")
        [*_, m] = await b.wait_msgs(i + 1)
        b2 = await dep.raw(bob, hello=False)
        await b2.send({"type": "hello", "cursor": m["cursor"], "epoch": b.welcome["epoch"]})
        synced = await b2.expect("synced")
        assert synced["cursor"] == m["cursor"]
        assert not [f for f in b2.frames if f["type"] == "resync"]
        await b2.close()


# ---------------------------------------------------------------- item 9: one synced

@pytest.mark.parametrize("how", ["epoch_changed", "cursor_unknown"])
async def test_resync_is_followed_by_exactly_one_synced(dep, how):
    """Issue 8 item 9: after a resync the client got two synced frames (the
    resync sent one and the hello another). It gets exactly one, after the
    resync."""
    bob = unique("bob")
    b = await dep.raw(bob, hello=False)
    hello = {"type": "hello", "cursor": 0, "epoch": "not-this-stream"} if how == "epoch_changed" else \
        {"type": "hello", "cursor": 2**62, "epoch": None}
    await b.send(hello)
    assert (await b.expect("resync"))["reason"] == how
    await b.expect("synced")
    await asyncio.sleep(0.5)
    types = [f["type"] for f in b.frames]
    assert types.count("synced") == 1, types
    assert types.index("resync") < types.index("synced")


# ---------------------------------------------------------------- item 8: tokens

def signed(dep, **claims) -> str:
    return jwt.encode({"sub": unique("t"), **claims}, dep.settings.jwt_secret, algorithm="HS256")


async def ended_for_good(c: Client) -> ClientError | None:
    """The error that ended an SDK client for good, as its public
    ``wait_synced`` reports it (None while it is connected or reconnecting)."""
    try:
        await c.wait_synced(0.05)
    except ConnectionLost:
        return None
    except ClientError as exc:
        return exc
    return None


async def closed_with(r: Raw, timeout: float = STEP) -> tuple[int, str]:
    await asyncio.wait_for(r.closed.wait(), timeout)
    return r.ws.close_code, r.ws.close_reason


NON_NUMERIC = {  # name: (claims, what the close reason names)
    "exp_string": (lambda: {"exp": str(int(time.time()) + 3600)}, "exp is not a number"),
    "exp_bool": (lambda: {"exp": True}, "exp is not a number"),
    "exp_null": (lambda: {"exp": None}, "exp is missing"),
    "exp_huge_int": (lambda: {"exp": 10**400}, "exp is out of range"),
    "iat_string": (lambda: {"exp": int(time.time()) + 3600, "iat": str(int(time.time()))}, "iat is not a number"),
    "nbf_string": (lambda: {"exp": int(time.time()) + 3600, "nbf": "0"}, "nbf is not a number"),
    "nbf_null": (lambda: {"exp": int(time.time()) + 3600, "nbf": None}, "nbf is not a number"),
}


@pytest.mark.parametrize("name", list(NON_NUMERIC))
async def test_token_time_claims_must_be_numbers(dep, name):
    """Issue 8 item 8: a string exp ("exp": "1790000000") was accepted (PyJWT
    converts it). exp, iat and nbf (when present) must be JSON numbers; any
    other token is refused with 4001 at the handshake."""
    claims, why = NON_NUMERIC[name]
    r = await dep.raw(token=signed(dep, **claims()), hello=False)
    code, reason = await closed_with(r)
    assert (code, reason) == (4001, f"token invalid: {why}")
    assert not [f for f in r.frames if f["type"] == "welcome"]


async def test_token_accepted_within_leeway_then_socket_closed_when_it_expires(dep):
    """Issue 8 item 8: the documented 5 s leeway was not applied as
    documented (PyJWT truncates exp: a token 4.x s past exp was refused), and
    a socket kept working after its token expired (tokens live 30 days by
    default). A token 4 s past exp is accepted, works, and the socket is
    closed with 4001 "token expired" once exp + 5 s has passed (one
    edge-wide timer), while a socket with a valid token stays."""
    # exp just below a whole second: PyJWT's int(exp) loses ~1 s
    await until(lambda: time.time() % 1 <= 0.3, 2, "the first 0.3 s of a second", every=0.05)
    exp = float(int(time.time()) - 4) - 0.01  # 4.0-4.3 s ago; accepted until exp + 5
    user, other = unique("late"), unique("ok")
    keeper = await dep.raw(other)
    r = await dep.raw(token=signed(dep, sub=user, exp=exp))
    sent = await r.send_msg(id=unique("m"), to=other, body="still valid")
    await keeper.expect("msg", seq=sent["seq"])
    code, reason = await closed_with(r, timeout=3)
    ended = time.time()
    assert (code, reason) == (4001, "token expired")
    assert exp + 5 <= ended < exp + 5 + 1.5
    await keeper.send_msg(id=unique("m"), to=user, body="the other socket is fine")
    assert not keeper.closed.is_set()


# ---------------------------------------------------------------- item 4: sockets per user

async def test_socket_beyond_the_per_user_limit_closes_the_oldest_4010(deploy):
    """Issue 8 item 4: a user may hold max_sockets_per_user sockets on an
    edge; one more closes the user's oldest with 4010. The SDK takes 4010 as
    final (reconnecting would close another of the user's sockets in turn),
    and the newer sockets keep working."""
    d = await deploy(max_sockets_per_user=2)
    user, other = unique("u"), unique("o")
    oldest = await d.sdk(user)
    mid = await d.raw(user)
    newest = await d.raw(user)
    err = await until(lambda: ended_for_good(oldest), STEP, "the oldest socket closed for good")
    assert err.code == "replaced" and "too many connections" in str(err)
    await asyncio.sleep(0.5)
    assert oldest.reconnects == 0  # no reconnect: it would close mid in turn
    o = await d.raw(other)
    sent = await o.send_msg(id=unique("m"), to=user, body="both newer sockets get it")
    for r in (mid, newest):
        await r.expect("msg", seq=sent["seq"])
        assert not r.closed.is_set()
    replaced = "switchboard_edge_sockets_replaced_total"
    assert (await d.metrics(replaced))[replaced] == 1
