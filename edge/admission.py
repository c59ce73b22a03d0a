"""Admission: which WebSocket upgrades an edge takes now, which wait, which are refused.

Two limits (docs/operations.md, "Reconnect storms"):

- ``admit_per_sec``: upgrades admitted per second (a token bucket, one
  second's worth may come at once);
- ``admit_max_opening``: connections upgraded and not yet ``synced`` that
  the edge works on at once (:attr:`Admission.opening`).

Over the rate, or over the opening bound when the lobby does not take the
upgrade (edge/lobby.py: its turn is more than ``admit_hold_sec`` away), the
answer is HTTP 503 with a ``Retry-After`` appointment (edge/retryafter.py).
In a storm most upgrades end here before websockets parses them
(:meth:`Admission.refuse`, canned bytes); one that arrived in pieces is
parsed first and checked by :meth:`Admission.check`, with the same answer.

The edge calls :meth:`began` when a session takes an upgraded socket and
:meth:`opened` when that session leaves its opening; a place freed lets
the lobby's oldest in.
"""

from __future__ import annotations

import asyncio
import functools
import time

from edge.lobby import Lobby
from edge.metrics import EdgeMetrics
from edge.ratelimit import TokenBucket
from edge.retryafter import RetryAfter
from edge.transport import HOLD, Verdict, WsConn
from switchboard.config import Settings

_WS_GET = b"GET /ws"
BODY = b"too many new connections; retry with backoff\n"


@functools.lru_cache(maxsize=64)  # one per Retry-After value (1..30 s, edge/retryafter.py)
def refusal(retry_after: int) -> bytes:
    """The whole HTTP 503 answer (docs/protocol.md), the same bytes whichever
    path answers it."""
    return (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
            b"Connection: close\r\nRetry-After: %d\r\n\r\n%s" % (len(BODY), retry_after, BODY))


class Admission:
    __slots__ = ("opening", "_max_opening", "_bucket", "_retry_after", "_lobby", "_metrics", "_rejected_opening",
                 "_rejected_rate", "_expiry", "_let_in")

    def __init__(self, *, settings: Settings, metrics: EdgeMetrics) -> None:
        # Sessions upgraded and not yet synced: refused beyond admit_max_opening.
        self.opening = 0
        self._max_opening = settings.admit_max_opening
        self._bucket = TokenBucket(rate=settings.admit_per_sec, burst=settings.admit_per_sec)
        # The Retry-After of a refusal: an appointment at the rate this edge completes openings.
        self._retry_after = RetryAfter(max_opening=settings.admit_max_opening, max_rate=settings.admit_per_sec)
        # Upgrades over admit_max_opening whose appointment would be near wait here instead.
        self._lobby: Lobby[WsConn] = Lobby(hold_sec=settings.admit_hold_sec)
        self._metrics = metrics
        self._rejected_opening = metrics.rejected.labels("opening")
        self._rejected_rate = metrics.rejected.labels("admission")
        self._expiry: asyncio.TimerHandle | None = None  # the lobby's overdue check, while it is not empty
        self._let_in: asyncio.Handle | None = None  # the lobby's next let-in, after a place freed

    @property
    def waiting(self) -> int:
        """Upgrades in the lobby now."""
        return len(self._lobby)

    # -- deciding ------------------------------------------------------------------
    def refuse(self, conn: WsConn, head: bytes) -> bytes | Verdict | None:
        """A whole GET request, before it is parsed: an upgrade to /ws over a
        limit gets the canned 503 (the bucket is only looked at: an admitted
        request takes its token in :meth:`check`), or waits in the lobby
        (``HOLD``) when its turn is near. A refusal must cost less than
        parsing the request and serializing a response."""
        if head.startswith(_WS_GET) and head[7:8] in b" ?":
            if self.opening >= self._max_opening:
                now = time.monotonic()
                lobby = self._lobby
                if lobby.hold_sec > 0 and self._retry_after.hold(now, lobby.hold_sec):
                    lobby.add(conn, now)
                    self._metrics.held.inc()
                    self._metrics.lobby.set(len(lobby))
                    if self._expiry is None:
                        self._expiry = asyncio.get_running_loop().call_later(lobby.hold_sec / 2, self._expire)
                    return HOLD
                self._rejected_opening.inc()
                return refusal(self._retry_after.refused(now))
            if self._bucket.empty():
                self._rejected_rate.inc()
                return refusal(self._retry_after.refused(time.monotonic()))
        return None

    def check(self) -> int | None:
        """A parsed upgrade to /ws: None if admitted (it takes a token), else
        the Retry-After of its 503."""
        refused = self._rejected_opening if self.opening >= self._max_opening else (
            None if self._bucket.take() else self._rejected_rate)
        if refused is None:
            return None
        refused.inc()
        return self._retry_after.refused(time.monotonic())

    # -- openings ------------------------------------------------------------------
    def began(self) -> None:
        """A session took an upgraded socket: one more opening, until :meth:`opened`."""
        self.opening += 1

    def opened(self, took: float | None = None) -> None:
        """A session left its opening: synced ``took`` seconds after its
        upgrade, or (None) closed before: one more may be admitted."""
        self.opening -= 1
        if took is not None:
            self._retry_after.opened(took)
        if self._lobby and self._let_in is None:  # let the oldest waiting in, after this tick's work
            self._let_in = asyncio.get_running_loop().call_soon(self._lobby_let_in)

    def close(self) -> None:
        """Stop the lobby's timers (the held connections close with the server)."""
        for handle in (self._expiry, self._let_in):
            if handle is not None:
                handle.cancel()
        self._expiry = self._let_in = None

    # -- the lobby -------------------------------------------------------------------
    def _lobby_let_in(self) -> None:
        """Places are free: the oldest held upgrades go on (each becomes an
        opening synchronously, or is answered)."""
        self._let_in = None
        while self.opening < self._max_opening:
            conn = self._lobby.next()
            if conn is None:
                break
            conn.proceed()
        self._metrics.lobby.set(len(self._lobby))

    def _expire(self) -> None:
        """Every hold_sec / 2 while the lobby is not empty: upgrades held
        twice hold_sec get the 503 with an appointment they would have had
        (at most 2.5 hold_sec after they came: 7.5 s by default, under the
        open_timeout that would cut them unanswered)."""
        self._expiry = None
        now = time.monotonic()
        for conn in self._lobby.expire(now):
            self._rejected_opening.inc()
            conn.answer_raw(refusal(self._retry_after.refused(now)))
        self._metrics.lobby.set(len(self._lobby))
        if self._lobby:
            self._expiry = asyncio.get_running_loop().call_later(self._lobby.hold_sec / 2, self._expire)
