"""Wall-clock deadlines of many objects on one timer: a heap and one ``call_later``.

The edge ends each socket when its token expires (close 4001). A task or a
timer handle per socket would cost memory and scheduler work for every one
of tens of thousands of sockets whose tokens live 30 days; instead one heap
of ``[deadline, n, item]`` entries and one timer armed for the earliest.

- :meth:`Deadlines.discard` (a socket closed before its deadline) is lazy:
  the entry is marked dead and skipped when it comes up. When dead entries
  outnumber live ones the heap is rebuilt, so sockets closed long before
  their tokens expire are not kept for 30 days.
- Deadlines are wall-clock (a JWT's ``exp`` is seconds since the epoch), the
  loop's timer is monotonic: the timer never sleeps longer than
  ``MAX_SLEEP`` and re-reads the wall clock when it fires, so a clock step
  is noticed within that.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

from switchboard.log import get as get_logger

T = TypeVar("T", bound=Hashable)

# Longest single sleep of the timer (seconds): one wake-up a minute on an
# idle edge, and a wall-clock step is noticed within a minute.
MAX_SLEEP = 60.0
# Rebuild the heap when more than this many entries are dead and they are
# the majority: amortised O(1) per discard, memory O(live).
COMPACT_MIN_DEAD = 64

_log = get_logger("edge.deadlines")


class Deadlines(Generic[T]):
    """``on_due(item)`` is called once, at or after ``deadline``, for every
    item added and not discarded (or re-added) before."""

    def __init__(self, on_due: Callable[[T], None], *, clock: Callable[[], float] = time.time) -> None:
        self._on_due = on_due
        self._clock = clock
        self._heap: list[list[Any]] = []  # [deadline, n, item or None (dead)]
        self._index: dict[T, list[Any]] = {}
        self._n = itertools.count()
        self._dead = 0
        self._timer: asyncio.TimerHandle | None = None
        self._wake_at = 0.0  # wall-clock time the armed timer fires

    def __len__(self) -> int:
        return len(self._index)

    @property
    def heap_size(self) -> int:
        """Entries held, dead ones included (for tests: bounded by live ones)."""
        return len(self._heap)

    def add(self, item: T, deadline: float) -> None:
        if item in self._index:
            self.discard(item)
        entry = [deadline, next(self._n), item]
        self._index[item] = entry
        heapq.heappush(self._heap, entry)
        if self._timer is None or deadline < self._wake_at:
            self._arm()

    def discard(self, item: T) -> None:
        entry = self._index.pop(item, None)
        if entry is None:
            return
        entry[2] = None
        self._dead += 1
        if self._dead > COMPACT_MIN_DEAD and self._dead * 2 > len(self._heap):
            self._heap = [e for e in self._heap if e[2] is not None]
            heapq.heapify(self._heap)
            self._dead = 0

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._heap.clear()
        self._index.clear()
        self._dead = 0

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        heap = self._heap
        while heap and heap[0][2] is None:  # dead entries at the top cost nothing to drop now
            heapq.heappop(heap)
            self._dead -= 1
        if not heap:
            return
        now = self._clock()
        delay = min(max(heap[0][0] - now, 0.0), MAX_SLEEP)
        self._wake_at = now + delay
        self._timer = asyncio.get_running_loop().call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = self._clock()
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, item = heapq.heappop(heap)
            if item is None:
                self._dead -= 1
                continue
            del self._index[item]
            try:
                self._on_due(item)
            except Exception:  # noqa: BLE001 - one item's handler must not stop the others
                _log.exception("deadline handler failed")
        self._arm()


__all__ = ["Deadlines", "MAX_SLEEP"]
