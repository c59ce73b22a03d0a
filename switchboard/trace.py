"""Per-message trace: the hops of a traced message, one record per hop.

A message is traced when its ``send`` frame says ``"trace": true`` or when
the edge's sampler hits (``trace_sample``; system messages: the sequencer's
sampler or ``SendRequest.trace``). The decision is taken once and travels
with the message as the NATS header ``Sb-Trace: 1`` on the send request,
the MESSAGES write, the INBOX copies (and so their republish to the edges)
and the PUSH entries: every later hop knows without a lookup, and an
untraced message costs each hop one membership test of a header dict or
header bytes, nothing else.

Each hop publishes a :class:`TraceRecord` (JSON) with core NATS, fire and
forget, on the role's existing connection, to
``<prefix>.trace.<conv>.<sender>.<id>``; the stream ``SB_TRACE`` (with the
stream prefix in front) keeps them for ``trace_max_age_sec``
(switchboard/bus/streams.py). Reading them back: ``switchboard trace``.
"""

from __future__ import annotations

import inspect
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from switchboard import ids, log, trace_otel  # trace_otel imports OpenTelemetry only when OTEL_* asks

# The header that marks a traced message on every NATS hop (value "1").
TRACE_HEADER = "Sb-Trace"
# What the hops test for: in a parsed header dict (TRACE_HEADER) or in the
# raw header block of a lean-bus message (TRACE_HEADER_BYTES), with
# ``hdr.find(TRACE_HEADER_BYTES) >= 0``: ``bytes in bytes`` first tries the
# needle as an integer, raising and clearing a TypeError each time (about
# twice the time, and an allocation); ``find`` goes straight to the search.
TRACE_HEADER_BYTES = TRACE_HEADER.encode()
# The header line as it goes into a raw NATS header block.
TRACE_HEADER_LINE = f"{TRACE_HEADER}: 1\r\n"
# A header block with only the mark (publishes that carry no other header).
TRACE_HEADERS = f"NATS/1.0\r\n{TRACE_HEADER_LINE}\r\n".encode()
# nats-server (>= 2.11) publishes its own trace events of a message that
# carries this header to the subject it names (the edge sets it on traced
# send requests, to ``trace_subject(...) + ".nats"``).
NATS_TRACE_DEST = "Nats-Trace-Dest"

# Stages in the order a message passes them (readers sort records of the
# same millisecond by it).
STAGES = ("edge.received", "sequencer.stored", "sequencer.fanout", "push.enqueued", "edge.delivered",
          "edge.acked", "push.sent", "push.retry", "push.skipped", "archiver.stored", "error")
ROLES = ("edge", "sequencer", "pusher", "archiver")


class TraceRecord(msgspec.Struct, omit_defaults=True, kw_only=True):
    """One hop of one message. ``conv``, ``id`` (the sender's message id)
    and ``sender`` name the message; the optional fields say what the hop
    knew: ``seq`` (conversation seq), ``stream_seq`` (MESSAGES sequence),
    ``device`` (socket id), ``user`` (recipient), ``members`` and ``mode``
    ("inbox": INBOX copies, "pull": a large group read from its conversation
    subject), ``cursor`` (the recipient's INBOX cursor), ``reason``,
    ``code`` (an error's code), ``provider`` (a push platform)."""

    stage: str
    at: int  # ms since the epoch, this process's clock
    role: str
    instance: str
    conv: str
    id: str
    sender: str
    seq: int | None = None
    stream_seq: int | None = None
    device: str | None = None
    user: str | None = None
    members: int | None = None
    mode: str | None = None
    cursor: int | None = None
    reason: str | None = None
    code: str | None = None
    provider: str | None = None


encode_record = msgspec.json.Encoder().encode
decode_record = msgspec.json.Decoder(TraceRecord).decode


def trace_subject(prefix: str, conv: str, sender: str, id: str) -> str:
    """Where the records of one message go: ``<prefix>.trace.<conv>.<sender>.<id>``.
    The three ids are checked (they are subject tokens)."""
    return f"{prefix}.trace.{ids.check(conv, 'conv')}.{ids.check(sender, 'sender')}.{ids.check(id, 'message id')}"


def trace_all(prefix: str) -> str:
    """The subjects of every record (what SB_TRACE captures)."""
    return f"{prefix}.trace.>"


def default_instance(role: str) -> str:
    """``<role>-<host>-<pid>``: the instance name when neither the settings
    (``instance``) nor the role (edge id, sequencer instance) name one."""
    return f"{role}-{socket.gethostname()}-{os.getpid()}"


class Sampler:
    """1 message in ``round(1 / rate)``: a countdown, not a random draw per
    message (``hit`` is a decrement and a comparison). ``rate`` 0: never;
    1: always. The countdown starts at a random point so that edges started
    together do not trace the same positions of their streams."""

    __slots__ = ("every", "_left")

    def __init__(self, rate: float) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"trace sample rate {rate} is not in [0, 1]")
        self.every = round(1.0 / rate) if rate > 0 else 0
        self._left = random.randint(1, self.every) if self.every else 0

    def hit(self) -> bool:
        if not self.every:
            return False
        self._left -= 1
        if self._left:
            return False
        self._left = self.every
        return True


Publish = Callable[[str, bytes], "None | Awaitable[None]"]


class Tracer:
    """The recorder of one role in one process: :meth:`record` stamps
    ``at``/``role``/``instance``, encodes and publishes with core NATS (no
    ack, no task, no future). ``publish(subject, data)``: the lean bus
    connection's ``publish`` (synchronous); a role that only has nats-py
    passes its ``publish`` coroutine function and calls :meth:`arecord`.

    A record that cannot be published (the bus is reconnecting and its
    buffer is full, or closed) is dropped and counted in ``dropped``: a trace
    must never fail the message it describes. ``exporters``: callables
    handed every record after it was published (OpenTelemetry export hooks
    in here); an exporter's exception is logged, never raised."""

    __slots__ = ("_publish", "prefix", "role", "instance", "sampler", "exporters", "published", "dropped", "_log")

    def __init__(self, *, publish: Publish, prefix: str, role: str, instance: str, sample: float = 0.0) -> None:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        self._publish = publish
        self.prefix = prefix
        self.role = role
        self.instance = instance
        self.sampler = Sampler(sample)
        self.exporters: list[Callable[[TraceRecord], None]] = []
        if (otel := trace_otel.from_env(role, instance)) is not None:
            self.exporters.append(otel)
        self.published = 0
        self.dropped = 0
        self._log = log.get("trace", role=role)

    def subject(self, conv: str, sender: str, id: str) -> str:
        return trace_subject(self.prefix, conv, sender, id)

    def make(self, stage: str, *, conv: str, id: str, sender: str, **fields: Any) -> TraceRecord:
        return TraceRecord(stage=stage, at=time.time_ns() // 1_000_000, role=self.role, instance=self.instance,
                           conv=conv, id=id, sender=sender, **fields)

    def record(self, stage: str, *, conv: str, id: str, sender: str, **fields: Any) -> None:
        """Record one hop (synchronous publish)."""
        rec = self.make(stage, conv=conv, id=id, sender=sender, **fields)
        try:
            out = self._publish(self.subject(conv, sender, id), encode_record(rec))
        except Exception as exc:  # a trace never fails the message
            self._dropped(stage, exc)
            return
        if out is not None and inspect.isawaitable(out):  # a coroutine publish given to a sync caller
            if inspect.iscoroutine(out):
                out.close()
            self._dropped(stage, TypeError("publish is a coroutine function: use arecord"))
            return
        self._done(rec)

    async def arecord(self, stage: str, *, conv: str, id: str, sender: str, **fields: Any) -> None:
        """Record one hop with a publish that may be a coroutine (nats-py's,
        which only appends to its write buffer)."""
        rec = self.make(stage, conv=conv, id=id, sender=sender, **fields)
        try:
            out = self._publish(self.subject(conv, sender, id), encode_record(rec))
            if out is not None and inspect.isawaitable(out):
                await out
        except Exception as exc:  # a trace never fails the message
            self._dropped(stage, exc)
            return
        self._done(rec)

    def _done(self, rec: TraceRecord) -> None:
        self.published += 1
        for export in self.exporters:
            try:
                export(rec)
            except Exception:  # an exporter's failure is logged; the record was published
                self._log.exception("trace exporter failed", stage=rec.stage)

    def _dropped(self, stage: str, exc: BaseException) -> None:
        self.dropped += 1
        if self.dropped & (self.dropped - 1) == 0:  # 1st, 2nd, 4th, 8th...: never a line per record
            self._log.warning("trace record dropped", stage=stage, error=f"{type(exc).__name__}: {exc}",
                              dropped=self.dropped)
