"""How long a client refused by admission control should wait: ``Retry-After``.

A fixed ``Retry-After: 1`` sent a whole reconnect storm back at once every
second, and clients that ignored it doubled their own backoff to 10 s, so
an edge was either flooded with refusals (each ~90 µs of its CPU, and more
of the client's) or idle while clients slept. Instead each refusal gets an
appointment: the edge keeps the time its queue of refused clients would be
served at the rate it actually completes openings (hello to ``synced``),
and each refusal books one more slot at the end of it. The k-th client
refused in a storm is told to come back in about k / rate seconds, so a
storm arrives spread over the time the edge needs to take it, and the
refusals a client collects fall from one a second to about one per storm.

The rate is what the edge completed over the last window when it was full
(a refusal because ``admit_max_opening`` sessions were opening); a window
in which it never was says it could have taken more, so the rate is raised
by half (up to ``admit_per_sec``): spreading clients wider than the edge
needs would otherwise confirm itself (fewer arrivals, fewer completions, a
lower rate).

Sans-I/O: the clock is passed in; :class:`edge.server.Edge` calls
:meth:`opened` for every session that leaves its opening and
:meth:`refused` for every refusal.
"""

from __future__ import annotations

import math

# Openings per second assumed before the edge has measured its own: a
# restarted edge has completed none yet, and 200/s is what one edge process
# completes on a busy 2-core host (docs/benchmarks.md, Reconnect storm), so
# a storm's first appointments are neither all at once nor minutes away.
DEFAULT_RATE = 200.0
# Rate measurement window (seconds): a second is noisy; four follow a
# storm's ramp closely enough.
WINDOW_SEC = 4.0
# Bounds of the answer (seconds). Retry-After is whole seconds (RFC 9110);
# 60 keeps a client that met a grossly wrong estimate from sleeping long.
MIN_SEC, MAX_SEC = 1, 60


class RetryAfter:
    __slots__ = ("_floor", "_cap", "_done", "_window_start", "_rate", "_next_free", "_full")

    def __init__(self, *, max_rate: float, floor: float = 20.0) -> None:
        self._floor = floor  # never assume slower than this (a few sessions/s): answers stay bounded
        self._cap = max_rate  # never faster than admission lets in (admit_per_sec)
        self._done = 0
        self._window_start: float | None = None
        self._rate = min(DEFAULT_RATE, max_rate)
        self._next_free = 0.0  # when the last client booked so far would be served
        self._full = False  # refused for being full during this window

    @property
    def rate(self) -> float:
        return self._rate

    def opened(self, now: float) -> None:
        """A session left its opening (synced, or closed)."""
        self._done += 1
        self._roll(now)

    def refused(self, now: float, *, full: bool) -> int:
        """Book a slot for a refused client: whole seconds until it. ``full``:
        refused because as many sessions as allowed were opening (else: the
        admission rate)."""
        self._roll(now)
        if full:
            self._full = True
        start = self._next_free if self._next_free > now else now
        self._next_free = start + 1.0 / self._rate
        wait = self._next_free - now
        return max(MIN_SEC, min(MAX_SEC, math.ceil(wait)))

    def _roll(self, now: float) -> None:
        if self._window_start is None:
            self._window_start = now
            return
        elapsed = now - self._window_start
        if elapsed >= WINDOW_SEC:
            measured = self._done / elapsed
            rate = measured if self._full else max(measured, self._rate * 1.5)
            self._rate = max(self._floor, min(self._cap, rate))
            self._done = 0
            self._full = False
            self._window_start = now
