"""The presence tracker: heartbeats in, presence changes out.

- Subscribes ``sb.presence.hb.*`` in the queue group ``sb-presence`` (several
  trackers may run when they share a Redis backend; with ``memory://`` run
  exactly one). Heartbeats and events refresh/remove entries in the backend.
- Every ``sweep_sec`` it expires entries of edges that stopped heartbeating.
- Each online/offline transition is published as a ``presence`` wire frame
  to ``sb.user.<watcher>.ev.presence`` of every watcher of that user (the
  watcher's edges forward it to the sockets as-is; only the tracker's NATS
  user may publish on that subject, and edges forward only ``presence``
  frames from it) and to ``sb.presence.changed.<user>`` for services.
- NATS micro service ``sb-presence``: ``sb.api.presence.query`` and
  ``sb.api.presence.watch`` (switchboard/api.py; messages in
  :mod:`switchboard.presence.messages`), served through switchboard/rpc/.

Run it with ``switchboard presence`` (presence/role.py builds it from the settings).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from time import perf_counter

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg as NatsMsg
from nats.aio.subscription import Subscription

import switchboard
from presence.metrics import TrackerMetrics
from switchboard import api, ids, log, rpc
from switchboard.errors import LimitExceeded, SwitchboardError, Unavailable
from switchboard.frames import Presence, encode as encode_frame
from switchboard.metrics import IntHistogram
from switchboard.presence import PresenceBackend
from switchboard.presence.messages import (
    MAX_USERS_PER_REQUEST,
    Events,
    Heartbeat,
    PresenceReply,
    QueryRequest,
    WatchRequest,
    decode_report,
)
from switchboard.subjects import Subjects
from switchboard.tasks import stop_task

QUEUE = "sb-presence"
SERVICE_VERSION = switchboard.__version__  # the package's (pyproject.toml), shown by `nats micro ls`


@dataclass(frozen=True, kw_only=True)
class TrackerConfig:
    # How often dead entries are swept. An edge that dies goes offline at most
    # TTL + sweep_sec after its last heartbeat; 1 s is cheap (one O(1) check
    # in memory, one script call on Redis) and small next to the TTL.
    sweep_sec: float = 1.0
    # Users per query/watch request: a contact list is far smaller; the cap
    # bounds the work and the reply size (1000 frames ~ 60 KB) of one request.
    max_users_per_request: int = MAX_USERS_PER_REQUEST
    # Distinct users one watcher may watch at once (Settings.presence_max_watches_per_user):
    # bounds the tracker's state per user and the events one user can draw.
    max_watches_per_user: int = 1000

    def __post_init__(self) -> None:
        if self.sweep_sec <= 0:
            raise ValueError("sweep_sec must be > 0")
        if self.max_users_per_request < 1:
            raise ValueError("max_users_per_request must be >= 1")
        if self.max_watches_per_user < 1:
            raise ValueError("max_watches_per_user must be >= 1")


class PresenceTracker:
    def __init__(self, *, nc: NATS, backend: PresenceBackend, subjects: Subjects,
                 config: TrackerConfig = TrackerConfig()) -> None:
        self._nc = nc
        self._backend = backend
        self._subjects = subjects
        self._config = config
        self._log = log.get("presence.tracker")
        self._sub: Subscription | None = None
        # sb-presence: query and watch (switchboard/rpc/), counted for
        # `nats micro stats` and rpc.RpcCollector.
        self.rpc = rpc.RpcService(nc, name="sb-presence", version=SERVICE_VERSION, subjects=subjects,
                                  queue_group=QUEUE, description="presence: online state, last seen, watches")
        self._sweeper: asyncio.Task[None] | None = None
        # Counters for stats, benchmarks and /metrics (never logged per message).
        self.reports = 0
        self.rejected_ids = 0
        self.changes = 0
        self.fanout = 0  # frames published to watchers: sum over changes of the user's watchers
        self.report_failures = 0  # reports the backend failed on (Redis away)
        self.expired = 0  # users gone offline because their edge stopped heartbeating
        self.sweep_failures = 0
        self.watches_refused = 0  # watch requests over max_watches_per_user
        self.report_seconds = IntHistogram()  # one report: backend update + publishing its changes
        self.metrics = TrackerMetrics(self)

    async def start(self) -> None:
        s = self._subjects
        self._sub = await self._nc.subscribe(s.presence_hb_all, queue=QUEUE, cb=self._on_report)
        await self.rpc.start()
        await self.rpc.add(api.PRESENCE_QUERY, self._query)
        await self.rpc.add(api.PRESENCE_WATCH, self._watch)
        await self._nc.flush()  # started means answering: the SUBs are in effect on the server
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="presence-sweep")
        self._log.info("presence tracker started", subject=s.presence_hb_all, sweep_sec=self._config.sweep_sec)

    async def stop(self) -> None:
        await stop_task(self._sweeper)  # re-cancels: redis-py can swallow one (switchboard/tasks.py)
        self._sweeper = None
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        await self.rpc.stop()
        self._log.info("presence tracker stopped", reports=self.reports, changes=self.changes,
                       rejected_ids=self.rejected_ids)

    # ------------------------------------------------------------ heartbeats

    async def _on_report(self, msg: NatsMsg) -> None:
        self.reports += 1
        try:
            report = decode_report(msg.data)
        except msgspec.DecodeError:
            self._log.debug("bad presence report", subject=msg.subject)
            return
        # The edge named in the payload must be the one in the subject (NATS
        # permissions can pin an edge to its subject).
        if report.edge != msg.subject.rsplit(".", 1)[-1]:
            self._log.debug("presence report edge mismatch", subject=msg.subject)
            return
        t0 = perf_counter()
        try:
            if isinstance(report, Heartbeat):
                changes = await self._backend.refresh(report.edge, self._valid(report.users), report.ttl_ms)
            else:
                changes = await self._apply_events(report)
            await self.publish(changes)
            self.report_seconds.observe(perf_counter() - t0)
        except Exception:
            self.report_failures += 1
            self._log.exception("presence report failed", edge=report.edge)

    async def _apply_events(self, ev: Events) -> list[Presence]:
        changes: list[Presence] = []
        if ev.disconnected:
            changes += await self._backend.remove(ev.edge, self._valid(ev.disconnected))
        if ev.connected and ev.ttl_ms > 0:
            changes += await self._backend.refresh(ev.edge, self._valid(ev.connected), ev.ttl_ms)
        return changes

    def _valid(self, users: list[str]) -> list[str]:
        good = [u for u in users if ids.is_valid(u)]
        self.rejected_ids += len(users) - len(good)
        return good

    async def publish(self, changes: list[Presence]) -> None:
        """Send each change to its user's watchers and to services."""
        if not changes:
            return
        self.changes += len(changes)
        watchers = await self._backend.watchers_of_many([c.user for c in changes])
        s = self._subjects
        for c in changes:
            data = encode_frame(c)
            await self._nc.publish(s.presence_changed(c.user), data)
            to = watchers.get(c.user, ())
            self.fanout += len(to)
            for w in to:
                await self._nc.publish(s.ev_presence(w), data)

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self._config.sweep_sec)
            try:
                changes = await self._backend.expire()
                self.expired += len(changes)
                if changes:
                    self._log.info("presence entries expired", users_offline=len(changes))
                await self.publish(changes)
            except Exception:
                self.sweep_failures += 1
                self._log.exception("presence sweep failed")

    # ------------------------------------------------------------ API

    def _check_users(self, users: list[str]) -> list[str]:
        if len(users) > self._config.max_users_per_request:
            raise LimitExceeded(f"at most {self._config.max_users_per_request} users per request")
        for u in users:
            ids.check(u, "user")
        return list(dict.fromkeys(users))

    async def _states(self, users: list[str]) -> list[Presence]:
        state = await self._backend.online(users)
        return [Presence(user=u, online=state[u][0], last_seen=state[u][1]) for u in users]

    async def _query(self, q: QueryRequest) -> PresenceReply:
        """``sb.api.presence.query`` (served by self.rpc)."""
        users = self._check_users(q.users)
        try:
            return PresenceReply(users=await self._states(users))
        except SwitchboardError:
            raise
        except Exception as exc:  # noqa: BLE001 - the backend (Redis away)
            raise self._backend_failed(exc) from exc

    async def _watch(self, w: WatchRequest) -> PresenceReply:
        """``sb.api.presence.watch`` (served by self.rpc): record the watch, answer the states."""
        watcher = ids.check(w.watcher, "watcher")
        users = self._check_users(w.users)
        limit = self._config.max_watches_per_user
        try:
            watched = await self._backend.watch(watcher, users, limit=limit)
            states = await self._states(users) if watched else []
        except SwitchboardError:
            raise
        except Exception as exc:  # noqa: BLE001 - the backend (Redis away)
            raise self._backend_failed(exc) from exc
        if not watched:
            self.watches_refused += 1
            raise LimitExceeded(f"a user may watch at most {limit} users at once (until it goes offline)")
        return PresenceReply(users=states)

    def _backend_failed(self, exc: Exception) -> Unavailable:
        """A backend failure is ``unavailable`` with retry (docs/presence.md),
        not the wrapper's ``internal``: asking again once Redis is back works."""
        self._log.exception("presence backend failed")
        return Unavailable(f"presence backend failed: {type(exc).__name__}")
