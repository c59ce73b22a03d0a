"""History: one page of a conversation, from the store and the unarchived tail.

Paging is by conversation seq, both bounds exclusive (docs/archiver.md):

- ``before`` (or neither bound): the newest ``limit`` messages below
  ``before``; ``more`` says OLDER messages exist (page backwards with
  ``before = messages[0].seq``).
- ``after``: the oldest ``limit`` messages above ``after`` (and below
  ``before`` if given too); ``more`` says NEWER messages exist (page
  forwards with ``after = messages[-1].seq``).

``limit`` is clamped to 1..:data:`MAX_LIMIT`.

Read-your-writes: a message the sequencer already stored in MESSAGES but the
archiver has not written yet is read from the stream itself, from the
archiver's ack floor on (everything at or below it is in the store), and merged
with the store's page by seq.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import msgspec
from nats.aio.client import Client as NATS

from switchboard import frames, ids
from switchboard.bus.direct import direct_batch
from switchboard.errors import NotFound, NotMember
from switchboard.events import HistoryQuery, HistoryReply
from switchboard.store import Store

MAX_LIMIT = 200  # a page of 200 messages of at most 16 KiB stays in one NATS message (<= 8 MiB with headers)
TAIL_BATCH = 256  # entries per direct get round trip while reading the unarchived tail
# Entries of one conversation read from the stream per query at most: if the
# archiver is this far behind, history serves what it has rather than block.
TAIL_SCAN_MAX = 20_000

_decode_msg = msgspec.json.Decoder(frames.Msg).decode


class History:
    """Answers :class:`HistoryQuery`. ``ack_floor`` returns a stream sequence
    at or below which every MESSAGES entry is archived (an old value is safe:
    it only makes the tail read longer)."""

    def __init__(self, *, nc: NATS, store: Store, stream: str, subject_prefix: str,
                 ack_floor: Callable[[], Awaitable[int]], direct_timeout: float = 2.0) -> None:
        self._nc = nc
        self._store = store
        self._stream = stream
        self._prefix = subject_prefix
        self._ack_floor = ack_floor
        self._direct_timeout = direct_timeout

    async def query(self, q: HistoryQuery) -> HistoryReply:
        conv = ids.check(q.conv, "conv")
        if q.user is not None:
            ids.check(q.user, "user")
            c = await self._store.get_conversation(conv)
            if c is None:
                raise NotFound(f"no conversation {conv!r}")
            if q.user not in c.members:
                raise NotMember(f"not a member of {conv!r}")
        limit = min(max(q.limit, 1), MAX_LIMIT)
        backwards = q.after is None
        lo = q.after if q.after is not None else 0
        hi = q.before if q.before is not None else 2**62
        if hi - lo <= 1:
            return HistoryReply(conv=conv, messages=[], more=False)
        # One extra row answers `more` without a second query.
        # The store reads "newest below before" only when before is given.
        stored = await self._store.messages(conv, before=hi if backwards else q.before, after=q.after,
                                            limit=limit + 1)
        tail = await self._tail(conv, lo, hi, backwards, limit)
        if tail:
            merged = {m.seq: m for m in stored}
            for m in tail:
                merged.setdefault(m.seq, m)
            rows = [merged[s] for s in sorted(merged)]
        else:
            rows = stored
        more = len(rows) > limit
        page = rows[-limit:] if backwards else rows[:limit]
        return HistoryReply(conv=conv, messages=page, more=more)

    async def _tail(self, conv: str, lo: int, hi: int, backwards: bool, limit: int) -> list[frames.Msg]:
        """Messages of ``conv`` with lo < seq < hi from the not yet archived end of MESSAGES."""
        start = await self._ack_floor() + 1
        subject = f"{self._prefix}.msg.{conv}"
        out: list[frames.Msg] = []
        scanned = 0
        while scanned < TAIL_SCAN_MAX:
            got = await direct_batch(self._nc, stream=self._stream, subject=subject, start_seq=start,
                                     batch=TAIL_BATCH, timeout=self._direct_timeout)
            scanned += len(got.entries)
            for _, _, data in got.entries:
                try:
                    m = _decode_msg(data)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    continue  # the archiver dead-letters it; history skips it
                if m.seq >= hi:
                    return out  # per-conversation seq grows with stream order: nothing further fits
                if m.seq > lo:
                    out.append(m)
                    if not backwards and len(out) > limit:
                        return out
            if not got.num_pending:
                return out
            start = got.last_seq + 1
        return out


class FloorCache:
    """The archiver consumer's ack floor, re-read when older than ``max_age``.

    The floor only grows, so a cached value is always safe; refreshing keeps
    the tail read short when the archiver is keeping up.
    """

    def __init__(self, *, read: Callable[[], Awaitable[int]], max_age: float = 0.2) -> None:
        self._read = read
        self._max_age = max_age  # 200 ms: at most one consumer-info round trip per 200 ms of queries
        self._value = 0
        self._at = float("-inf")

    def update(self, value: int) -> None:
        if value >= self._value:
            self._value = value
            self._at = time.monotonic()

    async def get(self) -> int:
        if time.monotonic() - self._at > self._max_age:
            try:
                self.update(await self._read())
            except Exception:  # noqa: BLE001 - fall back to the last known floor (safe, just longer tail)
                pass
        return self._value
