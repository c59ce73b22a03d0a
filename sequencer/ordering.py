"""Per-conversation ordering: contiguous seq fenced by the stream.

:class:`ConvLog` is the state of one conversation as this process knows it:
the last conversation seq and the stream sequence of the message that holds
it. A write is published with ``Nats-Expected-Last-Subject-Sequence`` set to
that stream sequence; if another sequencer wrote in between, JetStream refuses
(err 10071), the state is reloaded from the stream and the write is retried
with the next seq. ``Nats-Msg-Id`` makes a retried client send land once.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import msgspec
import nats.errors
import nats.js.errors
from nats.js import JetStreamContext

from switchboard import frames
from switchboard.bus.jspub import JsPublisher, PublishError
from switchboard.errors import Unavailable

WRONG_LAST_SEQUENCE = 10071
# A contended conversation (several sequencers writing at once) converges in a
# few rounds; more than this means something else is wrong.
MAX_FENCE_RETRIES = 20

_msg_decoder = msgspec.json.Decoder(frames.Msg)


@dataclass(slots=True)
class ConvLog:
    conv: str
    last_seq: int | None = None  # None: not loaded yet
    last_stream_seq: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(frozen=True, slots=True)
class Appended:
    msg: frames.Msg
    data: bytes
    duplicate: bool


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Orderer:
    """Appends messages to MESSAGES in conversation order."""

    def __init__(self, *, js: JetStreamContext, pub: JsPublisher, stream: str, subject_of: Callable[[str], str],
                 archived_last_seq: Callable[[str], Awaitable[int]], timeout: float,
                 max_convs: int = 100_000) -> None:
        self._js = js
        self._pub = pub
        self._stream = stream
        self._subject_of = subject_of
        self._archived_last_seq = archived_last_seq
        self._timeout = timeout
        self._max_convs = max_convs
        self._logs: dict[str, ConvLog] = {}

    def log_of(self, conv: str) -> ConvLog:
        log = self._logs.get(conv)
        if log is None:
            if len(self._logs) >= self._max_convs:
                self._evict()
            log = self._logs[conv] = ConvLog(conv)
        return log

    def _evict(self) -> None:
        # Drop idle entries (not locked); they are reloaded from the stream on next use.
        for key in [k for k, v in self._logs.items() if not v.lock.locked()][: self._max_convs // 10 or 1]:
            del self._logs[key]

    async def _load(self, log: ConvLog) -> None:
        subject = self._subject_of(log.conv)
        try:
            raw = await self._js.get_last_msg(self._stream, subject)
        except nats.js.errors.NotFoundError:
            # Nothing in the stream for this conversation: new, or aged out of
            # MESSAGES. Continue from the archive (cold start).
            log.last_stream_seq = 0
            log.last_seq = await self._archived_last_seq(log.conv)
            return
        log.last_stream_seq = raw.seq
        log.last_seq = _msg_decoder.decode(raw.data).seq

    async def last_seq(self, conv: str, refresh: bool = False) -> int:
        """The conversation's last seq; ``refresh`` re-reads it from the stream
        (another sequencer may have written since)."""
        log = self.log_of(conv)
        if refresh or log.last_seq is None:
            async with log.lock:
                await self._load(log)
        assert log.last_seq is not None
        return log.last_seq

    async def append(self, *, conv: str, sender: str, id: str, body: str, kind: str,
                     then: Callable[[frames.Msg, bytes], Awaitable[None]] | None = None) -> Appended:
        """Store one message; ``then`` runs under the conversation lock right
        after the write (used to *issue* the fan-out publishes in seq order)."""
        log = self.log_of(conv)
        msg_id = f"{conv}:{sender}:{id}"
        subject = self._subject_of(conv)
        async with log.lock:
            for _ in range(MAX_FENCE_RETRIES):
                if log.last_seq is None:
                    await self._load(log)
                assert log.last_seq is not None
                msg = frames.Msg(conv=conv, seq=log.last_seq + 1, id=id, from_=sender, body=body,
                                 ts=now_ms(), kind=kind)
                data = frames.encode(msg)
                headers = {"Nats-Msg-Id": msg_id, "Nats-Expected-Last-Subject-Sequence": str(log.last_stream_seq)}
                try:
                    ack = await asyncio.wait_for(await self._pub.publish(subject, data, headers), self._timeout)
                except PublishError as exc:
                    if exc.err_code == WRONG_LAST_SEQUENCE:
                        log.last_seq = None  # another sequencer wrote: reload and retry
                        continue
                    raise Unavailable(f"stream refused the write: {exc.message}") from None
                except (asyncio.TimeoutError, nats.errors.Error, Unavailable) as exc:
                    log.last_seq = None  # unknown outcome: reload before the next write
                    raise Unavailable(f"stream write failed: {type(exc).__name__}") from None
                duplicate = bool(ack.duplicate)
                if duplicate:
                    # A retried send: answer with the original message, and
                    # fan it out again (the first attempt may have died
                    # half-way; INBOX deduplicates what did arrive).
                    raw = await self._js.get_msg(self._stream, ack.seq)
                    data = raw.data or b""
                    msg = _msg_decoder.decode(data)
                else:
                    log.last_seq = msg.seq
                    log.last_stream_seq = ack.seq
                if then is not None:
                    await then(msg, data)
                return Appended(msg, data, duplicate)
        raise Unavailable(f"conversation {conv} is contended; retry")
