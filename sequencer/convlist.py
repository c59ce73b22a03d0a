"""``conv.list``: a user's conversations, most recently active first.

Each entry holds the members and title, the last seq, the caller's own read
watermark (unread = ``last_seq - read``) and the last message (null when the
conversation has none yet). Activity is the last message's ``ts``, or the
creation time of a conversation without messages.

Cost of one request, for a user in N conversations: the membership list
(one store read), ONE batch direct get per :data:`LAST_CHUNK` conversations
for the last messages still in MESSAGES, and store reads only for the
conversations MESSAGES no longer holds (aged out, or never written to),
:data:`STORE_CONCURRENCY` at a time; then metadata and watermarks (cached)
of the at most ``conv_list_max`` conversations returned.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from time import perf_counter
from typing import TypeVar

import msgspec
from nats.aio.client import Client as NATS

from sequencer.conversations import Conversations
from sequencer.receipts import Receipts
from switchboard import events, frames, ids
from switchboard.bus import streams
from switchboard.bus.direct import direct_last_per_subject
from switchboard.config import Settings
from switchboard.metrics import IntHistogram
from switchboard.store import Conversation, Store

# Conversations per batch direct get of last messages (one request each).
LAST_CHUNK = 256
# Store reads of one request in flight at once: a user in thousands of
# dormant conversations must not open thousands of store queries together.
STORE_CONCURRENCY = 64
# Bytes of a conv.list frame around its entries ({"type":"conv.list","convs":[...],"more":true,"ref":...}).
FRAME_OVERHEAD = 256

_msg = msgspec.json.Decoder(frames.Msg)
_size = msgspec.json.Encoder().encode
T = TypeVar("T")
R = TypeVar("R")


class ConvLister:
    def __init__(self, *, nc: NATS, settings: Settings, store: Store, convs: Conversations,
                 receipts: Receipts) -> None:
        self._nc = nc
        self._settings = settings
        self._store = store
        self._convs = convs
        self._receipts = receipts
        self._stream, _, _ = streams.names(settings)
        # For /metrics (sequencer/metrics.py): requests answered or failed, and their time.
        self.requests = 0
        self.failures = 0
        self.seconds = IntHistogram()

    def _budget(self) -> int:
        """Bytes an answer may take: half the client's send queue (a larger
        frame would close the socket as a slow consumer) and half of what
        NATS carries in one message (the reply to the edge)."""
        return min(self._settings.send_queue_bytes, self._nc.max_payload) // 2

    async def list(self, user: str) -> events.ConvListReply:
        t0 = perf_counter()
        self.requests += 1
        try:
            reply = await self._list(user)
        except BaseException:
            self.failures += 1
            raise
        self.seconds.observe(perf_counter() - t0)
        return reply

    async def _list(self, user: str) -> events.ConvListReply:
        cids = await self._store.conversations_of(ids.check(user, "user"))
        last = await self._last_in_stream(cids)
        rest = [c for c in cids if last.get(c) is None]
        # Aged out of MESSAGES or never written to: the archive's last
        # message, and the creation time for those without any.
        for c, m in zip(rest, await _bounded(rest, self._archived_last)):
            last[c] = m
        no_msg = [c for c in cids if last.get(c) is None]
        created = {c: conv.created_ts for c, conv in zip(no_msg, await _bounded(no_msg, self._convs.get))
                   if conv is not None}

        def activity(c: str) -> int:
            m = last.get(c)
            return m.ts if m is not None else created.get(c, 0)

        ordered = sorted(cids, key=activity, reverse=True)
        chosen = ordered[: self._settings.conv_list_max]
        metas = await _bounded(chosen, self._convs.get)
        reads = await _bounded(chosen, lambda c: self._receipts.read_upto(c, user))
        out: list[frames.ConvSummary] = []
        size, budget = FRAME_OVERHEAD, self._budget()
        for c, conv, read in zip(chosen, metas, reads):
            if conv is None:
                continue
            s = _summary(conv, last.get(c), read)
            size += len(_size(s)) + 1
            if size > budget:
                break
            out.append(s)
        return events.ConvListReply(convs=out, more=len(out) < len(ordered))

    async def _last_in_stream(self, cids: Sequence[str]) -> dict[str, frames.Msg | None]:
        """The last message of each conversation MESSAGES still holds."""
        found: dict[str, frames.Msg | None] = {}
        subjects = self._settings.subjects
        for i in range(0, len(cids), LAST_CHUNK):
            chunk = cids[i:i + LAST_CHUNK]
            batch = await direct_last_per_subject(self._nc, stream=self._stream,
                                                  subject=[subjects.msg(c) for c in chunk], limit=len(chunk),
                                                  timeout=self._settings.send_timeout)
            for _, _, data in batch.entries:
                m = _msg.decode(data)
                found[m.conv] = m
        return found

    async def _archived_last(self, conv: str) -> frames.Msg | None:
        msgs = await self._store.messages(conv, before=frames.INT63_MAX, limit=1)
        return msgs[-1] if msgs else None


def _summary(conv: Conversation, last: frames.Msg | None, read: int) -> frames.ConvSummary:
    last_seq = last.seq if last is not None else 0
    return frames.ConvSummary(conv=conv.id, members=list(conv.members), title=conv.title, last_seq=last_seq,
                              read=min(read, last_seq), last=last)


async def _bounded(items: Iterable[T], fn: Callable[[T], Awaitable[R]]) -> list[R]:
    """``fn`` over ``items`` in order, STORE_CONCURRENCY at a time."""
    items = list(items)
    out: list[R] = []
    for i in range(0, len(items), STORE_CONCURRENCY):
        out.extend(await asyncio.gather(*(fn(x) for x in items[i:i + STORE_CONCURRENCY])))
    return out


__all__ = ["ConvLister"]
