"""Write one fetched batch to the store, then ack it.

The rules (docs/archiver.md):

- A batch is written with ONE ``append_messages`` call and acked only after
  that call returned. Redelivery is harmless: the store is idempotent by
  (conv, seq).
- The write fails and a cheap read of the store fails too: the store is down.
  Keep the batch (in-progress acks stop JetStream from redelivering it), wait
  with capped exponential backoff, write it again. Nothing is lost, nothing is
  dead-lettered, however long the outage.
- The write fails but the store answers reads: some message is at fault.
  Bisect the batch; a single message that still fails ``max_deliver`` times
  (or on its last JetStream delivery) is dead-lettered.
- A message that cannot be decoded is dead-lettered at once.

Dead-lettering publishes the original payload to ``sb.dlq.archive`` with
``Sb-Dlq-*`` headers saying why, waits for JetStream to store it (stream
DEADLETTER, switchboard/bus/streams.py), then terms the original so it is
never redelivered.

Acks, in-progress acks and terms are buffered publishes on the lean bus
connection the batch was fetched on (:mod:`archiver.acks`); the dead-letter
publish, which waits for JetStream's answer, goes through nats-py (rare).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import msgspec
from nats.js import JetStreamContext

from archiver import acks
from archiver.metrics import ArchiverMetrics
from switchboard import frames, ids, log
from switchboard.backoff import Backoff
from switchboard.bus.conn import BusConnection, BusMsg
from switchboard.config import Settings
from switchboard.store import Store
from switchboard.trace import TRACE_HEADER_BYTES, Tracer

_decode_msg = msgspec.json.Decoder(frames.Msg).decode


# Jitter of the store retry delays: each is 0.8-1.0 of the doubled one, so
# the archivers of one deployment drift apart. Not a setting: it tunes
# nothing an operator could observe, only keeps retries from lining up.
STORE_BACKOFF_JITTER = (0.8, 1.0)


def store_backoff(settings: Settings) -> Backoff:
    """A store outage's retry delays: [archiver] store_backoff_sec, doubling
    to store_backoff_cap_sec."""
    return Backoff(settings.archive_store_backoff_sec, settings.archive_store_backoff_cap_sec,
                   jitter=STORE_BACKOFF_JITTER)


class Undecodable(ValueError):
    pass


def decode(subject_prefix: str, msg: BusMsg, valid_convs: set[str] | None = None) -> frames.Msg:
    """The stored Msg of one MESSAGES entry; :class:`Undecodable` if it is not one.

    ``valid_convs``: conversation ids already checked (one batch holds many
    messages of few conversations); a new valid one is added.
    """
    try:
        m = _decode_msg(msg.data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise Undecodable(f"not a msg frame: {exc}") from None
    conv = m.conv
    if valid_convs is None or conv not in valid_convs:
        if not ids.is_valid(conv):
            raise Undecodable(f"bad conv {conv[:80]!r}")
        if valid_convs is not None:
            valid_convs.add(conv)
    if m.seq < 1:
        raise Undecodable(f"bad seq {m.seq}")
    if msg.subject != f"{subject_prefix}.msg.{conv}":
        raise Undecodable(f"conv {conv!r} does not match subject {msg.subject!r}")
    return m


_Item = tuple[BusMsg, frames.Msg]


class BatchWriter:
    """Turns fetched MESSAGES entries into store writes, acks and dead letters."""

    def __init__(self, *, settings: Settings, conn: BusConnection, js: JetStreamContext, store: Store, stream: str,
                 metrics: ArchiverMetrics, backoff: Backoff | None = None,
                 poison_retry_delay: float = 0.2, tracer: Tracer | None = None) -> None:
        self._settings = settings
        self._prefix = settings.subject_prefix
        self._dlq_subject = settings.subjects.dead_letter("archive")
        self._conn = conn  # acks (lean bus: the connection the batch was fetched on)
        self._js = js  # dead letters (nats-py: a JetStream publish that waits for its ack)
        self._store = store
        self._stream = stream
        self._metrics = metrics
        self._backoff = backoff or store_backoff(settings)
        self._poison_retry_delay = poison_retry_delay  # between tries of one suspect message
        self._max_tries = settings.archive_max_deliver
        self._tracer = tracer  # archiver.stored of traced messages (switchboard/trace.py)
        self._log = log.get("archiver.writer", stream=stream)
        self._outage_since: float | None = None
        self.stopping = False  # set by the service: after a failed write, stop retrying (no ack)

    async def handle(self, batch: Sequence[BusMsg]) -> None:
        items: list[_Item] = []
        valid_convs: set[str] = set()
        for m in batch:
            try:
                items.append((m, decode(self._prefix, m, valid_convs)))
            except Undecodable as exc:
                await self._dead_letter(m, reason="undecodable", detail=str(exc))
        if items:
            await self._write(items)

    # -- writing ---------------------------------------------------------------
    async def _write(self, items: list[_Item]) -> None:
        tries = 0  # failures of this exact slice while the store answered reads
        while True:
            t0 = time.perf_counter()
            try:
                await self._store.append_messages([d for _, d in items])
            except Exception as exc:  # noqa: BLE001 - any backend error is handled the same way
                self._metrics.store_errors.inc()
                if self.stopping:  # shutting down: leave it unacked, JetStream redelivers it
                    self._log.warning("store write failed during shutdown; batch left for redelivery",
                                      error=f"{type(exc).__name__}: {exc}", messages=len(items))
                    return
                if not await self._store_answers(items[0][1].conv):
                    await self._outage(items, exc)
                    continue
                if len(items) > 1:  # the store works: find the message at fault
                    mid = len(items) // 2
                    await self._write(items[:mid])
                    await self._write(items[mid:])
                    return
                tries += 1
                m, d = items[0]
                if tries >= self._max_tries or _deliveries(m) >= self._max_tries:
                    await self._dead_letter(m, reason="rejected", detail=f"{type(exc).__name__}: {exc}",
                                            conv=d.conv, seq=d.seq, tries=tries)
                    return
                acks.send(self._conn, items, acks.IN_PROGRESS)
                await asyncio.sleep(self._poison_retry_delay)
                continue
            self._metrics.batch_seconds.observe(time.perf_counter() - t0)
            if self._outage_since is not None:
                self._log.info("store back, archiving resumed",
                               outage_sec=round(time.monotonic() - self._outage_since, 1))
                self._outage_since = None
                self._backoff.reset()
            acks.send(self._conn, items, acks.ACK)  # buffered publishes, no round trip
            self._metrics.archived.inc(len(items))
            if self._tracer is not None:
                for m, d in items:
                    if m.hdr.find(TRACE_HEADER_BYTES) >= 0:  # the raw header block: no parse (see trace.py)
                        self._trace_stored(m, d)
            return

    def _trace_stored(self, m: BusMsg, d: frames.Msg) -> None:
        try:
            stream_seq: int | None = acks.delivery(m.reply).stream_seq
        except ValueError:
            stream_seq = None
        assert self._tracer is not None
        self._tracer.record("archiver.stored", conv=d.conv, id=d.id, sender=d.from_, seq=d.seq, stream_seq=stream_seq)

    async def _outage(self, items: list[_Item], exc: Exception) -> None:
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            self._log.warning("store unavailable, pausing archiving with backoff", error=f"{type(exc).__name__}: {exc}")
        # keep the batch: no redelivery, no delivery count spent
        acks.send(self._conn, items, acks.IN_PROGRESS)
        await asyncio.sleep(self._backoff.delay())

    async def _store_answers(self, conv: str) -> bool:
        try:
            await self._store.last_seq(conv)
            return True
        except Exception:  # noqa: BLE001
            return False

    # -- dead letters --------------------------------------------------------
    async def _dead_letter(self, m: BusMsg, *, reason: str, detail: str, conv: str = "", seq: int = 0,
                           tries: int = 0) -> None:
        md = acks.delivery(m.reply)
        stream_seq = md.stream_seq
        headers = {
            "Sb-Dlq-Reason": reason,
            "Sb-Dlq-Detail": " ".join(detail.split())[:500],
            "Sb-Dlq-Stream": self._stream,
            "Sb-Dlq-Stream-Seq": str(stream_seq),
            "Sb-Dlq-Subject": m.subject,
            "Sb-Dlq-Deliveries": str(md.delivered),
            # a crash between this publish and term() redelivers the message;
            # the second dead letter is then dropped as a duplicate
            "Nats-Msg-Id": f"archive-{self._stream}-{stream_seq}",
        }
        await self._js.publish(self._dlq_subject, m.data or b"", headers=headers)
        acks.send(self._conn, ((m, None),), acks.TERM)  # only once the dead letter is stored
        self._metrics.dead_lettered.labels(reason).inc()
        self._log.error("message dead-lettered", reason=reason, detail=headers["Sb-Dlq-Detail"],
                        subject=m.subject, stream_seq=stream_seq, conv=conv or None, seq=seq or None,
                        tries=tries or None, deliveries=md.delivered, dlq=self._dlq_subject)


def _deliveries(m: BusMsg) -> int:
    """JetStream's delivery count of this message (1 = first delivery)."""
    try:
        return acks.delivery(m.reply).delivered
    except ValueError:  # not a JetStream ack subject: count it as a first delivery
        return 0
