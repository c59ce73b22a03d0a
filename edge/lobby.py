"""The lobby: upgrades waiting on their open connection for a place among an edge's openings.

An edge works on at most ``admit_max_opening`` connections between upgrade
and ``synced``. An upgrade beyond used to get HTTP 503 with an appointment
(edge/retryafter.py) at once; in a reconnect storm that meant 1.4 refusals
per client (bench storm: 28,337 refusals for 20,000 clients), each one a TCP
connection, a request, an answer and a close for the client, the kernel and
the edge, on a host the storm already saturates. Instead, when its
appointment would be at most ``admit_hold_sec`` away, the request waits here
unanswered and is let in, oldest first, as soon as an opening ends: the
client sees a slower upgrade rather than a refusal and a sleep.

Bounds: only requests the edge expects to serve within ``admit_hold_sec`` are
held (the booking is the same as for a refusal, so refused clients are
booked after the held ones); one that waited twice that long anyway (the
edge slowed down) is answered with the 503 it would have had, so no client
waits into its open timeout (the SDK's: 10 s). A client that gave up while
waiting is skipped when its turn comes.

No I/O of its own: the edge passes the clock and the connections, and says
when a place is free (``admit``) and when to look for overdue ones
(``expire``).
"""

from __future__ import annotations

from collections import deque
from typing import Generic, Protocol, TypeVar


class Waiter(Protocol):
    """What the lobby needs of a held connection (edge.transport.WsConn)."""

    @property
    def gone(self) -> bool: ...


W = TypeVar("W", bound=Waiter)


class Lobby(Generic[W]):
    __slots__ = ("hold_sec", "_q")

    def __init__(self, *, hold_sec: float) -> None:
        self.hold_sec = hold_sec  # 0: the lobby is never used
        self._q: deque[tuple[float, W]] = deque()  # (held since, connection), oldest first

    def __len__(self) -> int:
        return len(self._q)

    def add(self, conn: W, now: float) -> None:
        self._q.append((now, conn))

    def next(self) -> W | None:
        """The connection to let in now (oldest first, skipping the gone), or None."""
        q = self._q
        while q:
            _, conn = q.popleft()
            if not conn.gone:
                return conn
        return None

    def expire(self, now: float) -> list[W]:
        """Remove and return the connections held longer than twice
        ``hold_sec`` (those still connected: they are owed an answer)."""
        q, limit, out = self._q, now - 2 * self.hold_sec, []
        while q and q[0][0] <= limit:
            _, conn = q.popleft()
            if not conn.gone:
                out.append(conn)
        return out
