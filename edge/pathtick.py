"""The path tick, edge side: notice a broken delivery path the edge's own
connection did not see.

Live INBOX entries reach this edge as INBOX's republish (core NATS) from the
stream leader's server, across routes (one cluster) and gateways (cells). A
route or gateway that drops while the edge's connection stays up loses the
entries republished meanwhile, and nothing tells the edge: a user's next
entry shows the gap (its ``Nats-Last-Sequence``), but the last one before a
quiet period would wait for it. The sequencers write a tick to INBOX every
``tick_interval`` on a reserved subject (sequencer/pathtick.py), stored and
republished over the very path of the users' entries; this edge subscribes
to ``sb.user.~tick.live`` once. Each republished tick carries the sequence
of the tick before it (``Nats-Last-Sequence``, the chain of that one
subject): if that is not the last tick this edge saw, a tick was lost on the
way, so entries may have been too, and every session re-reads INBOX after
its cursor, as after a bus reconnect (edge.server, rate-limited).

No tick for ``SILENT_INTERVALS`` intervals while the edge's bus is
connected is a break too (a cut that lasts, or every sequencer gone): it is
counted and logged at once, and the re-read waits for the first tick after
it, i.e. for the path to be back. Re-reading during the silence would cross
the same cut (across a gateway, INBOX's reads go where its republish comes
from): the reads fail and each failed read closes its socket (1013), so a
lasting partition would send every client of the edge into reconnects that
cannot succeed either.

:class:`TickChain` decides (no I/O, tested in tests/unit/test_edge_pathtick.py);
:class:`PathWatch` subscribes, keeps time and calls back. Nothing of a tick
goes to a socket, and user deliveries do not pass here (their own
subscriptions): no cost on the hot path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

from switchboard.bus.conn import BusConnection, BusMsg
from switchboard.tasks import stop_task

# Why the path is taken as broken (the reason label of switchboard_edge_path_breaks_total).
TICK_LOST: Final = "tick_lost"  # a tick's previous one is not the last one seen here: re-read now
SILENT: Final = "silent"  # no tick for SILENT_INTERVALS intervals while the bus is connected
# Not a break of its own: the first tick after a silence (the path is back): re-read now.
RESUMED: Final = "resumed"
SILENT_INTERVALS: Final = 3


class TickChain:
    """The ticks seen by one edge since its bus (re)connected.

    - :meth:`on_tick` (``seq``: the tick's INBOX sequence, ``last``: the
      tick's ``Nats-Last-Sequence``): RESUMED if this is the first tick
      after a reported silence (the path is back: read what the silence may
      have lost), TICK_LOST if ``last`` is not the last tick seen (one was
      lost), else None. The first tick after a (re)connect only starts the
      chain, and so does one below the last seen (INBOX was recreated). A
      repeated tick is ignored.
    - :meth:`silent` (called about every interval while the bus is
      connected): True once when no tick came for ``SILENT_INTERVALS``
      intervals (counted from the last tick or the (re)connect): a cut that
      lasts, or every sequencer gone; then not again until a tick arrives.
    - :meth:`reset`: the bus reconnected (its own re-read covers the past).
    """

    __slots__ = ("seq", "at", "quiet", "limit")

    def __init__(self, *, interval: float, now: float) -> None:
        self.limit = SILENT_INTERVALS * interval
        self.seq = 0  # the last tick seen; 0: none since the (re)connect
        self.at = now  # when it came (or the (re)connect)
        self.quiet = False  # a silence was reported and no tick came since

    def on_tick(self, seq: int, last: int, now: float) -> str | None:
        if seq == self.seq:
            return None
        if seq < self.seq:  # INBOX recreated (sequences start again): edge.server closes
            self.seq, self.at, self.quiet = seq, now, False  # its sockets; a re-read now would
            return None  # read the new stream after cursors of the old one
        broke = RESUMED if self.quiet else TICK_LOST if self.seq != 0 and last != self.seq else None
        self.seq, self.at, self.quiet = seq, now, False
        return broke

    def silent(self, now: float) -> bool:
        if self.quiet or now - self.at < self.limit:
            return False
        self.quiet = True
        return True

    def reset(self, now: float) -> None:
        self.seq, self.at, self.quiet = 0, now, False


class PathWatch:
    """Subscribes to the tick, checks the chain, and calls ``on_break(reason)``
    (TICK_LOST, SILENT or RESUMED)."""

    def __init__(self, *, bus: BusConnection, subject: str, interval: float,
                 on_break: Callable[[str], None]) -> None:
        self._bus = bus
        self._subject = subject
        self._interval = interval
        self._on_break = on_break
        self._loop = asyncio.get_running_loop()
        self.chain = TickChain(interval=interval, now=self._loop.time())
        self._sid: int | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._interval <= 0:
            return  # tick_interval 0: no ticks are written
        self._sid = self._bus.subscribe(self._subject, self._on_tick)
        self._task = self._loop.create_task(self._watch())

    def reset(self) -> None:
        """The bus reconnected: the edge re-reads for that; a new chain starts."""
        self.chain.reset(self._loop.time())

    def _on_tick(self, msg: BusMsg) -> None:
        h = msg.headers  # parsed: two ticks a second per sequencer, off the hot path
        seq = h.get("Nats-Sequence") if h else None
        if h is None or seq is None:
            return  # not a stored entry (nobody may publish here: nats/accounts.conf)
        reason = self.chain.on_tick(int(seq), int(h.get("Nats-Last-Sequence", "0")), self._loop.time())
        if reason is not None:
            self._on_break(reason)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            if self._bus.is_connected and self.chain.silent(self._loop.time()):
                self._on_break(SILENT)

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None
        if self._sid is not None:
            self._bus.unsubscribe(self._sid)
            self._sid = None
