"""The SDK acks (and so makes *delivered* receipts) only when it is asked to.

With ``auto_ack=False`` the application acks itself, e.g. after it stored a
message: closing the client must not ack on its behalf (it did, so a sender
saw *delivered* for a message the app never confirmed). The ``True`` row is
the control: the same flow with auto-acks gives the receipt.
"""

from __future__ import annotations

import asyncio

import pytest

from switchboard import frames
from tests.e2e.helpers import unique, until


@pytest.fixture
async def dep(deploy):
    return await deploy()


async def _bob_delivered(a, conv: str, bob: str) -> int:
    """Bob's delivered watermark as alice sees it: a receipts query with an id
    ends with ``ok`` (ref = id); a member with nothing delivered has no receipt."""
    qid = a.new_id()
    await a.send_frame(frames.ReceiptsRequest(conv=conv, id=qid))
    delivered = 0
    while True:
        ev = await a.next_event(timeout=5)
        if isinstance(ev, frames.Receipt) and ev.user == bob and ev.conv == conv:
            delivered = ev.delivered
        elif isinstance(ev, frames.Ok) and ev.ref == qid:
            return delivered


@pytest.mark.parametrize("auto_ack,delivered", [(True, 1), (False, 0)])
async def test_close_acks_only_with_auto_ack(dep, auto_ack, delivered):
    alice, bob = unique("alice"), unique("bob")
    a = await dep.sdk(alice)
    b = await dep.sdk(bob, auto_ack=auto_ack)
    sent = await a.send(to=bob, body="hello")
    assert (await b.next_message(5)).seq == sent.seq
    await b.close()
    if delivered:
        async def acked() -> bool:
            return await _bob_delivered(a, sent.conv, bob) >= sent.seq

        await until(acked, what="bob's delivered receipt")
    else:
        await asyncio.sleep(0.5)  # > the edge's and the sequencer's 50 ms receipt ticks
        assert await _bob_delivered(a, sent.conv, bob) == 0
