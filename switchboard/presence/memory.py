"""In-process presence backend (``memory://``), the embedded default.

State lives in this process only, so exactly ONE tracker may use it (the
embedded ``switchboard up``). Several trackers in a queue group need the
Redis backend, which shares the state and computes transitions atomically.
"""

from __future__ import annotations

from collections.abc import Sequence

from switchboard.frames import Presence
from switchboard.presence import Clock, system_clock

_NEVER = float("inf")


class MemoryPresence:
    def __init__(self, *, clock: Clock = system_clock) -> None:
        self._clock = clock
        self._entries: dict[str, dict[str, int]] = {}  # edge -> user -> deadline (ms)
        self._edges_of: dict[str, set[str]] = {}  # user -> edges with an entry
        self._ttl: dict[str, int] = {}  # edge -> TTL of its last refresh (to date last_seen on expiry)
        self._seen: dict[str, int] = {}  # user -> last seen (ms), set when going offline
        self._watchers: dict[str, set[str]] = {}  # user -> watchers
        self._watching: dict[str, set[str]] = {}  # watcher -> users
        # Lower bound of the earliest deadline: expire() is O(1) until then,
        # which is the common case (heartbeats keep pushing deadlines ahead).
        self._next_deadline: float = _NEVER

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def refresh(self, edge: str, users: Sequence[str], ttl_ms: int) -> list[Presence]:
        now = self._clock()
        deadline = now + ttl_ms
        entries = self._entries.setdefault(edge, {})
        self._ttl[edge] = ttl_ms
        out: list[Presence] = []
        for u in users:
            if u not in entries:
                edges = self._edges_of.get(u)
                if edges is None:
                    edges = self._edges_of[u] = set()
                    out.append(Presence(user=u, online=True, last_seen=now))
                edges.add(edge)
            entries[u] = deadline
        if users and deadline < self._next_deadline:
            self._next_deadline = deadline
        return out

    async def remove(self, edge: str, users: Sequence[str]) -> list[Presence]:
        now = self._clock()
        entries = self._entries.get(edge)
        if not entries:
            return []
        out: list[Presence] = []
        for u in users:
            if entries.pop(u, None) is not None and self._drop_entry(edge, u, now):
                out.append(Presence(user=u, online=False, last_seen=now))
        if not entries:
            self._forget_edge(edge)
        return out

    async def expire(self) -> list[Presence]:
        now = self._clock()
        if now < self._next_deadline:
            return []
        out: list[Presence] = []
        nxt: float = _NEVER
        for edge in list(self._entries):
            entries = self._entries[edge]
            ttl = self._ttl.get(edge, 0)
            dead = [(u, d) for u, d in entries.items() if d <= now]
            for u, d in dead:
                del entries[u]
                seen = d - ttl  # the last refresh that named this entry
                if self._drop_entry(edge, u, seen):
                    out.append(Presence(user=u, online=False, last_seen=self._seen[u]))
            if entries:
                nxt = min(nxt, min(entries.values()))
            else:
                self._forget_edge(edge)
        self._next_deadline = nxt
        return out

    def _drop_entry(self, edge: str, user: str, seen: int) -> bool:
        """Forget (edge, user); True if the user thereby went offline."""
        edges = self._edges_of.get(user)
        if edges is None:
            return False
        edges.discard(edge)
        if edges:
            return False
        del self._edges_of[user]
        self._seen[user] = max(seen, self._seen.get(user, 0))
        self._unwatch(user)  # watches end with the watcher's last device
        return True

    def _forget_edge(self, edge: str) -> None:
        self._entries.pop(edge, None)
        self._ttl.pop(edge, None)

    async def online(self, users: Sequence[str]) -> dict[str, tuple[bool, int | None]]:
        now = self._clock()
        return {u: (True, now) if u in self._edges_of else (False, self._seen.get(u)) for u in users}

    async def watch(self, watcher: str, users: Sequence[str], *, limit: int | None = None) -> bool:
        if not users:
            return True
        current = self._watching.get(watcher, set())
        if limit is not None and len(current) + sum(1 for u in set(users) if u not in current) > limit:
            return False
        self._watching.setdefault(watcher, set()).update(users)
        for u in users:
            self._watchers.setdefault(u, set()).add(watcher)
        return True

    async def unwatch_all(self, watcher: str) -> None:
        self._unwatch(watcher)

    def _unwatch(self, watcher: str) -> None:
        for u in self._watching.pop(watcher, ()):
            ws = self._watchers.get(u)
            if ws is not None:
                ws.discard(watcher)
                if not ws:
                    del self._watchers[u]

    async def watchers_of(self, user: str) -> set[str]:
        return set(self._watchers.get(user, ()))

    async def watchers_of_many(self, users: Sequence[str]) -> dict[str, set[str]]:
        return {u: set(self._watchers.get(u, ())) for u in users}
