"""switchboard.tasks.stop_task: stopping loops whose cancel can be lost.

What this protects: a CI teardown hung 120 s in the presence tracker's stop.
Its sweep loop was cancelled while redis-py awaited ``asyncio.wait_for``,
whose Python 3.11 version returns the inner result and drops the cancel
when both land in one loop iteration; the loop swept on and ``await task``
never returned. The last case below builds exactly that race, which
a plain ``task.cancel(); await task`` never ends on 3.11.
"""

from __future__ import annotations

import asyncio
import sys

import pytest

from switchboard.tasks import stop_task


async def _lost_cancel_loop(calls: list[asyncio.Future[None]]) -> None:
    """A sweep loop awaiting a call through wait_for, as redis-py does."""
    while True:
        call = asyncio.get_running_loop().create_future()
        calls.append(call)
        await asyncio.wait_for(call, 10)


async def _swallow_once() -> None:
    """Takes the first cancel for an empty round and goes on, as nats-py's fetch does."""
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        pass
    await asyncio.sleep(10)


_release = asyncio.Event()


async def _ignore_cancel() -> None:
    """Deaf to cancels (a loop blocked in a thread, say) until the test lets it go."""
    while not _release.is_set():
        try:
            await _release.wait()
        except asyncio.CancelledError:
            continue


async def _fail() -> None:
    raise ValueError("the loop's own failure")


async def _plain() -> None:
    await asyncio.sleep(10)


@pytest.mark.parametrize(("body", "ended"), [
    (_swallow_once, True),
    (_plain, True),
    (_fail, True),  # exception retrieved: no "exception was never retrieved" at exit
    (_ignore_cancel, False),  # bounded: the caller goes on
])
async def test_stop_task_table(body, ended):
    task = asyncio.create_task(body())
    await asyncio.sleep(0.01)
    assert await stop_task(task, timeout=0.5) is ended
    assert task.done() is ended
    if not ended:
        _release.set()
        await task


async def test_stop_task_none_is_done():
    assert await stop_task(None) is True


async def test_a_cancel_that_wait_for_drops_does_not_stop_the_loop_but_stop_task_does():
    """The call answers and the cancel lands in the same loop iteration. On
    3.11 wait_for returns the answer and drops the cancel: the loop goes on
    to its next call (a plain ``await task`` would wait forever). stop_task
    cancels again and ends it on any version."""
    calls: list[asyncio.Future[None]] = []
    task = asyncio.create_task(_lost_cancel_loop(calls))
    await asyncio.sleep(0)
    calls[-1].set_result(None)  # the server's reply arrives...
    task.cancel()  # ...as the stop comes
    await asyncio.sleep(0.01)
    if sys.version_info < (3, 12):
        assert not task.done() and len(calls) == 2, "the cancel was not dropped: the case no longer builds the race"
    assert await stop_task(task, timeout=2.0)
    assert task.cancelled()
