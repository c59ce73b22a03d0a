"""Frames beyond send/ack: read receipts, typing, presence watches, push
registration, receipt queries; and delivered receipts from acks.

Each handler checks what it can locally and turns the frame into one request
or a few publishes on NATS. Conversation members are cached per edge
(membership is immutable in protocol v1), so typing costs no round trip
after the first.

Receipts are on the hot path (every ack): an ack or read only updates a
dict; one edge-wide flush every receipt_flush_sec ([edge]) sends what was
gathered, one (socket, conversation) receipt per entry, in one callback
request per ``RECEIPT_BATCH_MAX`` entries (``sb.api.receipts.batch``)
through the lean bus client, with no task or future per receipt.
"""

from __future__ import annotations

import asyncio
import functools
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from edge.ratelimit import TokenBucket
from switchboard import api, events, frames
from switchboard.bus.conn import BusMsg
from switchboard.devices import RegisterRequest, check_token
from switchboard.errors import NotMember, SwitchboardError, from_code
from switchboard.presence.messages import ContactsRequest, WatchRequest
from switchboard.presence.reporter import PresenceReporter

if TYPE_CHECKING:
    from edge.server import Edge
    from edge.session import Session

MEMBERS_CACHE = 50_000  # conversations whose members this edge remembers
# Times a delivered receipt answered with a retryable error (the sequencer
# busy or away) is sent again, one flush apart: enough for a busy spell of
# a hello storm, while a sequencer that stays away is not asked forever.
DELIVERED_RETRIES = 5


class Features:
    def __init__(self, *, edge: Edge, presence_interval: float, presence_ttl_factor: float) -> None:
        self.edge = edge
        self._members: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        self._typing: dict[int, TokenBucket] = {}
        # session -> conv -> [delivered, read, ref of the last read frame, tries of the delivered part]
        self._receipts: dict[Session, dict[str, list[Any]]] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._flush_sec = edge.settings.edge_receipt_flush_sec  # receipts gathered this long, then sent
        # typing indicators per connection ([edge] typing_per_sec, typing_burst)
        self._typing_rate, self._typing_burst = edge.settings.typing_per_sec, edge.settings.typing_burst
        self.presence = PresenceReporter(nc=edge.nc, subjects=edge.subjects, edge_id=edge.edge_id,
                                         interval_sec=presence_interval, ttl_factor=presence_ttl_factor)
        # Users each watcher connected here watches (as the tracker recorded
        # them), for the watch gauges of /metrics; dropped with the watcher's
        # last socket here. Touched per watch request and per last disconnect.
        self._watching: dict[str, set[str]] = {}
        self.watch_entries = 0
        edge.metrics.presence_watches.set_function(lambda: self.watch_entries)
        edge.metrics.presence_watchers.set_function(lambda: len(self._watching))
        edge.sync_handlers[frames.Read] = self.read
        edge.frame_handlers.update({
            frames.Typing: self.typing,
            frames.PresenceWatch: self.presence_watch,
            frames.PushRegister: self.push_register,
            frames.ReceiptsRequest: self.receipts,
        })
        edge.connect_hooks.append(lambda s: self.presence.connected(s.user))
        edge.disconnect_hooks.append(self._disconnected)
        edge.ack_hooks.append(self.delivered)

    async def start(self) -> None:
        await self.presence.start()
        self._flusher = asyncio.create_task(self._flush_loop())

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        self._flush_receipts()
        await self.presence.stop()

    def _disconnected(self, sess: Session) -> None:
        self._typing.pop(id(sess), None)
        self.presence.disconnected(sess.user)
        if sess.user in self._watching and not self.edge.hub.sockets_of(sess.user):
            self.watch_entries -= len(self._watching.pop(sess.user))

    async def members(self, conv: str, user: str) -> tuple[str, ...]:
        cached = self._members.get(conv)
        if cached is None:
            reply = await self.edge.call(api.CONV_GET, events.ConvGetRequest(conv=conv, user=user))
            cached = self._members[conv] = tuple(reply.members)
            if len(self._members) > MEMBERS_CACHE:
                self._members.popitem(last=False)
        if user not in cached:
            raise NotMember(f"{user} is not a member of {conv}")
        return cached

    # -- receipts ------------------------------------------------------------------
    def read(self, sess: Session, f: frames.Read) -> None:
        p = self._pending(sess, f.conv)
        if f.seq >= p[1]:
            p[1], p[2] = f.seq, f.id

    def delivered(self, sess: Session, cursor: int) -> None:
        """An ack: raise the delivered watermark of each conversation covered."""
        for conv, seq in sess.take_acked(cursor).items():
            p = self._pending(sess, conv)
            p[0] = max(p[0], seq)

    def _pending(self, sess: Session, conv: str) -> list[Any]:
        """The receipt of ``sess`` in ``conv`` waiting for the next flush:
        [delivered, read, ref of the last read frame, tries of the delivered part]."""
        return self._receipts.setdefault(sess, {}).setdefault(conv, [0, 0, None, 0])

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self._flush_sec)
            self._flush_receipts()

    def _flush_receipts(self) -> None:
        if not self._receipts:
            return
        pending, self._receipts = self._receipts, {}
        edge = self.edge
        items: list[events.ReceiptRequest] = []
        owners: list[tuple[Session, str, int, int, str | None, int]] = []
        for sess, convs in pending.items():
            for conv, (delivered, read, ref, tries) in convs.items():
                items.append(events.ReceiptRequest(user=sess.user, conv=conv, delivered=delivered, read=read))
                owners.append((sess, conv, delivered, read, ref, tries))
        # One request per RECEIPT_BATCH_MAX receipts, whatever the number of
        # sockets and conversations (a storm's replays: thousands a flush).
        subject = api.RECEIPT_BATCH.subject_for(edge.subjects)
        step = events.RECEIPT_BATCH_MAX
        for i in range(0, len(items), step):
            edge.replies.request(subject, api.RECEIPT_BATCH.encode_request(events.ReceiptBatch(items[i:i + step])),
                                 functools.partial(self._batch_reply, owners[i:i + step]),
                                 timeout=edge.settings.send_timeout)

    def _batch_reply(self, owners: list[tuple[Session, str, int, int, str | None, int]],
                     msg: BusMsg | None, exc: BaseException | None) -> None:
        try:
            if exc is not None:
                raise exc
            reply = api.RECEIPT_BATCH.reply_of(msg.data, msg.headers)  # type: ignore[union-attr]
        except SwitchboardError as err:  # the whole batch: each receipt as if refused alone
            for owner in owners:
                self._receipt_failed(*owner, err)
            return
        for f in reply.failed:
            if 0 <= f.index < len(owners):
                self._receipt_failed(*owners[f.index], from_code(f.error.code, f.error.message, f.error.retry))

    def _receipt_failed(self, sess: Session, conv: str, delivered: int, read: int, ref: str | None, tries: int,
                        err: SwitchboardError) -> None:
        if read:  # the client asked: tell it (retry or not is its call, as for any request)
            sess._send(frames.error_frame(err, ref))
        if delivered and err.retry and tries < DELIVERED_RETRIES:
            # The edge's own receipt (from an ack): sent again with the next
            # flush. Dropped, it stayed unsent until the user's next ack in
            # that conversation, maybe never (bench storm: 1,744 of 21,655
            # answered with an error by a sequencer busy with hellos).
            p = self._pending(sess, conv)
            p[0], p[3] = max(p[0], delivered), max(p[3], tries + 1)
        elif delivered and not read:
            sess.log.info("delivered receipt failed", conv=conv, code=err.code, tries=tries + 1)

    async def receipts(self, sess: Session, f: frames.ReceiptsRequest) -> None:
        reply = await self.edge.call(api.RECEIPTS_GET, events.ReceiptsQuery(conv=f.conv, user=sess.user))
        for r in reply.receipts:
            sess._send(r)
        if f.id:  # the end of the answer: a client collecting receipts stops here
            sess._send(frames.Ok(ref=f.id))

    # -- typing ----------------------------------------------------------------------
    async def typing(self, sess: Session, f: frames.Typing) -> None:
        bucket = self._typing.get(id(sess))
        if bucket is None:
            bucket = self._typing[id(sess)] = TokenBucket(rate=self._typing_rate,
                                                                   burst=self._typing_burst)
        if not bucket.take():
            return  # typing is a hint: excess ones are dropped silently
        members = await self.members(f.conv, sess.user)
        data = frames.encode(frames.TypingEvent(conv=f.conv, user=sess.user))
        for m in members:
            if m != sess.user:
                self.edge.bus.publish(self.edge.subjects.ev_typing(m), data)

    # -- presence ----------------------------------------------------------------------
    async def presence_watch(self, sess: Session, f: frames.PresenceWatch) -> None:
        """Watch only users who share a conversation with the watcher (the
        sequencer says which); anyone else is answered as a user never seen
        (offline, no last seen) and not watched (docs/presence.md)."""
        users = list(dict.fromkeys(f.users))
        if not users:
            return
        contacts = await self.edge.call(api.CONV_CONTACTS, ContactsRequest(user=sess.user, users=users))
        known: dict[str, frames.Presence] = {}
        if contacts.users:
            reply = await self.edge.call(api.PRESENCE_WATCH, WatchRequest(watcher=sess.user, users=contacts.users))
            known = {p.user: p for p in reply.users}
            self._watched(sess.user, contacts.users)
        for u in users:
            p = known.get(u)
            sess._send(p if p is not None else frames.Presence(user=u, online=False, last_seen=None))

    def _watched(self, watcher: str, users: list[str]) -> None:
        """Count the watch entries the tracker now holds for ``watcher``
        (a set per watcher: watching again adds), unless its sockets here
        closed while the request was in flight."""
        if not self.edge.hub.sockets_of(watcher):
            return
        held = self._watching.setdefault(watcher, set())
        before = len(held)
        held.update(users)
        self.watch_entries += len(held) - before

    # -- push ----------------------------------------------------------------------------
    async def push_register(self, sess: Session, f: frames.PushRegister) -> frames.Ok | None:
        # Validated here too, so a bad token never leaves the edge.
        check_token(f.platform, f.token)
        await self.edge.call(api.PUSH_REGISTER, RegisterRequest(user=sess.user, platform=f.platform, token=f.token))
        return frames.Ok(ref=f.id) if f.id else None
