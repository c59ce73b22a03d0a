"""The sequencer service: ``sb.send.*`` plus the conversation API on ``sb.api``.

Registered as the NATS micro service ``sb-sequencer``, so ``nats micro ls``
and ``nats micro stats sb-sequencer`` show it. Handlers return at once and
work in a task: a micro endpoint's callback runs one request at a time, and
one conversation's write must never hold up another's.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import Service

import switchboard
from switchboard import events, frames, ids, log
from switchboard.bus import streams
from switchboard.bus.jspub import JsPublisher
from switchboard.config import Settings
from switchboard.errors import BadFrame, SwitchboardError
from switchboard.store import Store

from sequencer.conversations import Conversations
from sequencer.fanout import Fanout
from sequencer.ordering import Orderer
from sequencer.push import PresenceView, push_entry
from sequencer.receipts import Receipts

_send_decoder = msgspec.json.Decoder(events.SendRequest)
_create_decoder = msgspec.json.Decoder(events.ConvCreateRequest)
_get_decoder = msgspec.json.Decoder(events.ConvGetRequest)
_receipt_decoder = msgspec.json.Decoder(events.ReceiptRequest)
_receipts_query = msgspec.json.Decoder(events.ReceiptsQuery)
_unread_query = msgspec.json.Decoder(events.UnreadQuery)
_ranges_query = msgspec.json.Decoder(events.RangesQuery)
# Conversations looked at per unread / resync query: bounds the work one
# query can cause; a user in more conversations gets the most recent ones.
MAX_CONVS_PER_QUERY = 500


class Sequencer:
    def __init__(self, *, settings: Settings, nc: NATS, store: Store) -> None:
        self.settings = settings
        self.subjects = settings.subjects
        self._nc = nc
        self._js = nc.jetstream()
        self._pub = JsPublisher(nc=nc)
        self._store = store
        messages_stream, _, _ = streams.names(settings)
        self.convs = Conversations(store=store, max_members=settings.max_group_members)
        self.orderer = Orderer(js=self._js, pub=self._pub, stream=messages_stream, subject_of=self.subjects.msg,
                               archived_last_seq=store.last_seq, timeout=settings.send_timeout)
        self.fanout = Fanout(pub=self._pub, subjects=self.subjects, timeout=settings.send_timeout)
        self.receipts = Receipts(nc=nc, subjects=self.subjects, store=store, convs=self.convs,
                                 last_seq=self.orderer.last_seq, broadcast_max_members=settings.fanout_max_members)
        self.presence = PresenceView(nc=nc, subjects=self.subjects)
        self._service: Service | None = None
        self._tasks: set[asyncio.Task] = set()
        self._log = log.get("sequencer")

    async def start(self) -> None:
        await self._pub.start()
        svc = await add_service(self._nc, name="sb-sequencer", version=switchboard.__version__,
                                description="Orders, persists and fans out messages")
        p = self.subjects
        await svc.add_endpoint(name="send", subject=p.send_all, queue_group="sb-sequencer",
                               handler=self._spawn(self._send))
        await svc.add_endpoint(name="system-send", subject=p.api("system", "send"), queue_group="sb-sequencer",
                               handler=self._spawn(self._system_send))
        await svc.add_endpoint(name="conv-create", subject=p.api("conv", "create"), queue_group="sb-sequencer",
                               handler=self._spawn(self._conv_create))
        await svc.add_endpoint(name="conv-get", subject=p.api("conv", "get"), queue_group="sb-sequencer",
                               handler=self._spawn(self._conv_get))
        await svc.add_endpoint(name="receipt", subject=p.receipt_all, queue_group="sb-sequencer",
                               handler=self._spawn(self._receipt))
        await svc.add_endpoint(name="receipts-get", subject=p.api("receipts", "get"), queue_group="sb-sequencer",
                               handler=self._spawn(self._receipts_get))
        await svc.add_endpoint(name="unread", subject=p.api("unread"), queue_group="sb-sequencer",
                               handler=self._spawn(self._unread))
        await svc.add_endpoint(name="conv-large", subject=p.api("conv", "large"), queue_group="sb-sequencer",
                               handler=self._spawn(self._conv_large))
        await svc.add_endpoint(name="conv-ranges", subject=p.api("conv", "ranges"), queue_group="sb-sequencer",
                               handler=self._spawn(self._conv_ranges))
        await self.receipts.start()
        await self.presence.start()
        self._service = svc
        self._log.info("sequencer started", prefix=p.prefix)

    async def stop(self) -> None:
        if self._service is not None:
            await self._service.stop()
            self._service = None
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self.settings.send_timeout)
        await self.receipts.stop()
        await self.presence.stop()
        await self._pub.stop()
        self._log.info("sequencer stopped")

    def _spawn(self, fn):
        async def handler(req: Request) -> None:
            task = asyncio.create_task(self._guard(fn, req))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return handler

    async def _guard(self, fn, req: Request) -> None:
        try:
            reply = await fn(req)
            await req.respond(events.encode(reply))
        except SwitchboardError as exc:
            await _respond_error(req, exc)
        except msgspec.DecodeError as exc:
            await _respond_error(req, BadFrame(f"bad request: {exc}"))
        except Exception as exc:  # noqa: BLE001 - a bug must answer, not hang the caller
            self._log.exception("request failed", subject=req.subject)
            await _respond_error(req, SwitchboardError(f"internal error: {type(exc).__name__}", retry=True))

    # -- handlers -------------------------------------------------------------
    async def _send(self, req: Request) -> events.SendReply:
        return await self.send(_send_decoder.decode(req.data), subject_conv=req.subject.rsplit(".", 1)[-1])

    async def _system_send(self, req: Request) -> events.SendReply:
        r = _send_decoder.decode(req.data)
        r.kind = "system"
        return await self.send(r, subject_conv=r.conv)

    async def send(self, r: events.SendRequest, *, subject_conv: str) -> events.SendReply:
        ids.check(r.sender, "sender")
        ids.check(r.id, "message id")
        ids.check(r.conv, "conv")
        if r.conv != subject_conv:
            raise BadFrame("conversation in subject and body differ")
        if r.to is not None:
            ids.check(r.to, "user")
        if len(r.body.encode()) > self.settings.max_body_bytes:
            raise SwitchboardError(f"body exceeds {self.settings.max_body_bytes} bytes", code="limit_exceeded")
        system = r.kind == "system"
        conv = await self.convs.for_send(conv_id=r.conv, sender=r.sender, to=r.to, system=system)
        pending: list = []

        large = len(conv.members) > self.settings.fanout_max_members

        async def issue_fanout(msg: frames.Msg, data: bytes) -> None:
            # A large group gets no INBOX copies: members' edges read the
            # conversation's republished MESSAGES subject (pull mode).
            if not large:
                pending.extend(await self.fanout.issue(msg.conv, msg.seq, data, conv.members))

        appended = await self.orderer.append(conv=conv.id, sender=r.sender, id=r.id, body=r.body,
                                             kind="system" if system else "user", then=issue_fanout)
        msg = appended.msg
        if not system and not appended.duplicate:
            await self.receipts.sent(user=msg.from_, conv=msg.conv, seq=msg.seq)
        offline = await self.presence.offline(m for m in conv.members if m != msg.from_)
        if offline:
            title = conv.title or msg.from_
            await self.fanout.enqueue_push(msg.conv, msg.seq, {u: push_entry(msg, u, title) for u in offline})
        await self.fanout.complete(msg.conv, msg.seq, appended.data, pending)
        return events.SendReply(conv=msg.conv, seq=msg.seq, ts=msg.ts, id=msg.id, duplicate=appended.duplicate)

    async def _conv_create(self, req: Request) -> events.ConvReply:
        r = _create_decoder.decode(req.data)
        conv = await self.convs.create(creator=r.creator, members=r.members, title=r.title, conv_id=r.conv)
        reply = events.ConvReply(conv=conv.id, members=list(conv.members), title=conv.title, kind=conv.kind)
        # Tell every member's devices (ephemeral; a device that is offline sees it
        # when a first message arrives or in its conversation list).
        note = frames.encode(frames.Conv(conv=conv.id, members=list(conv.members), title=conv.title))
        # Edges subscribe their sockets to a large group's subject on this header.
        headers = {"Sb-Large-Conv": conv.id} if len(conv.members) > self.settings.fanout_max_members else None
        for m in conv.members:
            await self._nc.publish(self.subjects.live(m), note, headers=headers)
        return reply

    async def _conv_get(self, req: Request) -> events.ConvReply:
        r = _get_decoder.decode(req.data)
        conv = await self.convs.get_for(ids.check(r.conv, "conv"), r.user)
        return events.ConvReply(conv=conv.id, members=list(conv.members), title=conv.title, kind=conv.kind)


    async def _receipt(self, req: Request) -> events.ReceiptsReply:
        r = _receipt_decoder.decode(req.data)
        if r.conv != req.subject.rsplit(".", 1)[-1]:
            raise BadFrame("conversation in subject and body differ")
        w = await self.receipts.apply(user=r.user, conv=r.conv, delivered=r.delivered, read=r.read)
        return events.ReceiptsReply(receipts=[frames.Receipt(conv=w.conv, user=w.user, delivered=w.delivered,
                                                             read=w.read)])

    async def _receipts_get(self, req: Request) -> events.ReceiptsReply:
        q = _receipts_query.decode(req.data)
        return events.ReceiptsReply(receipts=await self.receipts.get(q.conv, q.user))

    async def _user_convs(self, user: str) -> list[tuple[str, int]]:
        convs = (await self._store.conversations_of(ids.check(user, "user")))[-MAX_CONVS_PER_QUERY:]
        lasts = await asyncio.gather(*(self.orderer.last_seq(c) for c in convs))
        return list(zip(convs, lasts))

    async def _unread(self, req: Request) -> events.UnreadReply:
        q = _unread_query.decode(req.data)
        by_conv = {}
        for conv, last in await self._user_convs(q.user):
            n = last - await self.receipts.read_upto(conv, q.user)
            if n > 0:
                by_conv[conv] = n
        return events.UnreadReply(total=sum(by_conv.values()), by_conv=by_conv)

    async def _conv_large(self, req: Request) -> events.RangesReply:
        """The user's large groups (pull mode) with their last seq."""
        q = _ranges_query.decode(req.data)
        convs = (await self._store.conversations_of(ids.check(q.user, "user")))[-MAX_CONVS_PER_QUERY:]
        large = []
        for cid in convs:
            conv = await self.convs.get(cid)
            if conv is not None and len(conv.members) > self.settings.fanout_max_members:
                large.append(cid)
        lasts = await asyncio.gather(*(self.orderer.last_seq(c) for c in large))
        return events.RangesReply(ranges=[frames.ResyncRange(conv=c, upto=last) for c, last in zip(large, lasts)])

    async def _conv_ranges(self, req: Request) -> events.RangesReply:
        q = _ranges_query.decode(req.data)
        return events.RangesReply(ranges=[frames.ResyncRange(conv=c, upto=last)
                                          for c, last in await self._user_convs(q.user) if last > 0])


async def _respond_error(req: Request, exc: SwitchboardError | Any) -> None:
    body = events.error_body(exc)
    await req.respond_error(code=body.code, description=body.message,
                            data=events.encode(events.SendReply(error=body)))
