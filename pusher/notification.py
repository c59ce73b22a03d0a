"""What a notification says, and fitting it into a provider's size limit.

The body is a preview: when a payload is over the provider's limit, the body
is cut (on a character boundary, with an ellipsis) until the whole payload
fits; if even an empty body does not fit, the payload is too large.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from switchboard.events import PushEntry

ELLIPSIS = "…"


class Notification(msgspec.Struct, frozen=True, kw_only=True):
    conv: str
    seq: int
    id: str
    sender: str
    title: str
    body: str
    badge: int | None = None  # unread count; None: leave the app's badge alone

    @classmethod
    def from_entry(cls, entry: PushEntry, *, badge: int | None = None) -> Notification:
        return cls(conv=entry.conv, seq=entry.seq, id=entry.id, sender=entry.sender,
                   title=entry.title or entry.sender, body=entry.body, badge=badge)


class PayloadTooLarge(Exception):
    """Even with an empty preview the payload is over the limit."""


def fit(build: Callable[[str], bytes], body: str, limit: int) -> bytes:
    """``build(body)`` with ``body`` cut so that the result is at most ``limit`` bytes.

    Binary search on the number of characters kept: payload size grows with
    the preview length, so the longest fitting prefix is found in O(log n) builds.
    """
    whole = build(body)
    if len(whole) <= limit:
        return whole
    if len(build("")) > limit:
        raise PayloadTooLarge(f"payload is over {limit} bytes even without a preview")
    lo, hi = 0, len(body) - 1  # keep body[:n] + ELLIPSIS; lo always fits
    best = build("")
    while lo <= hi:
        mid = (lo + hi) // 2
        candidate = build(body[:mid].rstrip() + ELLIPSIS) if mid else build("")
        if len(candidate) <= limit:
            best, lo = candidate, mid + 1
        else:
            hi = mid - 1
    return best
