"""Stopping a background task when a cancel can be lost.

``task.cancel(); await task`` hangs forever if the task swallows the cancel
and goes on looping, and on Python 3.11 that happens without any bug of ours:

- ``asyncio.wait_for`` returns the inner result, dropping the cancel, when
  the inner awaitable completes in the same loop iteration as the cancel
  (CPython gh-86296; 3.12 rebuilt ``wait_for`` on ``asyncio.timeout``).
  redis-py sends every command through ``wait_for``: cancelling the presence
  tracker's sweep loop mid-command lost the cancel in 141 of 300 tries here,
  and a CI teardown waited 120 s for a loop that kept sweeping.
- nats-py turns a cancel during a request or a pull fetch into its own
  ``TimeoutError``, which a loop takes for an empty round.

:func:`stop_task` cancels again until the task ends, within a bound.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

# Between two cancels: a loop that lost a cancel is back at an await within
# a round trip to its server (milliseconds on loopback), so a few re-cancels
# end it; long enough not to spin.
RECANCEL_SEC = 0.05

# Default bound of the whole stop: a loop that has not ended after this many
# cancels is blocked on something that ignores cancellation (a thread); the
# caller goes on stopping the rest rather than hang its process's shutdown.
STOP_TIMEOUT_SEC = 5.0


async def stop_task(task: asyncio.Task[Any] | None, *, timeout: float = STOP_TIMEOUT_SEC) -> bool:
    """Cancel ``task`` and wait until it ended, cancelling it again every
    :data:`RECANCEL_SEC` (see the module docstring). Whether it ended within
    ``timeout``. The task's own exception, if any, is retrieved and dropped:
    the loops this stops log their failures themselves. None: nothing to do."""
    if task is None:
        return True
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not task.done():
        task.cancel()
        left = deadline - loop.time()
        if left <= 0:
            return False
        await asyncio.wait((task,), timeout=min(RECANCEL_SEC, left))
    if not task.cancelled():
        with contextlib.suppress(Exception):
            task.exception()
    return True
