"""The path tick: an INBOX entry every ``tick_interval`` on a reserved subject.

Live delivery is INBOX's republish (core NATS) from the stream leader's
server to each edge's server. If a route or gateway on that path drops while
the edge's own connection stays up, entries republished meanwhile are lost
and the edge only notices at the user's next entry (its
``Nats-Last-Sequence``). The tick goes the same way as a user's entry
(``sb.user.~tick.inbox``, stored, republished to ``sb.user.~tick.live``):
an edge that sees the tick chain skip re-reads INBOX for its sockets
(edge/pathtick.py).

Every sequencer writes it: the chain is per subject, so several writers
keep one chain, and a writer that dies or stalls leaves the others ticking.
A core publish, no ack awaited: a tick that does not get stored leaves no
hole in the chain. What INBOX keeps of it is bounded by the per-user limit
(``inbox_max_per_user`` entries on that subject).
"""

from __future__ import annotations

import asyncio

from switchboard.bus.conn import BusConnection, BusError
from switchboard.log import get as get_logger
from switchboard.tasks import stop_task


class PathTicker:
    def __init__(self, *, conn: BusConnection, subject: str, interval: float, instance: str) -> None:
        self._conn = conn
        self._subject = subject
        self._interval = interval
        self._body = instance.encode()  # who wrote it (nats stream view), nothing reads it
        self._task: asyncio.Task[None] | None = None
        self.sent = 0

    def start(self) -> None:
        if self._interval > 0:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        log = get_logger("sequencer.pathtick")
        log.info("path tick", subject=self._subject, interval=self._interval)
        conn = self._conn
        while True:
            if conn.is_connected:  # while the bus is down nothing could store it
                try:
                    conn.publish(self._subject, self._body)
                    self.sent += 1
                except BusError as exc:  # closed, or its buffer is full: the next round tries again
                    log.info("path tick not published", error=str(exc))
            await asyncio.sleep(self._interval)

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None
