"""The send pipeline: sequence, persist, fan out, answer, with no task,
future or lock per message.

This process owns some conversation partitions (:mod:`sequencer.partitions`)
and is their only writer, so a conversation's state lives here: its members,
its last seq and the stream sequence of the message holding it. A send is a
small object that moves through callbacks run inline in the NATS read loop:

1. ``sb.send.<P>.<conv>`` arrives; the conversation is ready (members, last
   seq, presence and receipt marks loaded) and has no write in flight: the
   message gets ``last_seq + 1`` and is published to MESSAGES with
   ``Nats-Msg-Id`` (a retried send lands once) and
   ``Nats-Expected-Last-Subject-Sequence`` (the fence: if any other process
   wrote this conversation meanwhile, JetStream refuses and we reload).
   Otherwise the send waits in the conversation's queue: one MESSAGES write
   per conversation is in flight at a time (the next one's fence needs this
   one's stream sequence); different conversations are pipelined freely.
   That per-conversation state and its decisions (next seq, fence, queue,
   reload on a fence conflict) are :class:`sequencer.ordering.ConvOrder`'s,
   which does no I/O.
2. Its ack arrives: the INBOX copies (``Nats-Msg-Id = conv:seq:user``) and
   the PUSH entries of offline members are published at once, before the
   conversation's next write, so every mailbox gets a conversation in seq
   order. The next queued send of the conversation is written.
3. The last copy's ack arrives: ``sent`` is answered (durable in MESSAGES
   and in every member's INBOX). Copies whose ack failed are re-published
   (deduplicated by their Msg-Id) up to FANOUT_ATTEMPTS times.

What needs I/O beyond publishing (loading a conversation, its last seq from
the stream or the archive, presence of its members, a duplicate's original)
runs in one task per *conversation load*, never per message; sends arriving
meanwhile queue behind it.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, KeysView
from functools import partial
from time import perf_counter
from typing import Any

import msgspec
import nats.errors
import nats.js.errors
from nats.js import JetStreamContext

from sequencer.conversations import Conversations, now_ms
from sequencer.ordering import LOAD, ConvOrder
from sequencer.push import PresenceView, push_entry
from sequencer.quotas import UserQuota
from sequencer.receipts import Receipts
from switchboard import backoff, events, frames, ids, log
from switchboard.bus.conn import BusConnection, BusError, BusMsg, encode_headers
from switchboard.bus.jsack import WRONG_LAST_SEQUENCE, decode_ack
from switchboard.bus.replies import Replies
from switchboard.errors import BadFrame, LimitExceeded, NotMember, SwitchboardError, Unavailable
from switchboard.metrics import IntHistogram
from switchboard.store import Conversation
from switchboard.subjects import Subjects, partition_of
from switchboard.trace import TRACE_HEADER, TRACE_HEADER_BYTES, TRACE_HEADER_LINE, TRACE_HEADERS, Tracer

# A conversation written by two processes at once (only during a handover)
# converges in a round or two; more than this means something else is wrong.
MAX_FENCE_RETRIES = 20
# Re-publishes of INBOX/PUSH copies whose ack did not come or was an error:
# a JetStream leader change takes a few seconds (6-10 s measured by bench
# faults, nats-leader), so the attempts are spaced by a backoff from 0.1 s
# doubling to 2 s and last ~15 s; only then is the send answered
# `unavailable` (the client resends; the duplicate's copies queue behind).
# Immediate retries gave up within milliseconds of an election's first
# refusals, and the resend's copies then went out after later messages'.
FANOUT_ATTEMPTS = 10
FANOUT_RETRY_FIRST_SEC = 0.1
FANOUT_RETRY_CAP_SEC = 2.0
# Conversations whose state is kept; idle ones beyond it are dropped and
# reloaded from the stream on their next message.
MAX_CONVS = 100_000

_send_decoder = msgspec.json.Decoder(events.SendRequest)
_msg_decoder = msgspec.json.Decoder(frames.Msg)
_encode = msgspec.json.Encoder().encode


class _Conv(ConvOrder["_Send"]):
    """What this process knows of one conversation it writes (its order
    and fence state: :class:`ConvOrder`)."""

    __slots__ = ("id", "partition", "subject", "info", "members", "large", "inboxes", "fanning", "fan_wait",
                 "draining")

    def __init__(self, conv_id: str, partition: int, subject: str) -> None:
        super().__init__()
        self.id = conv_id
        self.partition = partition
        self.subject = subject  # sb.msg.<conv>
        self.info: Conversation | None = None
        self.members: frozenset[str] = frozenset()
        self.large = False
        # Per member: (INBOX subject, header text before and after the seq):
        # built once per conversation, not per message (ids are checked, so
        # plain formatting is safe in a header).
        self.inboxes: list[tuple[str, str, str]] = []
        # Ordered mode after a failed fan-out (Pipeline._fanout): the send
        # whose copies are being retried or awaited, and the stored sends
        # whose copies wait behind it, in seq order.
        self.fanning: _Send | None = None
        self.fan_wait: deque[_Send] = deque()
        self.draining = False

    @property
    def idle(self) -> bool:
        return super().idle and self.fanning is None and not self.fan_wait


class _Send:
    """One send on its way; answered exactly once."""

    __slots__ = ("req", "reply", "system", "msg", "data", "pending", "failed", "attempt", "fences", "duplicate",
                 "traced", "t0")

    msg: frames.Msg  # set by Pipeline._write (or a repair's read); read only after it

    def __init__(self, req: events.SendRequest, reply: str, system: bool, traced: bool = False) -> None:
        self.req = req
        self.reply = reply
        self.system = system
        self.traced = traced  # the request carried Sb-Trace: record this message's hops
        self.data = b""
        self.pending = 0
        self.failed: list[tuple[str, bytes, bytes]] = []  # (subject, data, headers) of copies to re-publish
        self.attempt = 0
        self.fences = 0
        self.duplicate = False
        self.t0 = perf_counter()  # arrival: the send latency metric ends at the answer


class Pipeline:
    def __init__(self, *, conn: BusConnection, replies: Replies, js: JetStreamContext, subjects: Subjects,
                 messages_stream: str, partitions: int, convs: Conversations, receipts: Receipts,
                 presence: PresenceView, archived_last_seq: Callable[[str], Awaitable[int]],
                 owns: Callable[[int], bool], max_body_bytes: int, fanout_max_members: int,
                 timeout: float, dedup_window_sec: float = 120.0, fanout_quota: UserQuota | None = None,
                 tracer: Tracer | None = None) -> None:
        self._conn = conn
        self._replies = replies
        self._js = js
        self._subjects = subjects
        self._stream = messages_stream
        self._partitions = partitions
        self._convs_api = convs
        self._receipts = receipts
        self._presence = presence
        self._archived_last_seq = archived_last_seq
        self.owns = owns
        self._max_body = max_body_bytes
        self._large_above = fanout_max_members
        self._timeout = timeout
        self._repair_window_ms = dedup_window_sec * 1000 / 2
        self._quota = fanout_quota  # copies a user's sends may cause per minute (sequencer/quotas.py)
        self._tracer = tracer  # hops of traced messages (switchboard/trace.py); None: not recorded
        self._push_prefix = f"{subjects.prefix}.push."
        self._convs: dict[str, _Conv] = {}
        self._subs: dict[int, tuple[int, int]] = {}  # partition -> (send sid, system sid)
        self.inflight: dict[int, int] = {}  # partition -> sends not yet answered
        self._tasks: set[asyncio.Task[None]] = set()
        self._log = log.get("sequencer.pipeline")
        # Counters of /metrics (sequencer/metrics.py reads them at scrape):
        # plain ints, one dict increment where they happen, no lock.
        self.stats = {"writes": 0, "sent": 0, "errors": 0, "not_owner": 0, "fence_retries": 0, "duplicates": 0,
                      "repairs": 0, "system": 0, "inbox_copies": 0, "push_entries": 0, "copy_retries": 0,
                      "fanout_waits": 0, "loads": 0, "load_failures": 0}
        self.error_codes: dict[str, int] = {}  # every error answered to a send, by code
        # Arrival -> `sent` answer of each stored send (queue behind the
        # conversation's write, load, MESSAGES write, INBOX/PUSH copies).
        self.send_seconds = IntHistogram()

    # -- partitions come and go ---------------------------------------------------------
    def on_acquire(self, p: int) -> None:
        for st in self._convs.values():
            if st.partition == p:
                st.reacquired()  # another process may have written since we last did
        send_sid = self._conn.subscribe(self._subjects.send_partition_all(p), partial(self._on_send, False))
        sys_sid = self._conn.subscribe(self._subjects.system_send_part(p), partial(self._on_send, True))
        self._subs[p] = (send_sid, sys_sid)

    def on_release(self, p: int) -> None:
        sids = self._subs.pop(p, None)
        if sids is not None:
            for sid in sids:
                self._conn.unsubscribe(sid)

    def inflight_of(self, p: int) -> int:
        return self.inflight.get(p, 0)

    @property
    def partitions(self) -> KeysView[int]:
        """The partitions this pipeline takes sends of now (acquired, not
        released): a read-only live view, for stats and metrics."""
        return self._subs.keys()

    async def stop(self) -> None:
        for p in list(self._subs):
            self.on_release(p)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self._timeout)

    # -- 1. a send arrives ----------------------------------------------------------------
    def _on_send(self, system: bool, m: BusMsg) -> None:
        try:
            req = _send_decoder.decode(m.data)
            if system:
                req.kind = "system"
                subject_conv = req.conv
            else:
                req.kind = "user"  # whatever the payload claims: the edge subject carries user sends
                subject_conv = m.subject.rpartition(".")[2]
            ids.check(req.sender, "sender")
            ids.check(req.id, "message id")
            ids.check(req.conv, "conv")
            if req.conv != subject_conv:
                raise BadFrame("conversation in subject and body differ")
            if req.to is not None:
                ids.check(req.to, "user")
            if len(req.body) > self._max_body or len(req.body.encode()) > self._max_body:
                raise LimitExceeded(f"body exceeds {self._max_body} bytes")
        except msgspec.DecodeError as exc:
            self._answer_error(m.reply, BadFrame(f"bad request: {exc}"))
            return
        except SwitchboardError as exc:
            self._answer_error(m.reply, exc)
            return
        p = partition_of(req.conv, self._partitions)
        # An untraced user send has no header block at all: the empty bytes
        # end the test before any search.
        traced = True if m.hdr and m.hdr.find(TRACE_HEADER_BYTES) >= 0 and self._tracer is not None else False
        if not self.owns(p):
            self.stats["not_owner"] += 1
            err = Unavailable("this conversation is moving to another sequencer; retry")
            if traced:
                self._trace(_Send(req, m.reply, system), "error", code=err.code)
            self._answer_error(m.reply, err)
            return
        st = self._convs.get(req.conv)
        if st is None:
            if len(self._convs) >= MAX_CONVS:
                self._evict()
            st = self._convs[req.conv] = _Conv(req.conv, p, self._subjects.msg(req.conv))
        s = _Send(req, m.reply, system, traced)
        self.inflight[p] = self.inflight.get(p, 0) + 1
        st.push(s)
        self._pump(st)

    def _pump(self, st: _Conv) -> None:
        """Write the next queued send of ``st`` if nothing is in flight."""
        while (s := st.next()) is not None:
            if s is LOAD:
                self._spawn(self._load(st))
                return
            if not self.owns(st.partition):
                self.stats["not_owner"] += 1
                self._finish(st.partition, s, Unavailable("this conversation is moving to another sequencer; retry"))
                continue
            if not s.system and s.req.sender not in st.members:
                self._finish(st.partition, s, NotMember(f"{s.req.sender} is not a member of {st.id}"))
                continue
            if self._quota is not None and not s.system and not self._quota.take(s.req.sender, len(st.members)):
                self._finish(st.partition, s, self._quota.refusal(s.req.sender, len(st.members)))
                continue
            self._write(st, s)

    def _write(self, st: _Conv, s: _Send) -> None:
        r = s.req
        msg = frames.Msg(conv=st.id, seq=st.begin_write(), id=r.id, from_=r.sender, body=r.body, ts=now_ms(),
                         kind=r.kind)
        s.msg, s.data = msg, frames.encode(msg)
        headers = (f"NATS/1.0\r\nNats-Msg-Id: {st.id}:{r.sender}:{r.id}\r\n"
                   f"Nats-Expected-Last-Subject-Sequence: {st.last_stream_seq}\r\n"
                   f"{TRACE_HEADER_LINE if s.traced else ''}\r\n").encode()
        self.stats["writes"] += 1
        try:
            self._replies.request(st.subject, s.data, partial(self._on_stored, st, s), headers=headers,
                                  timeout=self._timeout)
        except BusError as exc:  # stopping: the bus is gone
            st.aborted()
            self._finish(st.partition, s, Unavailable(f"sequencer stopping: {exc.message}"))

    # -- 2. MESSAGES acked ----------------------------------------------------------------
    def _on_stored(self, st: _Conv, s: _Send, m: BusMsg | None, err: BaseException | None) -> None:
        ack = None
        if err is None and m is not None:
            try:
                ack = decode_ack(m.data)
            except msgspec.DecodeError:
                err = Unavailable("unreadable publish ack")
        if ack is None or ack.error is not None:
            if ack is not None and ack.error is not None and ack.error.err_code == WRONG_LAST_SEQUENCE \
                    and s.fences < MAX_FENCE_RETRIES:
                # Someone else wrote this conversation: reload, then retry first.
                s.fences += 1
                self.stats["fence_retries"] += 1
                st.conflict(s)
            else:
                st.failed()  # unknown outcome: reload before the next write
                why = ack.error.description if ack is not None and ack.error else type(err).__name__
                self._finish(st.partition, s, Unavailable(f"stream write failed: {why}"))
            self._pump(st)
            return
        if ack.duplicate:
            # A retried send: answer with the original and fan it out again
            # (the first attempt may have died half-way; INBOX deduplicates).
            self.stats["duplicates"] += 1
            st.duplicate()
            s.duplicate = True
            self._spawn(self._load_duplicate(st, s, ack.seq))
        else:
            st.stored(s.msg.seq, ack.seq)
            if not s.system:
                self._receipts.sent_now(user=s.req.sender, conv=st.id, seq=s.msg.seq)
            if s.traced:
                self._trace(s, "sequencer.stored", seq=s.msg.seq, stream_seq=ack.seq)
            if st.large:  # pull mode: members' edges listen on the conversation subject
                self._conn.publish(self._subjects.conv_live(st.id), s.data,
                                   headers=TRACE_HEADERS if s.traced else None)
            self._fanout(st, s)
        self._pump(st)

    def _fanout(self, st: _Conv, s: _Send) -> None:
        """Publish the copies of a stored message: at once (pipelined behind
        the previous message's), unless the conversation is in ordered mode.

        Ordered mode starts when a message's copies fail (an INBOX leader
        lost: copies published into the election get errors or no ack) and
        lasts until every message queued behind it is stored: the failed
        message is retried with a backoff that outlasts an election, later
        messages' copies wait in ``fan_wait`` in seq order, and each goes out
        once the one before it is acked. Before, the failed copies were
        re-published (or, after the sender's resend, fanned out again) after
        later messages' copies had been stored by the new leader, and a
        member's INBOX held seq N after N+1 (bench faults, nats-leader: 680
        to 3,440 arrivals out of order). Serializing every conversation's
        copies all the time cost a third of the 1:1 throughput at saturation
        (7,900 -> 5,500 msgs/s), so it is done only after a failure; what
        stays open is a later message whose copies were already on their way
        when the earlier one failed and that the new leader stored first."""
        if st.fanning is not None or st.fan_wait or st.draining:
            st.fan_wait.append(s)
            self.stats["fanout_waits"] += 1
            return
        self._fan(st, s)

    def _copies_failed(self, st: _Conv, s: _Send) -> None:
        """Some copies of ``s`` got no ack or an error: retry them in order."""
        self.stats["copy_retries"] += len(s.failed)
        if st.fanning is None and not st.draining:
            st.fanning = s  # ordered mode: s first
        if st.fanning is s:
            failed, s.failed = s.failed, []
            pause = backoff.delay(s.attempt - 1, initial=FANOUT_RETRY_FIRST_SEC, cap=FANOUT_RETRY_CAP_SEC,
                                  jitter=None)
            # A timer per failed fan-out (never on the path of a message whose copies are acked).
            asyncio.get_running_loop().call_later(pause, self._publish_copies, st, s, failed)
            return
        # Another message of the conversation is being retried: wait behind
        # it, before every message stored after this one (seq order).
        q = st.fan_wait
        i = 0
        while i < len(q) and q[i].msg.seq <= s.msg.seq:
            i += 1
        q.insert(i, s)

    def _copies_done(self, st: _Conv, s: _Send, err: SwitchboardError | None) -> None:
        """The copies of ``s`` are acked (or given up): answer it; in ordered
        mode, go on with the next waiting message. A loop, not a recursion:
        a message without copies completes at once."""
        self._finish(st.partition, s, err)
        if st.fanning is not s:
            return
        st.fanning = None
        if st.draining:
            return  # the loop below goes on
        st.draining = True
        try:
            while st.fanning is None and st.fan_wait:
                nxt = st.fan_wait.popleft()
                st.fanning = nxt
                if nxt.failed:  # a retry that waited its turn: its failed copies only, now
                    failed, nxt.failed = nxt.failed, []
                    self._publish_copies(st, nxt, failed)
                else:
                    self._fan(st, nxt)
        finally:
            st.draining = False

    def _fan(self, st: _Conv, s: _Send) -> None:
        msg, data = s.msg, s.data
        assert msg is not None
        copies: list[tuple[str, bytes, bytes]] = []
        traced = s.traced
        if not st.large:
            seq = str(msg.seq)
            if traced:  # the mark goes with every copy (INBOX republishes it to the edges)
                copies = [(subject, data, (head + seq + tail[:-2] + TRACE_HEADER_LINE + "\r\n").encode())
                          for subject, head, tail in st.inboxes]
            else:
                copies = [(subject, data, (head + seq + tail).encode()) for subject, head, tail in st.inboxes]
        offline = self._presence.offline_now(u for u in st.members if u != msg.from_)
        if offline:
            title = (st.info.title if st.info else "") or msg.from_
            push = self._subjects.push
            mark = {TRACE_HEADER: "1"} if traced else {}
            copies += [(push(u), push_entry(msg, u, title),
                        encode_headers({"Nats-Msg-Id": f"{st.id}:{msg.seq}:{u}:push", **mark})) for u in offline]
            self.stats["push_entries"] += len(offline)
        if not st.large:
            self.stats["inbox_copies"] += len(st.inboxes)
        if traced:
            self._trace(s, "sequencer.fanout", seq=msg.seq, members=len(st.members),
                        mode="pull" if st.large else "inbox")
        self._publish_copies(st, s, copies)

    def _publish_copies(self, st: _Conv, s: _Send, copies: list[tuple[str, bytes, bytes]]) -> None:
        if not copies:
            self._copies_done(st, s, None)
            return
        s.pending = len(copies)
        request = self._replies.request
        try:
            for subject, data, headers in copies:
                request(subject, data, partial(self._on_copy, st, s, subject, data, headers),
                        headers=headers, timeout=self._timeout)
        except BusError as exc:  # stopping: the bus is gone; the client retries (same id)
            s.pending = -1  # late callbacks of copies already issued change nothing
            self._copies_done(st, s, Unavailable(f"sequencer stopping: {exc.message}"))

    # -- 3. copies acked ------------------------------------------------------------------
    def _on_copy(self, st: _Conv, s: _Send, subject: str, data: bytes, headers: bytes,
                 m: BusMsg | None, err: BaseException | None) -> None:
        if s.pending < 0:
            return  # already answered
        ok = err is None and m is not None and b'"error"' not in m.data
        if not ok:
            s.failed.append((subject, data, headers))
        elif s.traced and subject.startswith(self._push_prefix):  # stored in PUSH: the pusher's turn
            self._trace(s, "push.enqueued", seq=s.msg.seq, user=subject.rpartition(".")[2])
        s.pending -= 1
        if s.pending:
            return
        if not s.failed:
            self._copies_done(st, s, None)
            return
        s.attempt += 1
        if s.attempt >= FANOUT_ATTEMPTS:
            self._copies_done(st, s, Unavailable(f"fan-out of {st.id}#{s.msg.seq} did not complete; retry"))
            return
        self._copies_failed(st, s)

    def _finish(self, p: int, s: _Send, err: SwitchboardError | None) -> None:
        self.inflight[p] -= 1
        if s.req is None:
            return  # a repair: nobody to answer
        if err is not None:
            self.stats["errors"] += 1
            if s.traced:
                self._trace(s, "error", code=err.code)
            self._answer_error(s.reply, err)
            return
        self.stats["sent"] += 1
        if s.system:
            self.stats["system"] += 1
        dt = perf_counter() - s.t0
        h = self.send_seconds
        h.counts[bisect_left(h.bounds, dt)] += 1  # IntHistogram.observe, inlined: once per message
        h.sum += dt
        if s.reply:
            msg = s.msg
            assert msg is not None
            self._conn.publish(s.reply, _encode(events.SendReply(conv=msg.conv, seq=msg.seq, ts=msg.ts, id=msg.id,
                                                                 duplicate=s.duplicate)))

    def _trace(self, s: _Send, stage: str, **fields: object) -> None:
        """Record one hop of a traced send (never called for the others)."""
        r = s.req
        if self._tracer is not None and r is not None:
            self._tracer.record(stage, conv=r.conv, id=r.id, sender=r.sender, **fields)

    def _answer_error(self, reply: str, exc: SwitchboardError) -> None:
        self.error_codes[exc.code] = self.error_codes.get(exc.code, 0) + 1
        if reply:
            self._conn.publish(reply, _encode(events.SendReply(error=events.error_body(exc))))

    # -- the slow paths: one task per conversation load --------------------------------------
    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _load(self, st: _Conv) -> None:
        self.stats["loads"] += 1
        try:
            while st.info is None and st.queue:
                head = st.queue[0]
                try:
                    st.info = await self._convs_api.for_send(conv_id=st.id, sender=head.req.sender, to=head.req.to,
                                                             system=head.system)
                except SwitchboardError as exc:
                    self._finish(st.partition, st.drop_head(), exc)
            if st.info is None:
                return
            st.members = frozenset(st.info.members)
            st.large = len(st.members) > self._large_above
            st.inboxes = [(self._subjects.inbox(u), f"NATS/1.0\r\nNats-Msg-Id: {st.id}:", f":{u}\r\n\r\n")
                          for u in sorted(st.members)]
            last = None
            if st.needs_last():
                last = await self._load_last(st)
            await self._receipts.prime(st.id)
            await self._presence.prime(st.members)
            if last is not None and now_ms() - last[0].ts < self._repair_window_ms:
                self._repair(st, *last)
        except Exception as exc:  # noqa: BLE001 - answer every waiting send, keep the process
            self.stats["load_failures"] += 1
            if not isinstance(exc, SwitchboardError):
                self._log.info("conversation load failed", conv=st.id, error=f"{type(exc).__name__}: {exc}")
                exc = Unavailable(f"conversation load failed: {type(exc).__name__}")
            for s in st.load_failed():
                self._finish(st.partition, s, exc)
            return
        finally:
            st.load_done()
        self._pump(st)

    async def _load_last(self, st: _Conv) -> tuple[frames.Msg, bytes] | None:
        """Load the conversation's last seq; returns its last message when
        MESSAGES still holds it."""
        try:
            raw = await self._js.get_last_msg(self._stream, st.subject)
        except nats.js.errors.NotFoundError:
            # Not in the stream (new, or aged out of MESSAGES): continue from the archive.
            st.loaded(await self._archived_last_seq(st.id), 0)
            return None
        data, stream_seq = raw.data, raw.seq
        if data is None or stream_seq is None:  # nats-py types both optional; a stored message has both
            raise Unavailable(f"unreadable last message of {st.id}")
        msg = _msg_decoder.decode(data)
        st.loaded(msg.seq, stream_seq)
        return msg, data

    def _repair(self, st: _Conv, msg: frames.Msg, data: bytes) -> None:
        """Fan the conversation's last message out again before its next one.

        An owner that died between a MESSAGES write and its INBOX copies
        leaves exactly that message undelivered (every earlier one's copies
        were on the wire before the next write). Re-publishing its copies is
        free where they arrived (Nats-Msg-Id dedup) and, issued before the
        next message's copies on the same connection, keeps each mailbox in
        seq order. Only inside half the dedup window, where dedup holds."""
        self.stats["repairs"] += 1
        # No request: a repair answers nobody (_finish returns first for it);
        # req stays non-optional for the hot path's sake.
        s = _Send(None, "", True)  # type: ignore[arg-type]
        s.msg, s.data = msg, data
        self.inflight[st.partition] = self.inflight.get(st.partition, 0) + 1
        self._fanout(st, s)

    async def _load_duplicate(self, st: _Conv, s: _Send, stream_seq: int) -> None:
        try:
            raw = await self._js.get_msg(self._stream, stream_seq)
            s.data = raw.data or b""
            s.msg = _msg_decoder.decode(s.data)
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error, msgspec.DecodeError) as exc:
            self._finish(st.partition, s, Unavailable(f"reading the original failed: {type(exc).__name__}"))
            return
        if s.traced:
            self._trace(s, "sequencer.stored", seq=s.msg.seq, stream_seq=stream_seq, reason="duplicate")
        self._fanout(st, s)

    def known_last_seq(self, conv: str) -> int | None:
        """The last seq from our own state, when we own and write the
        conversation (no I/O); None otherwise."""
        st = self._convs.get(conv)
        if st is not None and self.owns(st.partition):
            return st.known()
        return None

    def stored_last_seq(self, conv: str) -> int | None:
        """The last seq stored, from our own state when we own and write the
        conversation (no I/O), even with a write in flight: that write's seq
        is not stored yet, and its copies go out only after its ack, so no
        client can hold it. None otherwise. Under load a conversation always
        has a write in flight, so :meth:`known_last_seq` would send every
        receipt to the stream for a last-message read."""
        st = self._convs.get(conv)
        if st is not None and self.owns(st.partition):
            return st.last_stored()
        return None

    async def last_seq(self, conv: str) -> int:
        """The conversation's last seq: our own state when we write it,
        otherwise read from the stream (or the archive)."""
        known = self.known_last_seq(conv)
        if known is not None:
            return known
        probe = _Conv(conv, 0, self._subjects.msg(conv))
        await self._load_last(probe)
        assert probe.last_seq is not None
        return probe.last_seq

    def _evict(self) -> None:
        idle = [k for k, v in self._convs.items() if v.idle]
        for key in idle[: MAX_CONVS // 10 or 1]:
            del self._convs[key]
