"""Issue 8 units: token time claims (numbers, 5 s leeway both ways) with an
injected clock; edge.deadlines (one heap and one timer for every socket's
token expiry); the byte bounds of backed-up sockets (per socket and per
edge) and the sockets-per-user bound, on fake transports."""

from __future__ import annotations

import asyncio
import time
from unittest.mock import MagicMock

import jwt
import pytest

from edge.deadlines import COMPACT_MIN_DEAD, Deadlines
from edge.server import Edge
from edge.transport import CLOSE_SLOW_CONSUMER, WsConfig
from switchboard import auth
from switchboard.config import Settings
from switchboard.errors import AuthError, ConfigError
from tests.unit.test_edge_transport import CONFIG, Peer, close_of, make_server, texts, tick

SECRET = "s" * 40
NOW = 1_800_000_000.0


def tok(**claims) -> str:
    return jwt.encode({"sub": "alice", **claims}, SECRET, algorithm="HS256")


# (name, claims, now, expected error or None). LEEWAY_SEC = 5 either way.
TOKEN_CASES = [
    ("exp_in_future", {"exp": NOW + 60}, NOW, None),
    ("exp_4_9s_ago", {"exp": NOW - 4.9}, NOW, None),
    ("exp_int_4s_ago_fraction", {"exp": int(NOW) - 4}, int(NOW) + 0.99, None),  # PyJWT: 4.99 s past int exp
    ("exp_5_1s_ago", {"exp": NOW - 5.1}, NOW, "token expired"),
    ("exp_float_kept", {"exp": NOW - 4.5}, NOW, None),  # PyJWT truncated it to an int: refused
    ("nbf_4_9s_ahead", {"exp": NOW + 60, "nbf": NOW + 4.9}, NOW, None),
    ("nbf_5_1s_ahead", {"exp": NOW + 60, "nbf": NOW + 5.1}, NOW, "token not yet valid (nbf)"),
    ("iat_4_9s_ahead", {"exp": NOW + 60, "iat": NOW + 4.9}, NOW, None),
    ("iat_5_1s_ahead", {"exp": NOW + 60, "iat": NOW + 5.1}, NOW, "token issued in the future (iat)"),
    ("exp_string", {"exp": str(int(NOW) + 60)}, NOW, "token invalid: exp is not a number"),
    ("exp_bool", {"exp": True}, NOW, "token invalid: exp is not a number"),
    ("exp_list", {"exp": [NOW + 60]}, NOW, "token invalid: exp is not a number"),
    ("exp_missing", {}, NOW, "token invalid: exp is missing"),
    ("exp_too_big", {"exp": 10**400}, NOW, "token invalid: exp is out of range"),
    ("iat_string", {"exp": NOW + 60, "iat": str(int(NOW))}, NOW, "token invalid: iat is not a number"),
    ("nbf_string", {"exp": NOW + 60, "nbf": "0"}, NOW, "token invalid: nbf is not a number"),
    ("nbf_null", {"exp": NOW + 60, "nbf": None}, NOW, "token invalid: nbf is not a number"),
]


@pytest.mark.parametrize("name,claims,now,error", TOKEN_CASES, ids=[c[0] for c in TOKEN_CASES])
def test_token_time_claims(name, claims, now, error):
    """Issue 8 item 8: the 5 s leeway applies to exp, nbf and iat exactly
    (PyJWT truncated exp to an integer), and time claims must be JSON numbers
    (PyJWT accepted numeric strings)."""
    if error is None:
        ident = auth.authenticate(SECRET, tok(**claims), now=now)
        assert ident.user == "alice"
        assert ident.expires_at == pytest.approx(claims["exp"] + auth.LEEWAY_SEC)
    else:
        with pytest.raises(AuthError) as info:
            auth.authenticate(SECRET, tok(**claims), now=now)
        assert info.value.message == error and info.value.code == "unauthorized"


def _raw(header: dict | str, claims: dict | str, secret: str = SECRET) -> str:
    """A token built by hand, signed HS256 over whatever header and payload."""
    import base64
    import hashlib
    import hmac
    import json

    def b64(x: dict | str) -> str:
        raw = (json.dumps(x) if isinstance(x, dict) else x).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    head, body = b64(header), b64(claims)
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{base64.urlsafe_b64encode(sig).rstrip(b'=').decode()}"


_GOOD = {"sub": "alice", "exp": NOW + 60}
# (name, token, expected error). The verifier is our own (PyJWT's decode cost
# 54 µs a token, a tenth of a storm's edge): each row is a way a forged or
# broken token could slip through a hand-written check.
FORGED_CASES = [
    ("alg_none", jwt.encode(_GOOD, None, algorithm="none"), "token invalid: alg must be HS256"),
    ("alg_none_signed_anyway", _raw({"alg": "none", "typ": "JWT"}, _GOOD), "token invalid: alg must be HS256"),
    ("alg_hs512", jwt.encode(_GOOD, SECRET * 2, algorithm="HS512"), "token invalid: alg must be HS256"),
    ("alg_missing", _raw({"typ": "JWT"}, _GOOD), "token invalid: alg must be HS256"),
    ("other_secret", jwt.encode(_GOOD, "t" * 40, algorithm="HS256"), "token signature invalid"),
    ("payload_swapped", ".".join((tok(exp=NOW + 60).split(".")[0], _raw({"alg": "HS256"}, {**_GOOD, "sub": "root"})
                                  .split(".")[1], tok(exp=NOW + 60).split(".")[2])), "token signature invalid"),
    ("signature_cut", tok(exp=NOW + 60)[:-4], "token signature invalid"),
    ("two_parts", ".".join(tok(exp=NOW + 60).split(".")[:2]), "token invalid: not a JWS compact token"),
    ("four_parts", tok(exp=NOW + 60) + ".x", "token invalid: not a JWS compact token"),
    ("header_not_json", _raw("nope", _GOOD), "token invalid: header is not JSON"),
    ("header_a_list", _raw("[1]", _GOOD), "token invalid: header is not a JSON object"),
    ("payload_a_list", _raw({"alg": "HS256"}, "[1]"), "token invalid: payload is not a JSON object"),
    ("payload_not_json", _raw({"alg": "HS256"}, "{"), "token invalid: payload is not JSON"),
    ("sub_null", _raw({"alg": "HS256"}, {"sub": None, "exp": NOW + 60}), "token invalid: sub is missing"),
    ("sub_missing", _raw({"alg": "HS256"}, {"exp": NOW + 60}), "token invalid: sub is missing"),
    ("not_ascii", tok(exp=NOW + 60) + "é", "token invalid: not base64url"),
]


@pytest.mark.parametrize("name,token,error", FORGED_CASES, ids=[c[0] for c in FORGED_CASES])
def test_forged_and_broken_tokens_are_refused(name, token, error):
    with pytest.raises(AuthError) as info:
        auth.authenticate(SECRET, token, now=NOW)
    assert info.value.message == error and info.value.code == "unauthorized"


def test_tokens_other_issuers_make_are_accepted():
    """Extra header fields (typ, kid) and claims pass, as with PyJWT."""
    token = jwt.encode({**_GOOD, "aud": "x", "role": "admin"}, SECRET, algorithm="HS256", headers={"kid": "k1"})
    assert auth.authenticate(SECRET, token, now=NOW).user == "alice"
    assert auth.authenticate(SECRET, _raw({"alg": "HS256"}, _GOOD), now=NOW).user == "alice"


def test_verify_still_returns_the_user():
    assert auth.verify(SECRET, auth.issue(SECRET, "bob")) == "bob"


# ---------------------------------------------------------------- deadlines


async def test_deadlines_fire_in_order_once_and_not_when_discarded():
    fired: list[str] = []
    d: Deadlines[str] = Deadlines(fired.append)
    now = time.time()
    d.add("c", now + 0.15)
    d.add("a", now + 0.05)
    d.add("b", now + 0.10)
    d.add("gone", now + 0.07)
    d.add("moved", now + 0.02)
    d.add("moved", now + 0.12)  # re-adding replaces the deadline
    d.discard("gone")
    await asyncio.sleep(0.3)
    assert fired == ["a", "b", "moved", "c"]
    assert len(d) == 0 and d.heap_size == 0


async def test_deadlines_one_timer_for_many_items():
    """Every socket's expiry shares one timer: no task, no handle per socket."""
    loop = asyncio.get_running_loop()
    made: list[asyncio.TimerHandle] = []
    real_call_later = loop.call_later

    def counting_call_later(*args, **kw):  # every timer armed on this loop while the items are added
        handle = real_call_later(*args, **kw)
        made.append(handle)
        return handle

    before_tasks = len(asyncio.all_tasks())
    d: Deadlines[int] = Deadlines(lambda i: None)
    now = time.time()
    loop.call_later = counting_call_later  # type: ignore[method-assign]
    try:
        for i in range(1000):
            d.add(i, now + 3600 - i)
    finally:
        del loop.call_later  # the loop's own method again
    assert len(asyncio.all_tasks()) == before_tasks
    assert len([h for h in made if not h.cancelled()]) <= 1
    d.close()


async def test_deadlines_heap_does_not_keep_discarded_items():
    """Sockets closed long before their 30-day token expires are not kept."""
    d: Deadlines[int] = Deadlines(lambda i: None)
    now = time.time()
    for round_ in range(20):
        for i in range(500):
            d.add(round_ * 1000 + i, now + 30 * 86400)
        for i in range(500):
            d.discard(round_ * 1000 + i)
    assert len(d) == 0
    assert d.heap_size <= 2 * COMPACT_MIN_DEAD + 2
    d.close()


async def test_deadlines_handler_error_does_not_stop_the_others():
    fired: list[int] = []

    def on_due(i: int) -> None:
        if i == 1:
            raise RuntimeError("boom")
        fired.append(i)

    d: Deadlines[int] = Deadlines(on_due)
    now = time.time()
    for i in range(3):
        d.add(i, now + 0.01 * (i + 1))
    await asyncio.sleep(0.2)
    assert fired == [0, 2]


# ---------------------------------------------------------------- send queue bounds (item 4)

BOUNDED = WsConfig(max_size=4096, outbox_bytes=1000, edge_outbox_bytes=1500, ping_interval=0.0,
                   ping_timeout=0.0, close_timeout=0.05)


async def backed_up(server, buffered: int) -> Peer:
    """A connection whose transport paused with ``buffered`` bytes in it."""
    p = Peer(server)
    await tick()
    p.pull()
    p.t.get_write_buffer_size = lambda: buffered  # type: ignore[method-assign]
    p.conn.pause_writing()
    return p


async def test_socket_bound_counts_what_its_transport_holds():
    """Issue 8 item 4: a socket's bound was its outbox alone, whatever its
    transport had taken before it paused (the hello replay wrote whole
    batches there). Transport buffer + outbox are bounded together."""
    server, handlers = make_server(config=BOUNDED)
    p = await backed_up(server, 800)
    assert p.conn.held_bytes == 800 and server.held == 800
    for _ in range(3):  # 800 + 3 x ~100 B > 1000
        p.conn.send(b"z" * 100)
        await tick()
    assert handlers[0].slow == 1
    assert close_of(p.pull()) == (CLOSE_SLOW_CONSUMER, "slow consumer: reconnect and resume from your cursor")
    assert server.held == 0 and not server.backed


async def test_edge_bound_closes_the_socket_holding_the_most():
    """Issue 8 item 4: over edge_send_queue_bytes the socket holding the most
    is dropped as a slow consumer (4008); the others keep theirs."""
    server, handlers = make_server(config=BOUNDED)
    a = await backed_up(server, 600)
    b = await backed_up(server, 300)
    c = await backed_up(server, 500)
    assert server.held == 1400
    b.conn.send(b"y" * 150)  # 1400 + ~150 > 1500: a (600) goes, not b that grew
    await tick()
    assert [h.slow for h in handlers] == [1, 0, 0]
    assert close_of(a.pull())[0] == CLOSE_SLOW_CONSUMER
    assert server.held == b.conn.held_bytes + c.conn.held_bytes < 1500
    # Resumed: b writes what it held at once and is no longer counted.
    b.t.get_write_buffer_size = lambda: 0  # type: ignore[method-assign]
    b.conn.resume_writing()
    assert texts(b.pull()) == [b"y" * 150]
    assert server.held == 500 and server.backed == {c.conn}
    c.conn.connection_lost(None)
    assert server.held == 0 and not server.backed


async def test_closing_a_backed_up_socket_releases_its_share():
    server, handlers = make_server(config=BOUNDED)
    p = await backed_up(server, 700)
    p.conn.send(b"x" * 100)
    await tick()
    assert server.held > 700
    p.conn.close(4010, "replaced")
    assert server.held == 0 and not server.backed


# ---------------------------------------------------------------- sockets per user (item 4)

@pytest.fixture
async def edge():
    e = Edge(settings=Settings(jwt_secret="s" * 32, max_sockets_per_user=3), nc=MagicMock())
    e.test_server = e.make_server(CONFIG)
    yield e
    for sess in tuple(e.sessions):  # ends their hello timers too
        sess.close(1001, "test over")


async def open_socket(edge, user: str) -> Peer:
    p = Peer(edge.test_server, f"/ws?token={auth.issue(edge.settings.jwt_secret, user)}")
    await tick()
    return p


async def test_sockets_per_user(edge):
    """Issue 8 item 4: one user could open any number of sockets (each
    holding up to send_queue_bytes). Beyond max_sockets_per_user the user's
    oldest socket is closed with 4010; other users are not affected, and a
    socket that ends frees its place."""
    bob = await open_socket(edge, "bob")
    alice = [await open_socket(edge, "alice") for _ in range(5)]
    closes = [close_of(p.pull()) for p in alice]
    replaced = (4010, "too many connections for this user: this, the oldest, was closed")
    assert closes == [replaced, replaced, None, None, None]
    assert close_of(bob.pull()) is None
    assert edge.metrics.registry.get_sample_value("switchboard_edge_sockets_replaced_total") == 2
    for p in alice[:2]:
        p.conn.connection_lost(None)
    alice[2].conn.connection_lost(None)  # one of the three ends: room for one more
    alice.append(await open_socket(edge, "alice"))
    assert [close_of(p.pull()) for p in alice[3:]] == [None, None, None]
    assert sorted(s.user for s in edge.sessions) == ["alice"] * 3 + ["bob"]


# ---------------------------------------------------------------- settings (item 4)

@pytest.mark.parametrize("values,error", [
    ({"send_queue_bytes": 100_000}, "send_queue_bytes must hold at least two maximal frames"),
    ({"max_sockets_per_user": 0}, "max_sockets_per_user must be >= 1"),
    ({"edge_send_queue_bytes": 1024 * 1024 - 1}, "edge_send_queue_bytes must be at least send_queue_bytes"),
])
def test_queue_and_socket_settings_validated(values, error):
    with pytest.raises(ConfigError, match=error):
        Settings(**values)


def test_queue_and_socket_settings_from_environment():
    s = Settings.load(env={"SWITCHBOARD_SEND_QUEUE_BYTES": "262144", "SWITCHBOARD_MAX_SOCKETS_PER_USER": "4",
                           "SWITCHBOARD_EDGE_SEND_QUEUE_BYTES": "8388608"})
    assert (s.send_queue_bytes, s.max_sockets_per_user, s.edge_send_queue_bytes) == (262144, 4, 8388608)
