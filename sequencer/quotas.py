"""Per-user quotas of the sequencer: token buckets keyed by user id.

Two bound what one user can make the fabric do (issue 8):

- **fan-out**: the copies a user's sends may cause (INBOX entries, PUSH
  entries: one per member of the conversation per send) per minute; checked
  for every user send in the pipeline (``Pipeline._pump``), so it must cost
  a dict lookup and some arithmetic, no allocation for a known sender;
- **group creation**: ``conv.create`` requests per minute.

A bucket holds up to ``per_min`` tokens and refills at ``per_min / 60`` per
second: a user may spend a minute's budget at once, then at the steady rate.
A refused take spends nothing.

Memory is bounded without scans: buckets live in two generations of at
most ``max_users / 2`` each. A take looks in the young one (one dict lookup
for an active user); a bucket found in the old one moves to the young one;
when the young one is full, the old one is dropped whole and the young one
becomes old. A bucket dropped that way was untouched while ``max_users / 2``
other users came: its user starts again with a full bucket (what a minute's
pause gives anyway).

Quotas are per sequencer process: a user whose conversations live in
partitions of N sequencers may reach N times the budget (still bounded).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from switchboard.errors import RateLimited

# Buckets kept per quota (two generations of half): a user is remembered
# while fewer than 50,000 other users sent since its last send, far above
# the senders of a minute at the reference load; ~20 MB at most.
MAX_USERS = 100_000


class UserQuota:
    __slots__ = ("per_min", "what", "rate", "burst", "max_users", "_young", "_old", "_clock", "refused")

    def __init__(self, per_min: float, *, what: str = "actions", max_users: int = MAX_USERS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if per_min <= 0:
            raise ValueError("per_min must be > 0")
        if max_users < 2:
            raise ValueError("max_users must be >= 2")
        self.per_min = per_min
        self.what = what  # named in the error: "message copies", "new groups"
        self.rate = per_min / 60.0  # tokens per second
        self.burst = float(per_min)
        self.max_users = max_users
        self._young: dict[str, list[float]] = {}  # user -> [tokens, at]
        self._old: dict[str, list[float]] = {}
        self._clock = clock
        self.refused = 0

    def __len__(self) -> int:
        return len(self._young) + len(self._old)

    def take(self, user: str, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens of ``user``'s bucket; False (nothing spent) if it has fewer."""
        if cost > self.burst:  # one action larger than the whole budget needs a full bucket
            cost = self.burst
        now = self._clock()
        b = self._young.get(user)
        if b is None:
            b = self._old.pop(user, None) or [self.burst, now]
            if len(self._young) >= self.max_users // 2:
                self._old, self._young = self._young, {}
            self._young[user] = b
        tokens = b[0] + (now - b[1]) * self.rate
        b[0] = tokens if tokens < self.burst else self.burst
        b[1] = now
        if b[0] < cost:
            self.refused += 1
            return False
        b[0] -= cost
        return True

    def retry_after(self, user: str, cost: float = 1.0) -> float:
        """Seconds until ``cost`` tokens are there (0: now), for error messages."""
        cost = min(cost, self.burst)
        b = self._young.get(user) or self._old.get(user)
        if b is None:
            return 0.0
        missing = cost - b[0] - (self._clock() - b[1]) * self.rate
        return max(0.0, missing / self.rate)

    def refusal(self, user: str, cost: float = 1.0) -> RateLimited:
        """The error for a refused take (``rate_limited``, retry: true)."""
        return RateLimited(f"at most {self.per_min:g} {self.what} per minute per user; "
                           f"retry in {max(self.retry_after(user, cost), 0.1):.1f} s")
