"""PresenceReporter: what an edge tells the presence tracker about its users.

The edge server calls :meth:`PresenceReporter.connected` when a socket of a
user is authenticated and :meth:`PresenceReporter.disconnected` when it
closes (both plain, non-blocking calls). Devices are counted per user: only
the first connect and the last disconnect of a user on this edge are
reported. One background task sends

- events (``Events``) as soon as something changed: changes that pile up
  while a publish is in flight go out together, so a reconnect storm
  becomes a few large messages rather than one per user;
- a batched heartbeat (``Heartbeat``) every ``interval_sec`` with all users
  of this edge: ONE message per interval (split only when the list would not
  fit in one NATS message).

Entries live ``interval_sec * ttl_factor``: an edge that dies stops
heartbeating and its users go offline within that TTL. :meth:`stop` reports
every user as disconnected at once.
"""

from __future__ import annotations

import asyncio
import contextlib

from nats.aio.client import Client as NATS

from switchboard import ids, log
from switchboard.presence.messages import Events, Heartbeat, encode
from switchboard.subjects import Subjects
from switchboard.tasks import stop_task

# Bytes of user ids per heartbeat message: under NATS' default max_payload
# (1 MiB) with room for the envelope. 20,000 typical ids (~10 chars) fit in one.
_MAX_HB_BYTES = 768 * 1024


class PresenceReporter:
    def __init__(self, *, nc: NATS, subjects: Subjects, edge_id: str, interval_sec: float = 10.0,
                 ttl_factor: float = 3.0) -> None:
        # interval 10 s: 20k users on an edge cost 0.1 heartbeat msg/s.
        # ttl_factor 3: two heartbeats may be lost or late before users go offline.
        if interval_sec <= 0:
            raise ValueError("interval_sec must be > 0")
        if ttl_factor < 1.5:
            raise ValueError("ttl_factor must be >= 1.5 (a heartbeat must arrive before the TTL runs out)")
        self._nc = nc
        self._subject = subjects.presence_hb(edge_id)
        self._edge = edge_id
        self._interval = interval_sec
        self.ttl_ms = round(interval_sec * ttl_factor * 1000)
        self._devices: dict[str, int] = {}  # user -> open sockets on this edge
        self._reported: set[str] = set()  # users the tracker was told are here
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._log = log.get("switchboard.presence.reporter", edge=edge_id)
        self.heartbeats_sent = 0
        self.events_sent = 0

    @property
    def users(self) -> set[str]:
        return set(self._devices)

    def connected(self, user: str) -> None:
        ids.check(user, "user")
        n = self._devices.get(user, 0)
        self._devices[user] = n + 1
        if n == 0:
            self._dirty.add(user)
            self._wake.set()

    def disconnected(self, user: str) -> None:
        n = self._devices.get(user, 0)
        if n <= 0:
            return
        if n == 1:
            del self._devices[user]
            self._dirty.add(user)
            self._wake.set()
        else:
            self._devices[user] = n - 1

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=f"presence-{self._edge}")
            self._log.info("presence reporter started", interval_sec=self._interval, ttl_ms=self.ttl_ms)

    async def stop(self) -> None:
        """Stop heartbeating and report every user of this edge as gone."""
        task, self._task = self._task, None
        await stop_task(task)
        gone = sorted(self._reported | set(self._devices))
        self._devices.clear()
        self._dirty.clear()
        self._reported.clear()
        if gone and not self._nc.is_closed:
            with contextlib.suppress(Exception):
                await self._nc.publish(self._subject, encode(Events(edge=self._edge, disconnected=gone)))
                await self._nc.flush(timeout=2)
        self._log.info("presence reporter stopped", users=len(gone))

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_hb = loop.time()  # a first heartbeat at once tells the tracker this edge exists
        while True:
            timeout = next_hb - loop.time()
            if timeout > 0 and not self._wake.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
            try:
                if self._wake.is_set():
                    self._wake.clear()
                    await self._send_events()
                if loop.time() >= next_hb:
                    next_hb = loop.time() + self._interval
                    await self._send_heartbeat()
            except asyncio.CancelledError:
                raise
            except Exception:  # NATS reconnecting: the next heartbeat repairs the state
                self._log.warning("presence publish failed", exc_info=True)

    async def _send_events(self) -> None:
        dirty, self._dirty = self._dirty, set()
        up = sorted(u for u in dirty if u in self._devices and u not in self._reported)
        down = sorted(u for u in dirty if u not in self._devices and u in self._reported)
        if not up and not down:
            return  # connected and gone again before we spoke: nothing to say
        self._reported.difference_update(down)
        self._reported.update(up)
        self.events_sent += 1
        await self._nc.publish(self._subject, encode(Events(edge=self._edge, connected=up, disconnected=down,
                                                            ttl_ms=self.ttl_ms)))

    async def _send_heartbeat(self) -> None:
        users = list(self._reported)
        if not users:
            return
        batch: list[str] = []
        size = 0
        for u in users:
            if size + len(u) + 3 > _MAX_HB_BYTES:
                await self._publish_hb(batch)
                batch, size = [], 0
            batch.append(u)
            size += len(u) + 3
        await self._publish_hb(batch)

    async def _publish_hb(self, users: list[str]) -> None:
        self.heartbeats_sent += 1
        await self._nc.publish(self._subject, encode(Heartbeat(edge=self._edge, users=users, ttl_ms=self.ttl_ms)))
