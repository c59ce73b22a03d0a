"""Retry delays: exponential, capped, jittered. One helper for every retry loop.

    delay(attempt) = min(cap, min(cap, initial * factor ** attempt) * uniform(lo, hi))

``attempt`` counts from 0 (the first retry waits about ``initial``). The cap
applies to the exponential first, so with full jitter (``lo, hi = 0, 1``,
the default) a long outage keeps spreading its retries over [0, cap] rather
than piling them up at the cap; a factor above 1 (``hi > 1``) is capped
again, so no delay ever exceeds ``cap``. ``jitter=None`` means no jitter.

Who uses which jitter, and why:

- full jitter (SDK reconnect and resend, ``switchboard_client.client``): many
  clients retrying against one edge at once (a reconnect storm) spread over
  the whole window;
- ``(0.8, 1.0)`` (archiver store outage and fetch loop): one consumer per
  process, retries close to the schedule, a little spread between archivers;
- ``(0.8, 1.2)`` (pusher redelivery, ``pusher/worker.py``): entries throttled
  together do not come back together;
- none (``sbctl`` supervisor restarts): one child, nothing to spread.

No I/O and no clock: callers sleep (or hand the delay to JetStream as a NAK
delay) themselves. Pure standard library, in the client distribution
(the SDK uses it); the server's ``switchboard.backoff`` re-exports it.
"""

from __future__ import annotations

import random
from collections.abc import Callable

FULL_JITTER = (0.0, 1.0)
# initial * factor ** MAX_EXPONENT is far above any sane cap; bounding the
# exponent keeps a huge attempt count (a redelivery counter) from overflowing.
MAX_EXPONENT = 64


def delay(attempt: int, *, initial: float, cap: float, factor: float = 2.0,
          jitter: tuple[float, float] | None = FULL_JITTER,
          rand: Callable[[], float] = random.random) -> float:
    """The delay before retry number ``attempt`` (0-based), in seconds."""
    d = min(cap, initial * factor ** min(max(attempt, 0), MAX_EXPONENT))
    if jitter is not None:
        lo, hi = jitter
        d = min(cap, d * (lo + (hi - lo) * rand()))
    return d


class Backoff:
    """A retry loop's state: each :meth:`delay` is the next delay; :meth:`reset`
    after a success starts again from ``initial``."""

    __slots__ = ("initial", "cap", "factor", "jitter", "attempt")

    def __init__(self, initial: float, cap: float, *, factor: float = 2.0,
                 jitter: tuple[float, float] | None = FULL_JITTER) -> None:
        if not 0 <= initial <= cap:
            raise ValueError(f"backoff needs 0 <= initial <= cap, got initial={initial} cap={cap}")
        if jitter is not None and not 0 <= jitter[0] <= jitter[1]:
            raise ValueError(f"backoff jitter must be (lo, hi) with 0 <= lo <= hi, got {jitter}")
        self.initial, self.cap, self.factor, self.jitter = initial, cap, factor, jitter
        self.attempt = 0

    def delay(self) -> float:
        d = delay(self.attempt, initial=self.initial, cap=self.cap, factor=self.factor, jitter=self.jitter)
        self.attempt += 1
        return d

    def reset(self) -> None:
        self.attempt = 0


# The longest server-asked wait honoured (seconds): an edge asks for at most
# 30 (edge/retryafter.py); more is a misconfigured proxy, not a reason to
# stay away for an hour.
RETRY_AFTER_MAX = 60.0


def retry_after(value: str | None, *, rand: Callable[[], float] = random.random) -> float | None:
    """The wait a ``Retry-After: <seconds>`` header asks for, plus up to a
    second of jitter (clients told the same whole second do not all come
    back in the same instant), capped at :data:`RETRY_AFTER_MAX`; None when
    the header is absent or not a number of seconds (an HTTP date is not
    honoured: clocks differ)."""
    if value is None or not value.strip().isdigit():
        return None
    return min(RETRY_AFTER_MAX, int(value.strip()) + rand())
