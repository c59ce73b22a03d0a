"""A socket's sends: ``send`` frame -> request to the partition's owner -> ``sent`` or ``error``.

No task, future or lock per send: a send is one ``Replies.request`` whose
callback writes the answer frame. The order of one socket's sends to a
conversation holds without locks: one NATS connection publishes in order and
one sequencer owns a partition (``sb.send.<P>.<conv>``) and handles it
serially. Sends in flight per socket are bounded: at the bound the socket's
reading is paused (TCP backpressure slows only this client; nothing fails)
and resumed when half of them were answered. Frames read before the pause
took effect wait in the session (edge/session.py) until the socket resumes,
so the bound is hard.

The edge bounds its sends in flight as a whole too (:class:`SendBudget`,
``[edge] max_inflight_sends``): past it, every socket that sends is paused
the same way until half of them were answered. Without it an edge past the
fabric's capacity queued up to 64 sends per socket at the sequencer (14,000
at 226 sockets, seconds of work), sends outlived ``send_timeout``, clients
resent them, and every resend cost the sequencer a duplicate's read-back
and fan-out on top: at 9,000 msgs/s offered the fabric delivered 5,500/s
with 290,000 ``unavailable`` answers, where it sustains ~6,500/s. Bounded,
the wait is in the clients' sockets (TCP), the fabric's queue stays short,
and it delivers what it can.

"No responders" means the partition is between owners (a handover): the
send is retried after a short jittered delay until ``send_timeout``, then
answered ``unavailable`` (retry). While a socket has sends waiting for such
a retry, its later sends to the same partition wait behind them, so a
handover does not reorder a socket's sends.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import msgspec

from switchboard import events, frames, ids
from switchboard.bus.conn import BusMsg, BusUnavailable
from switchboard.bus.replies import Replies
from switchboard.errors import Unavailable
from switchboard.subjects import Subjects, partition_of
from switchboard.trace import NATS_TRACE_DEST, TRACE_HEADER_LINE, Tracer

# Sends a connection may have in flight to the sequencer; at this many its
# reading pauses (until half were answered): one connection cannot pile up
# work, and a client that sends faster is slowed, not refused.
MAX_INFLIGHT_SENDS = 64
# Delay before resending after "no responders" (seconds, uniform between the
# two; Sends(retry_delay=...)): a handover takes from a lease write
# (milliseconds) to lease_ttl (a dead owner, 3 s), so retry often but spread
# a burst of sockets over a few ticks.
RETRY_DELAY = (0.02, 0.1)
# 1:1 conversation ids one socket keeps (Sends._dm): a device chats with a
# handful of peers at a time; 256 short strings per socket at most (~40 KB),
# and past it the cache starts over.
DM_CACHE = 256

_send_reply = msgspec.json.Decoder(events.SendReply)


class SendBudget:
    """Sends in flight on a whole edge, shared by its sockets' :class:`Sends`.

    At ``limit`` each socket that sends is paused and queued; once the count
    is back to half of it, paused sockets resume in the order they paused,
    until the limit is reached again (the rest keep their place: first
    paused, first served, so no socket starves behind busier ones). Paused
    sockets only stop being read: nothing is refused.
    """

    __slots__ = ("limit", "inflight", "over", "_paused")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = limit
        self.inflight = 0
        self.over = False  # at the limit, not yet back to half of it
        self._paused: dict[Sends, None] = {}  # an ordered set: the order they paused in

    def take(self, sends: Sends) -> None:
        self.inflight += 1
        if self.inflight >= self.limit:
            self.over = True
        if self.over:
            self._paused[sends] = None

    def give(self) -> None:
        self.inflight -= 1
        if self.over and self.inflight <= self.limit // 2:
            self.over = False
            paused = self._paused
            while paused and not self.over:
                sends = next(iter(paused))
                del paused[sends]
                sends.maybe_resume()  # its held frames go out now, and may take us over again

    def hold(self, sends: Sends) -> None:
        """``sends`` (paused) waits for the count to be back to half."""
        self._paused[sends] = None

    def forget(self, sends: Sends) -> None:
        self._paused.pop(sends, None)


def _never() -> bool:
    return False


class _Send:
    """One send in flight (or waiting for a retry)."""

    __slots__ = ("sends", "ref", "subject", "part", "payload", "deadline", "headers")

    def __init__(self, sends: Sends, ref: str, subject: str, part: int, payload: bytes, deadline: float) -> None:
        self.sends = sends
        self.ref = ref
        self.subject = subject
        self.part = part
        self.payload = payload
        self.deadline = deadline
        self.headers: bytes | None = None  # traced sends only: Sb-Trace and Nats-Trace-Dest

    def on_reply(self, msg: BusMsg | None, exc: BaseException | None) -> None:
        self.sends._reply(self, msg, exc)


class Sends:
    __slots__ = ("_user", "_dms", "_write", "_replies", "_subjects", "_partitions", "_timeout", "_loop", "inflight",
                 "_waiting", "_waiting_parts", "_timer", "_closed", "_pause", "_resume", "_paused", "_tracer",
                 "_sample", "_device", "_retry_min", "_retry_max", "_budget")

    def __init__(self, *, user: str, write: Callable[[bytes], bool], replies: Replies, subjects: Subjects,
                 partitions: int, timeout: float, pause: Callable[[], None] = lambda: None,
                 resume: Callable[[], None] = lambda: None, tracer: Tracer | None = None,
                 device: str = "", retry_delay: tuple[float, float] = RETRY_DELAY,
                 budget: SendBudget | None = None) -> None:
        self._user = user
        self._write = write  # the socket's send (one text frame)
        self._replies = replies
        self._subjects = subjects
        self._partitions = partitions
        self._timeout = timeout  # send_timeout: the whole life of a send, retries included
        self._retry_min, self._retry_max = retry_delay
        self._loop = asyncio.get_running_loop()
        self.inflight = 0
        self._waiting: list[_Send] | None = None  # sends to retry, in order
        self._waiting_parts: set[int] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._pause = pause  # stop reading the socket
        self._resume = resume
        self._paused = False
        # The edge's trace recorder (switchboard/trace.py): its sampler
        # decides, with the frame's "trace", which sends are traced.
        self._tracer = tracer
        self._sample = tracer.sampler.hit if tracer is not None else _never  # the edge-wide countdown
        self._device = device  # this socket's id in trace records
        self._budget = budget if budget is not None else SendBudget(1 << 30)  # the edge's, shared
        # Peer -> 1:1 conversation id, so a chat's sends hash the pair once
        # (sha256 and two id checks were ~3 % of the edge at 10,000 msgs/s);
        # made at the first 1:1 send, so an idle socket carries no dict.
        self._dms: dict[str, str] | None = None

    def _dm(self, to: str) -> str:
        dms = self._dms
        if dms is None or len(dms) >= DM_CACHE:
            dms = self._dms = {}  # a socket writing to this many peers pays the hash again, nothing else
        conv = dms.get(to)
        if conv is None:
            conv = dms[to] = ids.dm_conv(self._user, to)
        return conv

    def send(self, f: frames.Send) -> None:
        conv = f.conv if f.conv is not None else self._dm(f.to)  # type: ignore[arg-type]
        part = partition_of(conv, self._partitions)
        payload = events.encode(events.SendRequest(sender=self._user, id=f.id, conv=conv, body=f.body, to=f.to))
        s = _Send(self, f.id, self._subjects.send_part(part, conv), part, payload, self._loop.time() + self._timeout)
        if f.trace or self._sample():
            self._trace(s, conv)
        self.inflight += 1
        budget = self._budget
        budget.take(self)
        if (self.inflight >= MAX_INFLIGHT_SENDS or budget.over) and not self._paused:
            self._paused = True
            self._pause()
        if self._waiting is not None and part in self._waiting_parts:
            self._waiting.append(s)  # behind an earlier send of this socket to the same partition
            return
        self._replies.request(s.subject, payload, s.on_reply, headers=s.headers, timeout=self._timeout)

    def _trace(self, s: _Send, conv: str) -> None:
        """Mark a traced send (the headers every later hop looks for) and
        record ``edge.received``."""
        tracer = self._tracer
        if tracer is None:
            return  # no recorder (tests without an edge): "trace" asked for nothing
        dest = tracer.subject(conv, self._user, s.ref) + ".nats"
        s.headers = f"NATS/1.0\r\n{TRACE_HEADER_LINE}{NATS_TRACE_DEST}: {dest}\r\n\r\n".encode()
        tracer.record("edge.received", conv=conv, id=s.ref, sender=self._user, device=self._device)

    def refused(self, f: frames.Send, code: str) -> None:
        """A traced send refused by the edge itself (e.g. rate_limited)."""
        if self._tracer is not None and f.trace:
            conv = f.conv if f.conv is not None else self._dm(f.to)  # type: ignore[arg-type]
            self._tracer.record("error", conv=conv, id=f.id, sender=self._user, device=self._device, code=code)

    def close(self) -> None:
        """The socket is gone: forget the retries (answers would go nowhere)."""
        self._closed = True
        self._budget.forget(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for _ in self._waiting or ():  # never sent again: give their share of the edge's bound back
            self._done()
        self._waiting = None

    def maybe_resume(self) -> None:
        """Read the socket again unless its own bound or the edge's still holds it."""
        if not self._paused or self.inflight > MAX_INFLIGHT_SENDS // 2 or self._closed:
            return
        if self._budget.over:  # (paused by its own bound, which is past): the edge's resumes it
            self._budget.hold(self)
            return
        self._paused = False
        self._resume()

    def _done(self) -> None:
        """One send of this socket is answered (or dropped with the socket)."""
        self.inflight -= 1
        self._budget.give()

    def _answer(self, frame: frames.Sent | frames.Error) -> None:
        self.maybe_resume()
        self._write(frames.encode(frame))

    def _reply(self, s: _Send, msg: BusMsg | None, exc: BaseException | None) -> None:
        if msg is not None:
            self._done()
            try:
                reply = _send_reply.decode(msg.data)
            except msgspec.DecodeError:
                self._answer(frames.Error(ref=s.ref, code="internal", retry=True, message="unreadable sequencer reply"))
                return
            if reply.error is not None:
                e = reply.error
                if s.headers is not None:
                    self._traced_error(s, e.code)
                self._answer(frames.Error(ref=s.ref, code=e.code, message=e.message, retry=e.retry))
            else:
                self._answer(frames.Sent(id=s.ref, conv=reply.conv, seq=reply.seq, ts=reply.ts))
        elif isinstance(exc, BusUnavailable) and self._loop.time() + self._retry_max < s.deadline:
            if self._closed:
                self._done()
            else:
                self._wait(s)  # no responders (or the bus is reconnecting): a handover, probably
        else:
            self._done()
            err = exc if isinstance(exc, Unavailable) else Unavailable(f"the bus failed: {exc}; retry")
            if s.headers is not None:
                self._traced_error(s, err.code)
            self._answer(frames.error_frame(err, s.ref))

    def _traced_error(self, s: _Send, code: str) -> None:
        if self._tracer is not None:  # the conversation is the last token of the send subject
            self._tracer.record("error", conv=s.subject.rpartition(".")[2], id=s.ref, sender=self._user,
                                device=self._device, code=code)

    def _wait(self, s: _Send) -> None:
        if self._waiting is None:
            self._waiting = []
            self._timer = self._loop.call_later(random.uniform(self._retry_min, self._retry_max), self._retry)
        self._waiting.append(s)
        self._waiting_parts.add(s.part)

    def _retry(self) -> None:
        self._timer = None
        waiting, self._waiting = self._waiting or [], None
        self._waiting_parts = set()
        now = self._loop.time()
        for s in waiting:  # in the order they were sent
            if now >= s.deadline:
                self._reply(s, None, Unavailable(f"no sequencer took the send within {self._timeout:g}s; retry"))
            else:
                self._replies.request(s.subject, s.payload, s.on_reply, headers=s.headers, timeout=s.deadline - now)
