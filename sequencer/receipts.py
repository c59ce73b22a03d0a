"""Receipts: per-conversation watermarks per member, monotonic.

A receipt only ever raises a watermark (delivered up to N, read up to N), so
duplicates and reordering are harmless. Raised watermarks are coalesced for
``flush_sec`` (Settings.sequencer_receipt_flush_sec): each tick writes them to the store in one batch
(monotonic merge) and publishes one ``receipt`` frame per changed (conv,
member) to every member's ``sb.user.<uid>.ev.receipt`` subject (only the
sequencer may publish there; edges forward only ``receipt`` frames from it).
Under load many receipts of one conversation collapse into one frame.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from nats.aio.client import Client as NATS

from sequencer.conversations import Conversations
from switchboard import events, frames, ids, log
from switchboard.errors import SwitchboardError
from switchboard.store import Store, Watermark
from switchboard.subjects import Subjects

# Senders' own watermarks (raised by sending, announced to nobody) only feed
# unread counts: written once a second, one batch for all senders.
QUIET_FLUSH_INTERVAL = 1.0


class InvalidSeq(SwitchboardError):
    """The seq is beyond the conversation's last message."""

    code = "invalid_seq"


class Receipts:
    def __init__(self, *, nc: NATS, subjects: Subjects, store: Store, convs: Conversations,
                 last_seq: Callable[[str, bool], Awaitable[int]], broadcast_max_members: int,
                 flush_sec: float, max_convs: int = 100_000) -> None:
        self._nc = nc
        # Set by the sequencer once its lean bus connection is up (attach_bus);
        # until then (tests that drive Receipts alone) nats-py publishes.
        self._publish: Callable[[str, bytes], None] | None = None
        self._subjects = subjects
        self._store = store
        self._flush_sec = flush_sec  # receipts coalesced this long, then written and broadcast at once
        self._convs = convs
        self._last_seq = last_seq
        # Above this many members a receipt is stored but not broadcast (one
        # publish per member per receipt would dwarf the messages themselves);
        # members of such groups ask with a `receipts` frame.
        self._broadcast_max = broadcast_max_members
        self._marks: dict[str, dict[str, list[int]]] = {}  # conv -> user -> [delivered, read]
        # to store and publish; the flag: `read` moved (then the member's own
        # devices hear it too, to sync read state; `delivered` only matters to others)
        self._dirty: dict[tuple[str, str], bool] = {}
        self._quiet: set[tuple[str, str]] = set()  # to store only (a sender's own watermark)
        self._quiet_at = 0.0
        self._max_convs = max_convs
        self._task: asyncio.Task[None] | None = None
        self._log = log.get("sequencer.receipts")
        self._bg: set[asyncio.Task[None]] = set()

    def attach_bus(self, publish: Callable[[str, bytes], None]) -> None:
        """Broadcast through ``publish`` (the lean bus' queued, unawaited PUB)."""
        self._publish = publish

    async def start(self) -> None:
        self._task = asyncio.create_task(self._flusher())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        await self.flush(force=True)

    async def _conv_marks(self, conv: str) -> dict[str, list[int]]:
        marks = self._marks.get(conv)
        if marks is None:
            loaded = await self._store.watermarks(conv)
            marks = self._marks.get(conv)  # filled meanwhile by a concurrent call
            if marks is None:
                if len(self._marks) >= self._max_convs:
                    self._evict()
                marks = self._marks[conv] = {w.user: [w.delivered, w.read] for w in loaded}
        return marks

    def _evict(self) -> None:
        dirty_convs = {c for c, _ in self._dirty.keys() | self._quiet}
        for conv in [c for c in self._marks if c not in dirty_convs][: self._max_convs // 10 or 1]:
            del self._marks[conv]

    async def apply(self, *, user: str, conv: str, delivered: int, read: int) -> Watermark:
        ids.check(user, "user")
        ids.check(conv, "conv")
        if delivered < 0 or read < 0:
            raise InvalidSeq("seq must be >= 0")
        c = await self._convs.get_for(conv, user)
        top = max(delivered, read)
        if top and top > await self._last_seq(c.id, False) and top > await self._last_seq(c.id, True):
            raise InvalidSeq(f"seq {top} is beyond the last message of {conv}")
        marks = await self._conv_marks(c.id)
        cur = marks.setdefault(user, [0, 0])
        # Reading implies having received.
        new_d, new_r = max(cur[0], delivered, read), max(cur[1], read)
        if (new_d, new_r) != (cur[0], cur[1]):
            key = (c.id, user)
            self._dirty[key] = self._dirty.get(key, False) or new_r != cur[1]
            cur[0], cur[1] = new_d, new_r
        return Watermark(conv=c.id, user=user, delivered=cur[0], read=cur[1])

    async def apply_many(self, items: list[events.ReceiptRequest]) -> list[tuple[int, SwitchboardError]]:
        """:meth:`apply` each receipt of a batch; the refused ones, by index.

        A conversation not cached here costs store reads (its members, its
        watermarks): the first receipt of each such conversation is applied
        concurrently with the others' (one task per conversation not cached,
        none on the hot path, where all are cached), the rest in order.
        """
        failed: list[tuple[int, SwitchboardError]] = []

        async def one(i: int) -> None:
            r = items[i]
            try:
                await self.apply(user=r.user, conv=r.conv, delivered=r.delivered, read=r.read)
            except SwitchboardError as err:
                failed.append((i, err))

        cold: dict[str, int] = {}  # conversation not cached -> its first receipt
        for i, r in enumerate(items):
            if r.conv not in self._marks:
                cold.setdefault(r.conv, i)
        warmed = set(cold.values()) if len(cold) > 1 else set()
        if warmed:
            await asyncio.gather(*(one(i) for i in warmed))
        for i in range(len(items)):
            if i not in warmed:
                await one(i)
        return failed

    async def sent(self, *, user: str, conv: str, seq: int) -> None:
        """A member sent ``seq``: they have read their conversation up to it.
        Stored (so unread counts only others' messages) but not announced:
        the message itself tells the other members as much."""
        marks = await self._conv_marks(conv)
        cur = marks.setdefault(user, [0, 0])
        if seq > cur[1]:
            cur[0], cur[1] = max(cur[0], seq), seq
            self._quiet.add((conv, user))

    def sent_now(self, *, user: str, conv: str, seq: int) -> None:
        """:meth:`sent` without waiting, for the send pipeline: the marks were
        primed when the conversation was loaded; if they were evicted since,
        the update runs in the background."""
        marks = self._marks.get(conv)
        if marks is None:
            task = asyncio.get_running_loop().create_task(self.sent(user=user, conv=conv, seq=seq))
            self._bg.add(task)
            task.add_done_callback(self._bg.discard)
            return
        cur = marks.setdefault(user, [0, 0])
        if seq > cur[1]:
            cur[0], cur[1] = max(cur[0], seq), seq
            self._quiet.add((conv, user))

    async def prime(self, conv: str) -> None:
        """Load the conversation's watermarks (before its first send here)."""
        await self._conv_marks(conv)

    async def get(self, conv: str, user: str | None) -> list[frames.Receipt]:
        c = await self._convs.get_for(ids.check(conv, "conv"), user)
        marks = await self._conv_marks(c.id)
        return [frames.Receipt(conv=c.id, user=u, delivered=m[0], read=m[1]) for u, m in sorted(marks.items())]

    async def read_upto(self, conv: str, user: str) -> int:
        marks = await self._conv_marks(conv)
        return marks.get(user, [0, 0])[1]

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(self._flush_sec)
            try:
                await self.flush()
            except Exception:  # noqa: BLE001 - keep flushing; the dirty set is kept for the next tick
                self._log.exception("receipt flush failed")

    async def flush(self, *, force: bool = False) -> None:
        now = asyncio.get_running_loop().time()
        take_quiet = force or now - self._quiet_at >= QUIET_FLUSH_INTERVAL
        if not self._dirty and not (take_quiet and self._quiet):
            return
        dirty, self._dirty = self._dirty, {}
        if take_quiet:
            quiet, self._quiet = self._quiet - dirty.keys(), set()
            self._quiet_at = now
        else:
            quiet = set()
            self._quiet -= dirty.keys()  # written with the announced ones below
        marks = []
        for conv, user in dirty.keys() | quiet:
            m = self._marks.get(conv, {}).get(user)
            if m is not None:
                marks.append(Watermark(conv=conv, user=user, delivered=m[0], read=m[1]))
        try:
            await self._store.merge_watermarks(marks)
        except BaseException:
            for key, read_moved in dirty.items():
                self._dirty[key] = self._dirty.get(key, False) or read_moved
            self._quiet |= quiet
            raise
        for w in marks:
            if (w.conv, w.user) not in dirty:
                continue
            info = await self._convs.get(w.conv)
            if info is None or len(info.members) > self._broadcast_max:
                continue
            frame = frames.encode(frames.Receipt(conv=w.conv, user=w.user, delivered=w.delivered, read=w.read))
            own_devices_too = dirty[(w.conv, w.user)]
            ev_receipt = self._subjects.ev_receipt
            publish = self._publish
            for member in info.members:
                if own_devices_too or member != w.user:
                    if publish is not None:
                        publish(ev_receipt(member), frame)
                    else:
                        await self._nc.publish(ev_receipt(member), frame)
