"""How long a client refused by admission control should wait: ``Retry-After``.

A fixed ``Retry-After: 1`` sent a whole reconnect storm back at once every
second, and clients that ignored it doubled their own backoff to 10 s, so
an edge was either flooded with refusals (each ~90 µs of its CPU, and more
of the client's) or idle while clients slept. Instead each refusal gets an
appointment: the edge keeps the time its queue of refused clients would be
served at the rate it can complete openings (upgrade to ``synced``), and
each refusal books one more slot at the end of it. The k-th client refused
in a storm is told to come back in about k / rate seconds, so a storm
arrives spread over the time the edge needs to take it.

The rate is Little's law: ``admit_max_opening`` sessions may be opening at
once, each takes (on average, recently) ``t`` seconds, so the edge completes
``admit_max_opening / t`` per second when full. Counting completions per
second instead measured the arrivals, not the capacity: with clients away
until their appointments the count fell, the next appointments moved
further out, and the edge idled while a quarter of a storm slept (bench
storm, 20,000 clients: no attempt at all for 25 s). An optimistic rate only
costs refusals (a client back too early is refused, ~90 µs, and rebooked).

A client whose slot is only a few seconds away is not refused at all: it
waits on its open connection (:meth:`hold` books its slot, edge/lobby.py
lets it in when a place frees), which saves the second connection, request
and refusal an appointment costs the client, the kernel and the edge.

Sans-I/O: the clock is passed in; :class:`edge.server.Edge` calls
:meth:`opened` for every session that reaches ``synced`` (one closed
before says nothing about how long an opening takes), :meth:`hold` for
every upgrade it makes wait and :meth:`refused` for every refusal.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

# Seconds an opening is assumed to take before the edge has measured its
# own (a restarted edge has completed none yet): the rate is then
# admit_max_opening / this, 800/s with the default 800. The first seconds of
# a storm are when most clients are refused and booked, so this spacing
# decides how long the storm lasts. Measured on a restarted edge in bench
# storm: ~0.8 s per opening in its cold first seconds (mostly waiting for
# the clients' hellos), ~20 ms later. A fixed 200/s (the earlier default)
# booked 7,700 refusals of one edge over 30 s while its openings took 20 ms:
# the storm was spread over 40 s by the appointments themselves.
ASSUMED_TOOK = 1.0
# Weight of the latest opening in the average time an opening takes: about
# the last 50 openings, a fraction of a second in a storm.
EWMA_WEIGHT = 0.02
# Bounds of the answer (seconds). Retry-After is whole seconds (RFC 9110).
# MAX_SEC is the booking horizon: a client that would be booked further out
# is not booked; it is told a random time in the horizon's second half and
# booked when it comes back (one more cheap refusal, ~90 µs) rather than
# sleeping through capacity freed meanwhile. The rate a storm's first
# refusals are booked at is measured while everything is slowest (a cold
# edge, all clients at once: ~0.8 s and more per opening, against ~20 ms a
# few seconds later), so far bookings are the least reliable; with a 30 s
# horizon the last of them set the end of the storm (bench storm). Random,
# not MAX_SEC: those clients must not all come back in the same second.
MIN_SEC, MAX_SEC = 1, 10


class RetryAfter:
    __slots__ = ("_concurrency", "_floor", "_cap", "_took", "_next_free")

    def __init__(self, *, max_opening: int, max_rate: float, floor: float = 20.0) -> None:
        self._concurrency = max_opening
        self._floor = floor  # never assume slower than this: answers stay bounded
        self._cap = max_rate  # never faster than admission lets in (admit_per_sec)
        self._took: float | None = None  # average seconds an opening takes
        self._next_free = 0.0  # when the last client booked so far would be served

    @property
    def rate(self) -> float:
        """Openings per second this edge completes when full (estimated)."""
        took = ASSUMED_TOOK if self._took is None else self._took
        return max(self._floor, min(self._cap, self._concurrency / max(took, 1e-6)))

    def opened(self, took: float) -> None:
        """A session reached ``synced`` ``took`` seconds after its upgrade."""
        avg = self._took
        self._took = took if avg is None else avg + EWMA_WEIGHT * (took - avg)

    def hold(self, now: float, within: float) -> bool:
        """Book the next slot, if it is at most ``within`` seconds away
        (False, nothing booked, if it is further): for a client that will
        wait on its open connection (the edge's lobby), and for every
        refusal within the horizon."""
        slot = max(self._next_free, now) + 1.0 / self.rate
        if slot - now > within:
            return False
        self._next_free = slot
        return True

    def refused(self, now: float, rand: Callable[[int, int], int] = random.randint) -> int:
        """Book a slot for a refused client: whole seconds until it (within
        the horizon; beyond it, unbooked: a random time in its second half)."""
        if not self.hold(now, MAX_SEC):
            return rand(MAX_SEC // 2, MAX_SEC)
        return max(MIN_SEC, math.ceil(self._next_free - now))
