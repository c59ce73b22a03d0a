"""``Client.next_event`` / ``next_message`` with a timeout (docs/sdk.md).

An application loop waits with a timeout to do other work in between: the
wait must end with ``TimeoutError`` close to the timeout when nothing comes,
and a timed-out wait must not swallow the frame that arrives after it.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from switchboard import frames
from tests.e2e.helpers import unique


@pytest.fixture
async def dep(deploy):
    return await deploy()


@pytest.mark.parametrize("wait", ["next_event", "next_message"])
async def test_timeout_then_the_next_frame_still_arrives(dep, wait):
    alice, bob = unique("alice"), unique("bob")
    a, b = await dep.sdk(alice), await dep.sdk(bob)
    sent = await b.send(to=alice, body="hello")
    await a.next_message(5)  # the dm exists for both: typing is allowed
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        await getattr(a, wait)(timeout=0.3)
    assert 0.25 <= time.monotonic() - t0 < 3.0
    if wait == "next_event":
        await b.typing(sent.conv)
        ev = await a.next_event(timeout=5)
        while not isinstance(ev, frames.TypingEvent):  # a receipt may come first
            ev = await a.next_event(timeout=5)
        assert (ev.conv, ev.user) == (sent.conv, bob)
    else:
        await b.send(conv=sent.conv, body="after the timeout")
        assert (await a.next_message(timeout=5)).body == "after the timeout"


async def test_no_timeout_waits(dep):
    """``timeout=None`` (the default) waits for as long as it takes."""
    alice, bob = unique("alice"), unique("bob")
    a, b = await dep.sdk(alice), await dep.sdk(bob)
    waiter = asyncio.ensure_future(a.next_message())
    await asyncio.sleep(0.5)
    assert not waiter.done()
    await b.send(to=alice, body="finally")
    assert (await asyncio.wait_for(waiter, 5)).body == "finally"
