"""One PUSH entry: decide, send, then ack / retry later / dead-letter.

Policy (docs/push.md):

- The user has since read the conversation up to the entry's seq: ack, send nothing.
- Every device of the user gets the notification; the entry is acked only when
  each device's provider accepted it, or its token was dead and got removed.
- A transient answer (429, 5xx, network) naks the entry with a delay:
  exponential backoff, or the provider's Retry-After if that is longer.
  Devices that already accepted are remembered (per stream sequence, in this
  process) and not sent to again on the redelivery.
- A permanent answer (bad request, too large after trimming) or a transient
  one on the ``max_deliver``-th delivery: the entry and the reason go to the
  dead-letter subject and the entry is terminated.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from time import perf_counter

import msgspec
from nats.aio.msg import Msg

from pusher.metrics import PusherMetrics
from pusher.notification import Notification
from pusher.providers import Outcome, PushProvider, SendResult
from switchboard import log
from switchboard.backoff import delay as backoff_delay
from switchboard.config import PusherSettings
from switchboard.devices import Device, DeviceStore
from switchboard.events import PushEntry
from switchboard.trace import TRACE_HEADER, Tracer

UnreadCount = Callable[[str], "int | None | Awaitable[int | None]"]
ReadUpto = Callable[[str, str], Awaitable[int]]
DeadLetter = Callable[[bytes, dict[str, str]], Awaitable[None]]
# +-20% around the schedule: entries throttled together come back spread out.
REDELIVERY_JITTER = (0.8, 1.2)

_decode = msgspec.json.Decoder(PushEntry).decode


class PushDeadLetter(msgspec.Struct):
    """What ``sb.dlq.push`` carries: the entry, why it was given up, after how many deliveries."""

    entry: PushEntry
    reason: str
    deliveries: int


class Action(enum.Enum):
    ACK = "ack"
    NAK = "nak"
    DEAD_LETTER = "dead_letter"


# Reasons of an ACK that sent nothing.
ALREADY_READ = "already read"
NO_DEVICE = "no device"
# Decision -> the `result` label of PusherMetrics.entry (by reason first, then by action).
_RESULT = {ALREADY_READ: "read_elsewhere", NO_DEVICE: "no_device",
           Action.ACK: "sent", Action.NAK: "retry", Action.DEAD_LETTER: "dead_letter"}


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    delay: float = 0.0  # NAK: seconds before redelivery
    reason: str = ""


@dataclass(slots=True)
class _Progress:
    done: set[Device] = field(default_factory=set)
    failures: list[str] = field(default_factory=list)


def _no_badge(user: str) -> None:
    return None


def backoff(deliveries: int, config: PusherSettings, retry_after: float | None,
            rand: Callable[[], float] = random.random) -> float:
    """Delay before the next delivery: base * 2^(n-1), capped at backoff_max,
    with +-20% jitter (so entries throttled together do not come back
    together; never above backoff_max), but never shorter than the provider's
    Retry-After."""
    delay = backoff_delay(deliveries - 1, initial=config.push_backoff_base, cap=config.push_backoff_max,
                          jitter=REDELIVERY_JITTER, rand=rand)
    return max(delay, retry_after or 0.0)


class Worker:
    def __init__(self, *, devices: DeviceStore, providers: dict[str, PushProvider], config: PusherSettings,
                 dead_letter: DeadLetter, unread_count: UnreadCount = _no_badge,
                 read_upto: ReadUpto | None = None) -> None:
        self.devices, self.providers, self.config = devices, providers, config
        self._max_deliver = config.push_max_deliver
        self._dead_letter, self._unread, self._read_upto = dead_letter, unread_count, read_upto
        self._progress: dict[int, _Progress] = {}  # by stream sequence; bounded by max_ack_pending
        # Hops of traced entries (Sb-Trace header; switchboard/trace.py): set by
        # the service once its NATS connection is up; None: not recorded.
        self.tracer: Tracer | None = None
        self.metrics = PusherMetrics(providers)  # counted here, served by the service's registry
        self._log = log.get("pusher.worker")

    async def handle(self, msg: Msg) -> Action:
        md = msg.metadata
        key, deliveries = md.sequence.stream, md.num_delivered
        try:
            entry = _decode(msg.data)
        except msgspec.DecodeError as exc:  # not JSON, or not a PushEntry: retrying cannot help
            self._log.warning("push.undecodable", stream_seq=key, error=str(exc)[:200])
            await self._dead_letter(msg.data, {"Sb-Dlq-Reason": "undecodable entry"})
            await msg.term()
            self.metrics.entry("dead_letter", deliveries)
            return Action.DEAD_LETTER
        h = msg.headers
        traced = h is not None and TRACE_HEADER in h and self.tracer is not None
        try:
            decision = await self.process(entry, key=key, deliveries=deliveries, traced=traced)
        except Exception as exc:  # store down, a bug: retry like a transient failure
            self._log.error("push.error", conv=entry.conv, seq=entry.seq, error=repr(exc)[:300])
            decision = Decision(Action.NAK, backoff(deliveries, self.config, None), "internal error")
            if deliveries >= self._max_deliver:
                decision = Decision(Action.DEAD_LETTER, reason=f"internal error: {type(exc).__name__}")
        if decision.action is Action.ACK:
            await msg.ack_sync()
        elif decision.action is Action.NAK:
            await msg.nak(delay=decision.delay)
        else:
            letter = PushDeadLetter(entry=entry, reason=decision.reason, deliveries=deliveries)
            await self._dead_letter(msgspec.json.encode(letter), {"Sb-Dlq-Reason": decision.reason[:200]})
            await msg.term()
            self._log.warning("push.dead_letter", user=entry.user, conv=entry.conv, seq=entry.seq,
                              deliveries=deliveries, reason=decision.reason)
        if decision.action is not Action.NAK:
            self._progress.pop(key, None)
        self.metrics.entry(_RESULT.get(decision.reason) or _RESULT[decision.action], deliveries)
        return decision.action

    async def process(self, entry: PushEntry, *, key: int, deliveries: int, traced: bool = False) -> Decision:
        if self._read_upto is not None and await self._read_upto(entry.user, entry.conv) >= entry.seq:
            if traced:
                await self._trace(entry, "push.skipped", reason="read_elsewhere")
            return Decision(Action.ACK, reason=ALREADY_READ)
        progress = self._progress.setdefault(key, _Progress())
        badge = self._unread(entry.user)
        if inspect.isawaitable(badge):
            badge = await badge
        note = Notification.from_entry(entry, badge=badge)
        devices = await self.devices.tokens_of(entry.user)
        if traced and not devices:
            await self._trace(entry, "push.skipped", reason="no_device")
        todo = [d for d in devices if d not in progress.done]
        results = await asyncio.gather(*(self._send(d, note) for d in todo))
        retries: list[SendResult] = []
        for device, result in zip(todo, results):
            if traced:
                await self._trace_result(entry, device, result)
            if result.outcome is Outcome.RETRY:
                retries.append(result)
                continue
            progress.done.add(device)
            if result.outcome is Outcome.DEAD_TOKEN:
                await self.devices.remove(device.platform, device.token)
                self._log.info("push.token_removed", user=entry.user, platform=device.platform,
                               device=device.short, reason=result.reason)
            elif result.outcome in (Outcome.FAILED, Outcome.TOO_LARGE):
                progress.failures.append(f"{device.platform} {device.short}: {result.outcome.value} {result.reason}")
        if retries:
            if deliveries < self._max_deliver:
                wait = max((r.retry_after or 0.0) for r in retries)
                reason = ", ".join(sorted({r.reason for r in retries}))
                self._log.debug("push.retry", conv=entry.conv, seq=entry.seq, deliveries=deliveries, reason=reason)
                return Decision(Action.NAK, backoff(deliveries, self.config, wait or None), reason)
            progress.failures += [f"gave up after {deliveries} deliveries: {r.reason}" for r in retries]
        if progress.failures:
            return Decision(Action.DEAD_LETTER, reason="; ".join(progress.failures))
        return Decision(Action.ACK, reason="" if devices else NO_DEVICE)

    async def _trace(self, entry: PushEntry, stage: str, **fields: object) -> None:
        assert self.tracer is not None
        await self.tracer.arecord(stage, conv=entry.conv, id=entry.id, sender=entry.sender, seq=entry.seq,
                                  user=entry.user, **fields)

    async def _trace_result(self, entry: PushEntry, device: Device, result: SendResult) -> None:
        """One device's outcome of a traced entry: sent, retry later, or skipped and why."""
        where = {"provider": device.platform, "device": device.short}
        if result.outcome is Outcome.OK:
            if device.platform in self.providers:
                await self._trace(entry, "push.sent", **where)
            else:
                await self._trace(entry, "push.skipped", reason="platform_disabled", **where)
        elif result.outcome is Outcome.RETRY:
            await self._trace(entry, "push.retry", reason="provider_error", code=result.reason or "retry", **where)
        elif result.outcome is Outcome.DEAD_TOKEN:
            await self._trace(entry, "push.skipped", reason="dead_token", code=result.reason or None, **where)
        else:
            await self._trace(entry, "push.skipped", reason="provider_error",
                              code=result.reason or result.outcome.value, **where)

    async def _send(self, device: Device, note: Notification) -> SendResult:
        provider = self.providers.get(device.platform)
        if provider is None:  # platform not enabled in this deployment: nothing to do for it
            self.metrics.sent(device.platform, "disabled", "", None)
            return SendResult(Outcome.OK, "platform disabled")
        t0 = perf_counter()
        result = await provider.send(device, note)
        self.metrics.sent(device.platform, result.outcome.value, result.reason, perf_counter() - t0)
        return result
