"""Issue 8 units: token time claims (numbers, 5 s leeway both ways) with an
injected clock, and edge.deadlines (one heap and one timer for every
socket's token expiry)."""

from __future__ import annotations

import asyncio
import time

import jwt
import pytest

from edge.deadlines import COMPACT_MIN_DEAD, Deadlines
from switchboard import auth
from switchboard.errors import AuthError

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
    scheduled = getattr(loop, "_scheduled", None)
    if scheduled is None:
        pytest.skip("this event loop does not expose its timers")
    before_tasks, before_timers = len(asyncio.all_tasks()), len(scheduled)
    d: Deadlines[int] = Deadlines(lambda i: None)
    now = time.time()
    for i in range(1000):
        d.add(i, now + 3600 - i)
    assert len(asyncio.all_tasks()) == before_tasks
    assert len([h for h in scheduled if not h.cancelled()]) - before_timers <= 1
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
