"""Presence: who is online, since when, and who wants to know.

Edges report the users they hold on ``sb.presence.hb.<edge>`` (see
:mod:`switchboard.presence.messages`); the tracker
(:mod:`presence.tracker`) keeps the state in a
:class:`PresenceBackend` and publishes changes to the users who watch.
docs/presence.md describes the model, the TTLs and the Redis key layout.

A backend is chosen by URL scheme: ``memory://`` (one process) or
``redis://host:port/db`` (shared by several trackers).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from switchboard.errors import ConfigError
from switchboard.frames import Presence
from switchboard.log import redact_url

Clock = Callable[[], int]
"""Returns the current time in milliseconds since the epoch."""


@runtime_checkable
class PresenceBackend(Protocol):
    """Online state per (edge, user) entry with a TTL, last-seen, and watches.

    Contract (tests/contract/test_presence.py checks every backend):

    - An entry (edge, user) is alive from ``refresh`` until ``ttl_ms`` after
      the last ``refresh`` that named it, or until ``remove``. A user is
      online while ANY of their entries is alive (several devices, several
      edges).
    - ``refresh(edge, users, ttl_ms)`` records or extends the entries of one
      edge in one call (a connect event is a refresh of one user; a batched
      heartbeat is a refresh of all the edge's users). It returns a
      :class:`~switchboard.frames.Presence` with ``online=True`` for each user
      that was offline before the call, once, in input order.
    - ``remove(edge, users)`` deletes those entries and returns an
      ``online=False`` Presence for each user that has no entry left (a user
      still on another edge does not change). Removing an absent entry is a
      no-op.
    - ``expire()`` deletes every entry whose TTL has passed and returns an
      ``online=False`` Presence for each user that thereby went offline. Each
      transition is returned by exactly one call of ``refresh``, ``remove`` or
      ``expire``, even when several trackers share one backend (the Redis
      backend computes transitions atomically in Lua scripts).
    - ``last_seen``: when a user goes offline it is set to the moment they
      were last known online: ``now`` for ``remove``, the time of the last
      refresh of the entry for ``expire``. For an online user
      :meth:`online` reports ``now`` (seen now). A user never seen is offline
      with ``last_seen`` None.
    - ``online(users)`` maps each user to ``(online, last_seen)``.
    - Watches: ``watch(watcher, users, limit=N)`` adds (a set; repeats are
      harmless) and returns True, unless the watcher would then watch more
      than ``limit`` distinct users: then it adds nothing and returns False
      (checked and added atomically; ``limit=None``: no bound),
      ``unwatch_all(watcher)`` drops all of a watcher's watches,
      ``watchers_of(user)`` is the set of watchers of a user. When a user goes
      offline (a transition returned by ``remove`` or ``expire``), the
      watches that user made are dropped in the same atomic step: a client
      that reconnects sends ``presence.watch`` again.
    - Time comes from the ``clock`` given to the backend (ms), so TTLs are
      testable without sleeping. Ids are not validated here: the tracker does.
    """

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def refresh(self, edge: str, users: Sequence[str], ttl_ms: int) -> list[Presence]: ...

    async def remove(self, edge: str, users: Sequence[str]) -> list[Presence]: ...

    async def expire(self) -> list[Presence]: ...

    async def online(self, users: Sequence[str]) -> dict[str, tuple[bool, int | None]]: ...

    async def watch(self, watcher: str, users: Sequence[str], *, limit: int | None = None) -> bool: ...

    async def unwatch_all(self, watcher: str) -> None: ...

    async def watchers_of(self, user: str) -> set[str]: ...

    async def watchers_of_many(self, users: Sequence[str]) -> dict[str, set[str]]:
        """``watchers_of`` for several users in one round trip."""
        ...


def system_clock() -> int:
    import time

    return time.time_ns() // 1_000_000


def open_presence(url: str, *, clock: Clock | None = None) -> PresenceBackend:
    """The backend for ``url`` (not yet opened: call ``await backend.open()``)."""
    scheme, sep, _ = url.partition("://")
    if not sep:
        raise ConfigError(f"presence url {redact_url(url)!r} has no scheme (memory:// or redis://)")
    if scheme == "memory":
        from switchboard.presence.memory import MemoryPresence

        return MemoryPresence(clock=clock or system_clock)
    if scheme in ("redis", "rediss"):
        from switchboard.presence.redis import RedisPresence

        return RedisPresence(url=url, clock=clock or system_clock)
    raise ConfigError(f"presence url {redact_url(url)!r}: scheme must be memory:// or redis://")


__all__ = ["Clock", "PresenceBackend", "open_presence", "system_clock", "Presence"]
