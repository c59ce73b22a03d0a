"""The sequencer service: ``sb.send.*`` plus the conversation API on ``sb.api``.

Registered as the NATS micro service ``sb-sequencer``, so ``nats micro ls``
and ``nats micro stats sb-sequencer`` show it. Every endpoint is served
through switchboard/rpc/ (typed, a task per request so one conversation's
write never holds up another's, errors answered one way, counted); the
descriptors are in switchboard/api.py.
"""

from __future__ import annotations

import asyncio
import uuid

import msgspec
from nats.aio.client import Client as NATS

import switchboard
from sequencer.conversations import Conversations
from sequencer.convlist import ConvLister
from sequencer.metrics import SequencerMetrics
from sequencer.partitions import PartitionLeases
from sequencer.pathtick import PathTicker
from sequencer.pipeline import Pipeline
from sequencer.push import PresenceView
from sequencer.quotas import UserQuota
from sequencer.receipts import Receipts
from switchboard import api, events, frames, ids, log, rpc, tls, trace_read
from switchboard.bus import streams
from switchboard.bus.conn import BusConnection, BusUnavailable, connect as bus_connect
from switchboard.bus.direct import direct_last_per_subject
from switchboard.bus.replies import Replies
from switchboard.config import Settings
from switchboard.errors import BadFrame, LimitExceeded, Unavailable
from switchboard.presence.messages import MAX_USERS_PER_REQUEST, ContactsReply, ContactsRequest
from switchboard.store import Store
from switchboard.subjects import partition_of
from switchboard.trace import TRACE_HEADERS, Tracer

_msg_decoder = msgspec.json.Decoder(frames.Msg)
# Conversations per batch direct get of last messages (one request each).
LAST_SEQS_CHUNK = 256
# Conversations looked at per unread / resync query: bounds the work one
# query can cause; a user in more conversations gets the most recent ones.
MAX_CONVS_PER_QUERY = 500


class Sequencer:
    def __init__(self, *, settings: Settings, nc: NATS, store: Store) -> None:
        self.settings = settings
        self.subjects = settings.subjects
        self._nc = nc
        self._js = nc.jetstream()
        self._store = store
        self.instance = f"seq-{uuid.uuid4().hex[:10]}"
        self.convs = Conversations(store=store, max_members=settings.max_group_members,
                                   create_per_min=settings.max_groups_per_min)
        self.presence = PresenceView(nc=nc, subjects=self.subjects, timeout=settings.sequencer_presence_timeout_sec)
        self._conn: BusConnection | None = None
        self._replies: Replies | None = None
        self.tracer: Tracer | None = None  # hops of traced messages (switchboard/trace.py), from start()
        self.pipeline: Pipeline | None = None
        self.leases: PartitionLeases | None = None
        self.ticker: PathTicker | None = None  # the path tick (sequencer/pathtick.py), from start()
        self.receipts = Receipts(nc=nc, subjects=self.subjects, store=store, convs=self.convs,
                                 last_seq=self._last_seq,
                                 broadcast_max_members=min(settings.fanout_max_members,
                                                           settings.receipt_broadcast_max_members),
                                 flush_sec=settings.sequencer_receipt_flush_sec)
        self.conv_list = ConvLister(nc=nc, settings=settings, store=store, convs=self.convs, receipts=self.receipts)
        # sb-sequencer: every API endpoint (switchboard/rpc/), counted for
        # `nats micro stats` and rpc.RpcCollector.
        self.rpc = rpc.RpcService(nc, name="sb-sequencer", version=switchboard.__version__,
                                  description="Orders, persists and fans out messages", subjects=self.subjects,
                                  metadata={"instance": self.instance}, queue_group="sb-sequencer",
                                  max_inflight=settings.api_max_inflight)
        self._handover_retry = settings.handover_retry_sec  # a system send finding no owner retries this often
        self.metrics = SequencerMetrics(self)
        self._log = log.get("sequencer", instance=self.instance)

    async def _last_seq(self, conv: str, refresh: bool = False) -> int:
        """The last seq stored, for checking a receipt: a lower bound from
        our own state first (every seq a client can hold is at most it);
        ``refresh``: read it (the stream, or the archive) unless we write the
        conversation and nothing is in flight."""
        assert self.pipeline is not None
        if not refresh:
            stored = self.pipeline.stored_last_seq(conv)
            if stored is not None:
                return stored
        return await self.pipeline.last_seq(conv)

    async def start(self, *, static_partitions: frozenset[int] | None = None) -> None:
        """``static_partitions``: own exactly these, without leases (tests
        that force two writers of one partition use it)."""
        s = self.settings
        self._conn = await bus_connect(servers=s.nats_servers, name=f"sb-sequencer-{self.instance}",
                                       tls=tls.nats_client_context(s))
        self._replies = Replies(self._conn)
        self._replies.start()
        self.receipts.attach_bus(self._conn.publish)
        self.tracer = Tracer(publish=self._conn.publish, prefix=self.subjects.prefix, role="sequencer",
                             instance=s.instance or self.instance, sample=s.trace_sample)
        messages_stream, _, _ = streams.names(s)
        owns = (static_partitions.__contains__ if static_partitions is not None else self._owns)
        self.pipeline = Pipeline(conn=self._conn, replies=self._replies, js=self._js, subjects=self.subjects,
                                 messages_stream=messages_stream, partitions=s.partitions, convs=self.convs,
                                 receipts=self.receipts, presence=self.presence,
                                 archived_last_seq=self._store.last_seq, owns=owns,
                                 max_body_bytes=s.max_body_bytes, fanout_max_members=s.fanout_max_members,
                                 timeout=s.send_timeout, dedup_window_sec=s.dedup_window_sec,
                                 fanout_quota=UserQuota(s.max_fanout_per_min, what="message copies")
                                 if s.max_fanout_per_min > 0 else None, tracer=self.tracer)
        await self.receipts.start()
        await self.presence.start()
        svc = self.rpc
        await svc.start()
        await svc.add(api.SYSTEM_SEND, self._system_send)
        await svc.add(api.CONV_CREATE, self._conv_create)
        await svc.add(api.CONV_GET, self._conv_get)
        await svc.add(api.CONV_CONTACTS, self._conv_contacts)
        await svc.add(api.RECEIPT, self._receipt, with_subject=True)
        await svc.add(api.RECEIPT_BATCH, self._receipt_batch)
        await svc.add(api.RECEIPTS_GET, self._receipts_get)
        await svc.add(api.UNREAD, self._unread)
        await svc.add(api.CONV_LARGE, self._conv_large)
        await svc.add(api.CONV_RANGES, self._conv_ranges)
        await svc.add(api.CONV_LIST, self._conv_list)
        await svc.add(api.TRACE_GET, self._trace_get)
        # Per instance (its own subject; micro's default queue group): who
        # owns what, and the pipeline's counters, for operators and handover tests.
        await svc.add(api.SEQUENCER_STATS, self._stats, queue_group="q", instance=self.instance)
        if static_partitions is not None:
            for part in static_partitions:
                self.pipeline.on_acquire(part)
        else:
            self.leases = PartitionLeases(nc=self._nc, settings=s, instance=self.instance,
                                          on_acquire=self.pipeline.on_acquire, on_release=self.pipeline.on_release,
                                          inflight=self.pipeline.inflight_of, replies=self._replies)
            await self.leases.start()
        self.ticker = PathTicker(conn=self._conn, subject=self.subjects.tick_inbox, interval=s.tick_interval,
                                 instance=self.instance)
        self.ticker.start()
        await self._conn.flush()
        self._log.info("sequencer started", prefix=self.subjects.prefix, partitions=s.partitions,
                       owned=len(self.leases.owned) if self.leases else len(static_partitions or ()))

    def _owns(self, partition: int) -> bool:
        return self.leases is not None and self.leases.owns(partition)

    async def stop(self) -> None:
        if self.ticker is not None:
            await self.ticker.stop()
        if self.leases is not None:
            await self.leases.stop()  # releases every partition after its writes drained
            self.leases = None
        if self.pipeline is not None:
            await self.pipeline.stop()
        await self.rpc.stop(timeout=self.settings.send_timeout)
        await self.receipts.stop()
        await self.presence.stop()
        if self._replies is not None:
            self._replies.stop()
        if self._conn is not None:
            await self._conn.close()
        self._log.info("sequencer stopped")

    @property
    def api_counts(self) -> dict[str, int]:
        """API requests refused as busy (over [sequencer] api_max_inflight) and failed on
        an unexpected error, for /metrics (read from self.rpc's counts)."""
        return {"busy": self.rpc.busy,
                "internal_errors": sum(c.by_code.get("internal", 0) for c in self.rpc.counts.values())}

    # -- handlers (served by self.rpc: see switchboard/api.py) -------------------------
    async def _stats(self, _: None) -> api.SequencerStats:
        assert self.pipeline is not None
        return msgspec.convert({  # the pipeline's counters beside the partitions (others ignored)
            "instance": self.instance,
            "owned": self.leases.owned if self.leases else sorted(self.pipeline.partitions),
            "members": self.leases.members if self.leases else [],
            **self.pipeline.stats,
        }, api.SequencerStats)

    async def _system_send(self, r: events.SendRequest) -> events.SendReply:
        """A service's system message: forwarded to the owner of the
        conversation's partition on a subject only sequencers may publish
        (the hot path's callback pipeline answers it). Traced (the Sb-Trace
        header on the forward) when the request says ``trace`` or this
        sequencer's sampler hits."""
        conv = ids.check(r.conv, "conv")
        subject = self.subjects.system_send_part(partition_of(conv, self.settings.partitions))
        assert self._replies is not None and self.tracer is not None
        headers = TRACE_HEADERS if r.trace or self.tracer.sampler.hit() else None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.send_timeout
        while True:
            try:
                reply = await self._replies.call(subject, api.SYSTEM_SEND.encode_request(r), headers=headers,
                                                 timeout=max(0.05, deadline - loop.time()))
                return api.SYSTEM_SEND.reply_of(reply.data)  # the owner's error is answered as ours
            except BusUnavailable:
                # No owner right now (a handover): try again shortly.
                if loop.time() + self._handover_retry >= deadline:
                    raise Unavailable("no sequencer owns this conversation right now; retry") from None
                await asyncio.sleep(self._handover_retry)

    async def _conv_create(self, r: events.ConvCreateRequest) -> events.ConvReply:
        conv = await self.convs.create(creator=r.creator, members=r.members, title=r.title, conv_id=r.conv)
        reply = events.ConvReply(conv=conv.id, members=list(conv.members), title=conv.title, kind=conv.kind)
        # Tell every member's devices (ephemeral; a device that is offline sees it
        # when a first message arrives or in its conversation list).
        note = frames.encode(frames.Conv(conv=conv.id, members=list(conv.members), title=conv.title))
        # Edges subscribe their sockets to a large group's subject on this header.
        headers = {"Sb-Large-Conv": conv.id} if len(conv.members) > self.settings.fanout_max_members else None
        for m in conv.members:
            await self._nc.publish(self.subjects.ev_conv(m), note, headers=headers)
        return reply

    async def _conv_get(self, r: events.ConvGetRequest) -> events.ConvReply:
        conv = await self.convs.get_for(ids.check(r.conv, "conv"), r.user)
        return events.ConvReply(conv=conv.id, members=list(conv.members), title=conv.title, kind=conv.kind)


    async def _conv_contacts(self, r: ContactsRequest) -> ContactsReply:
        """Which of ``users`` share a conversation with ``user``: the edge asks
        before a presence watch (docs/presence.md, "Who may watch")."""
        if len(r.users) > MAX_USERS_PER_REQUEST:
            raise LimitExceeded(f"at most {MAX_USERS_PER_REQUEST} users per request")
        return ContactsReply(users=await self.convs.contacts(r.user, r.users))

    async def _receipt(self, r: events.ReceiptRequest, subject: str) -> events.ReceiptsReply:
        if r.conv != subject.rsplit(".", 1)[-1]:
            raise BadFrame("conversation in subject and body differ")
        w = await self.receipts.apply(user=r.user, conv=r.conv, delivered=r.delivered, read=r.read)
        return events.ReceiptsReply(receipts=[frames.Receipt(conv=w.conv, user=w.user, delivered=w.delivered,
                                                             read=w.read)])

    async def _receipt_batch(self, b: events.ReceiptBatch) -> events.ReceiptBatchReply:
        if len(b.receipts) > events.RECEIPT_BATCH_MAX:
            raise LimitExceeded(f"at most {events.RECEIPT_BATCH_MAX} receipts per batch")
        failed = await self.receipts.apply_many(b.receipts)
        return events.ReceiptBatchReply(failed=[events.ReceiptFailure(index=i, error=rpc.error_body(err))
                                                for i, err in failed])

    async def _receipts_get(self, q: events.ReceiptsQuery) -> events.ReceiptsReply:
        return events.ReceiptsReply(receipts=await self.receipts.get(q.conv, q.user))

    async def _user_convs(self, user: str) -> list[tuple[str, int]]:
        convs = (await self._store.conversations_of(ids.check(user, "user")))[-MAX_CONVS_PER_QUERY:]
        return list(zip(convs, await self._last_seqs(convs)))

    async def _last_seqs(self, convs: list[str]) -> list[int]:
        """Last seq of many conversations: our own state where we write them,
        then ONE batch direct get per LAST_SEQS_CHUNK for the rest (the last
        message of each subject), then the archive for those MESSAGES no
        longer holds. A resync or unread query of a user in 500
        conversations was 500 stream requests plus 500 store reads."""
        assert self.pipeline is not None
        known: dict[str, int | None] = {c: self.pipeline.known_last_seq(c) for c in convs}
        rest = [c for c, v in known.items() if v is None]
        messages, _, _ = streams.names(self.settings)
        for i in range(0, len(rest), LAST_SEQS_CHUNK):
            chunk = rest[i:i + LAST_SEQS_CHUNK]
            batch = await direct_last_per_subject(self._nc, stream=messages,
                                                  subject=[self.subjects.msg(c) for c in chunk], limit=len(chunk),
                                                  timeout=self.settings.send_timeout)
            for _, headers, data in batch.entries:
                conv = headers.get("Nats-Subject", "").rpartition(".")[2]
                if conv in known:
                    known[conv] = _msg_decoder.decode(data).seq
        missing = [c for c, v in known.items() if v is None]
        if missing:  # aged out of MESSAGES (or never written): the archive knows
            for c, last in zip(missing, await asyncio.gather(*(self._store.last_seq(c) for c in missing))):
                known[c] = last
        return [known[c] or 0 for c in convs]

    async def _unread(self, q: events.UnreadQuery) -> events.UnreadReply:
        by_conv = {}
        for conv, last in await self._user_convs(q.user):
            n = last - await self.receipts.read_upto(conv, q.user)
            if n > 0:
                by_conv[conv] = n
        return events.UnreadReply(total=sum(by_conv.values()), by_conv=by_conv)

    async def _conv_large(self, q: events.RangesQuery) -> events.RangesReply:
        """The user's large groups (pull mode) with their last seq."""
        convs = (await self._store.conversations_of(ids.check(q.user, "user")))[-MAX_CONVS_PER_QUERY:]
        large = []
        for cid in convs:
            conv = await self.convs.get(cid)
            if conv is not None and len(conv.members) > self.settings.fanout_max_members:
                large.append(cid)
        lasts = await self._last_seqs(large)
        return events.RangesReply(ranges=[frames.ResyncRange(conv=c, upto=last) for c, last in zip(large, lasts)])

    async def _trace_get(self, q: trace_read.TraceQuery) -> trace_read.TraceReply:
        """A message's trace (switchboard/trace_read.py): ``{conv, seq}`` or
        ``{id, conv?, sender?}`` -> ``{records: [...]}``, for support tools."""
        return await trace_read.answer(self._nc, self.settings, q, archive=trace_read.store_lookup(self._store),
                                       timeout=self.settings.send_timeout)

    async def _conv_ranges(self, q: events.RangesQuery) -> events.RangesReply:
        return events.RangesReply(ranges=[frames.ResyncRange(conv=c, upto=last)
                                          for c, last in await self._user_convs(q.user) if last > 0])


    async def _conv_list(self, q: events.ConvListQuery) -> events.ConvListReply:
        """A ``conv.list`` frame: the user's conversations, newest activity first (sequencer/convlist.py)."""
        return await self.conv_list.list(q.user)
