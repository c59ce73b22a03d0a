"""Reading a message's trace back: its records from the stream SB_TRACE, in order.

The roles write one :class:`~switchboard.trace.TraceRecord` per hop to
``<prefix>.trace.<conv>.<sender>.<id>`` (switchboard/trace.py); nats-server
writes its own trace events of the send request (``Nats-Trace-Dest``) to the
same subject plus ``.nats``. This module reads both with batch direct gets
(no consumer), turns each server event into a :class:`NatsHop` (a
``TraceRecord`` with role ``nats`` and the server's details), and sorts
everything by time, then by the order of the stages.

Used by ``switchboard trace`` (sbctl/trace.py) and by the
sequencer's ``<prefix>.api.trace.get`` endpoint (:func:`answer`).

A ``trace CONV SEQ`` first names the message: from MESSAGES (the
conversation's last message, else a binary search by stream sequence), else
the archive (the store, or the archiver's history API), else the trace
stream's own ``sequencer.stored`` record with that seq.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS

from switchboard import events, frames, ids, trace
from switchboard.bus import streams
from switchboard.bus.direct import DirectGetError, direct_batch
from switchboard.config import Settings
from switchboard.errors import BadFrame, NotFound, Unavailable
from switchboard.trace import TraceRecord

if TYPE_CHECKING:
    from switchboard.store import Store

# Records returned for one query at most: a 1:1 message has about ten, a
# 500-member group's about a thousand (a delivery and an ack per device);
# the cap keeps one answer inside a NATS message (1 MiB).
MAX_RECORDS = 4000
# Entries per direct get round trip.
READ_BATCH = 256
# Records of one conversation scanned to find a seq in the trace stream
# itself (the last resort of trace CONV SEQ).
SEQ_SCAN_MAX = 20_000

# nats-server's trace event types (server/msgtrace.go) and connection kinds.
NATS_EVENT_STAGES = {"in": "nats.ingress", "eg": "nats.egress", "js": "nats.jetstream", "sm": "nats.mapping",
                     "se": "nats.stream_export", "si": "nats.service_import"}
NATS_CONN_KINDS = {0: "client", 1: "route", 2: "gateway", 3: "system", 4: "leafnode", 5: "jetstream", 6: "account"}

# Stages of one millisecond sort in the order a message passes them; the
# server's events of the send request come right after edge.received, in the
# order the servers saw them (origin first, then by Nats-Trace-Hop; within
# one server, the order of its events).
NATS_RANK = 1
STAGE_ORDER = {"edge.received": 0, **{s: i + 2 for i, s in enumerate(x for x in trace.STAGES if x != "edge.received")}}


class NatsHop(TraceRecord, kw_only=True, omit_defaults=True):
    """One nats-server trace event, shaped as a record: role ``nats``,
    ``instance`` = the server's name, ``stage`` = ``nats.<event>``.
    ``conn_kind``/``cid``/``conn``: the connection the message came in on
    (ingress) or left by (egress); ``subject``: what it was published to or
    the subscription that matched; ``hops``: how many other servers this one
    forwarded it to (routes, gateways, leaf nodes); ``error``: a refusal (a
    permission violation, no interest...)."""

    conn_kind: str | None = None
    cid: int | None = None
    conn: str | None = None
    subject: str | None = None
    account: str | None = None
    stream: str | None = None
    hops: int | None = None
    hop: str | None = None  # Nats-Trace-Hop of a server that got it from another server: "1", "1.2"...
    error: str | None = None


class TraceQuery(msgspec.Struct, omit_defaults=True):
    """``<prefix>.api.trace.get``: ``{conv, seq}`` or ``{id, conv?, sender?}``."""

    conv: str | None = None
    seq: int | None = None
    id: str | None = None
    sender: str | None = None


class TraceReply(msgspec.Struct, omit_defaults=True):
    """The records, sorted; ``conv``/``sender``/``id``: the message they are
    of, when one message was asked for and named."""

    records: list[TraceRecord]  # no default: an empty answer still says "records": []
    conv: str | None = None
    sender: str | None = None
    id: str | None = None
    truncated: bool = False
    error: events.ErrorBody | None = None


encode = msgspec.json.Encoder().encode
_decode_msg = msgspec.json.Decoder(frames.Msg).decode


def stream_name(settings: Settings) -> str:
    """The trace stream's name (``SB_TRACE`` with the stream prefix)."""
    return streams.trace_name(settings)


def sort_key(r: TraceRecord) -> tuple[int, int]:
    """Time, then stage order (a stable sort keeps the servers' hops in the order :func:`read_trace` put them)."""
    return r.at, NATS_RANK if r.role == "nats" else STAGE_ORDER.get(r.stage, len(STAGE_ORDER) + 2)


def _hop_key(h: NatsHop) -> tuple[int, ...]:
    """Origin server first (no hop), then "1", "1.1", "2"..."""
    try:
        return tuple(int(x) for x in h.hop.split(".")) if h.hop else ()
    except ValueError:
        return (1 << 30,)


def _ms(ts: str) -> int:
    """RFC 3339 with nanoseconds (nats-server) -> ms since the epoch."""
    head, _, frac = ts.rstrip("Z").partition(".")
    frac = (frac.split("+")[0].split("-")[0] + "000")[:3]
    base = dt.datetime.fromisoformat(head).replace(tzinfo=dt.UTC)
    return int(base.timestamp()) * 1000 + int(frac)


def nats_hops(data: bytes, *, conv: str, sender: str, id: str) -> list[NatsHop]:
    """The events of one nats-server trace message as records (an
    unreadable one gives none: the server's format is not ours)."""
    try:
        doc = msgspec.json.decode(data)
    except msgspec.DecodeError:
        return []
    if not isinstance(doc, dict):
        return []
    server = doc.get("server") or {}
    name = str(server.get("name") or server.get("id") or "nats-server")
    hops = doc.get("hops")
    hop = ((doc.get("request") or {}).get("header") or {}).get("Nats-Trace-Hop")
    hop = hop[0] if isinstance(hop, list) and hop else None
    out: list[NatsHop] = []
    for ev in doc.get("events") or []:
        if not isinstance(ev, dict):
            continue
        kind = ev.get("type", "")
        stage = NATS_EVENT_STAGES.get(kind, f"nats.{kind}")
        try:
            at = _ms(str(ev.get("ts", "")))
        except ValueError:
            at = 0
        ck = ev.get("kind")
        out.append(NatsHop(
            stage=stage, at=at, role="nats", instance=name, conv=conv, id=id, sender=sender,
            conn_kind=NATS_CONN_KINDS.get(ck, str(ck)) if ck is not None else None,
            cid=ev.get("cid"), conn=ev.get("name") or None,
            subject=ev.get("subj") or ev.get("sub") or ev.get("to") or ev.get("subject") or None,
            account=ev.get("acc") or None, stream=ev.get("stream") or None,
            hops=hops if kind == "eg" and isinstance(hops, int) and hops else None,
            hop=hop,
            error=ev.get("error") or None))
    return out


def _record_of(subject: str, data: bytes) -> list[TraceRecord]:
    tokens = subject.split(".")
    if tokens[-1] == "nats" and len(tokens) >= 6:
        return list(nats_hops(data, conv=tokens[-4], sender=tokens[-3], id=tokens[-2]))
    try:
        return [trace.decode_record(data)]
    except (msgspec.DecodeError, msgspec.ValidationError):
        return []


async def _read_subject(nc: NATS, stream: str, subject: str, *, limit: int,
                        timeout: float) -> tuple[list[TraceRecord], bool]:
    """Every record on ``subject`` (wildcards allowed); True when cut at ``limit``."""
    out: list[TraceRecord] = []
    start = 1
    while True:
        got = await direct_batch(nc, stream=stream, subject=subject, start_seq=start, batch=READ_BATCH,
                                 timeout=timeout)
        for _, headers, data in got.entries:
            out.extend(_record_of(headers.get("Nats-Subject", subject), data))
            if len(out) >= limit:
                return out[:limit], True
        if not got.num_pending or not got.entries:
            return out, False
        start = got.last_seq + 1


async def read_trace(nc: NATS, settings: Settings, *, id: str, conv: str | None = None, sender: str | None = None,
                     limit: int = MAX_RECORDS, timeout: float = 5.0) -> tuple[list[TraceRecord], bool]:
    """The records of message ``id`` (of ``conv`` and ``sender`` when given),
    the server's events included, sorted by time then stage order; the bool
    says the answer was cut at ``limit``. Raises :class:`NotFound` when the
    trace stream does not exist, :class:`Unavailable` when it does not answer."""
    base = ".".join((settings.subject_prefix, "trace", ids.check(conv, "conv") if conv else "*",
                     ids.check(sender, "sender") if sender else "*", ids.check(id, "message id")))
    stream = stream_name(settings)
    records: list[TraceRecord] = []
    cut = False
    try:
        for subject in (base, base + ".nats"):
            got, more = await _read_subject(nc, stream, subject, limit=limit - len(records), timeout=timeout)
            if subject.endswith(".nats"):
                # The .nats records are NatsHop (_record_of); the sort is stable: each server's events keep their order
                got.sort(key=_hop_key)  # type: ignore[arg-type]
            records += got
            cut = cut or more
            if len(records) >= limit:
                break
    except DirectGetError as exc:
        raise NotFound(f"trace stream {stream} is not readable ({exc.message}): run `switchboard init`") from None
    records.sort(key=sort_key)
    return records, cut


# -- naming the message of CONV SEQ -------------------------------------------------

ArchiveLookup = Callable[[str, int], Awaitable["frames.Msg | None"]]


def history_lookup(nc: NATS, settings: Settings, timeout: float = 5.0) -> ArchiveLookup:
    """Message ``seq`` of ``conv`` from the archiver's history API
    (``<prefix>.api.history``: store plus the unarchived end of MESSAGES)."""
    from switchboard import api, rpc  # api names this module's types: imported when used

    async def lookup(conv: str, seq: int) -> frames.Msg | None:
        q = events.HistoryQuery(conv=conv, after=seq - 1, before=seq + 1, limit=1)
        try:
            reply = await rpc.call(nc, api.HISTORY, q, subjects=settings.subjects, timeout=timeout)
        except Unavailable:
            return None
        return next((m for m in reply.messages if m.seq == seq), None)

    return lookup


def store_lookup(store: Store) -> ArchiveLookup:
    """Message ``seq`` of ``conv`` from the archive store itself (the sequencer has it)."""

    async def lookup(conv: str, seq: int) -> frames.Msg | None:
        rows = await store.messages(conv, after=seq - 1, before=seq + 1, limit=1)
        return next((m for m in rows if m.seq == seq), None)

    return lookup


async def find_message(nc: NATS, settings: Settings, conv: str, seq: int, *, archive: ArchiveLookup | None,
                       timeout: float = 5.0) -> tuple[str, str] | None:
    """``(sender, id)`` of message ``seq`` of ``conv``, or None if nothing knows it."""
    ids.check(conv, "conv")
    try:
        found = await _from_messages(nc, settings, conv, seq, timeout=timeout)
    except (nats.errors.TimeoutError, nats.js.errors.APIError, msgspec.DecodeError, msgspec.ValidationError):
        found = None  # MESSAGES not readable here: the archive and the trace may still know
    if found is not None:
        return found or None  # () : MESSAGES knows it was never written
    if archive is not None:
        try:
            m = await archive(conv, seq)
        except Exception:  # an archive that cannot answer: try the trace stream
            m = None
        if m is not None:
            return m.from_, m.id
    return await _seq_from_trace(nc, settings, conv, seq, timeout=timeout)


async def _from_messages(nc: NATS, settings: Settings, conv: str, seq: int, *,
                         timeout: float) -> tuple[str, str] | tuple[()] | None:
    """Message ``seq`` from MESSAGES with ``STREAM.MSG.GET`` (what the
    sequencer and admin may read): the conversation's last message first
    (the usual complaint is about the latest one), else a binary search over
    stream sequences with ``next_by_subj`` (a conversation's seqs grow with
    the stream's: about 2 x log2(stream length) reads, ~50 at most). ``()``:
    the conversation's last seq is below ``seq`` (never written); None: not
    in MESSAGES (aged out, or no such conversation there)."""
    js = nc.jetstream(timeout=timeout)
    messages, _, _ = streams.names(settings)
    subject = settings.subjects.msg(conv)
    try:
        raw = await js.get_last_msg(messages, subject)
    except nats.js.errors.NotFoundError:
        return None
    last = _decode_msg(raw.data or b"")
    if last.seq == seq:
        return last.from_, last.id
    if last.seq < seq:
        return ()
    lo, hi = 1, (raw.seq or 1) - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        try:
            raw = await js.get_msg(messages, seq=mid, subject=subject, next=True)
        except nats.js.errors.NotFoundError:
            return None
        m = _decode_msg(raw.data or b"")
        if m.seq == seq:
            return m.from_, m.id
        if m.seq < seq:
            lo = (raw.seq or mid) + 1
        else:
            hi = mid - 1
    return None


async def _seq_from_trace(nc: NATS, settings: Settings, conv: str, seq: int, *,
                          timeout: float) -> tuple[str, str] | None:
    """A traced message names itself: its ``sequencer.stored`` record has the seq."""
    subject = f"{settings.subject_prefix}.trace.{conv}.*.*"
    start, scanned = 1, 0
    try:
        while scanned < SEQ_SCAN_MAX:
            got = await direct_batch(nc, stream=stream_name(settings), subject=subject, start_seq=start,
                                     batch=READ_BATCH, timeout=timeout)
            scanned += len(got.entries)
            for _, _, data in got.entries:
                try:
                    r = trace.decode_record(data)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    continue
                if r.seq == seq and r.stage == "sequencer.stored":
                    return r.sender, r.id
            if not got.num_pending or not got.entries:
                return None
            start = got.last_seq + 1
    except DirectGetError:
        return None
    return None


async def answer(nc: NATS, settings: Settings, q: TraceQuery, *, archive: ArchiveLookup | None,
                 timeout: float = 5.0) -> TraceReply:
    """What ``trace CONV SEQ`` / ``trace --id ID`` and the endpoint answer."""
    if q.id is not None:
        if q.seq is not None:
            raise BadFrame("give either seq (with conv) or id, not both")
        records, cut = await read_trace(nc, settings, id=q.id, conv=q.conv, sender=q.sender, timeout=timeout)
        return TraceReply(records=records, conv=q.conv, sender=q.sender, id=q.id, truncated=cut)
    if q.conv is None or q.seq is None:
        raise BadFrame("a trace query needs conv and seq, or id")
    if q.seq < 1:
        raise BadFrame("seq must be >= 1")
    found = await find_message(nc, settings, q.conv, q.seq, archive=archive, timeout=timeout)
    if found is None:
        raise NotFound(f"no message {q.seq} in {q.conv!r} (not written, or neither MESSAGES, the archive "
                       f"nor the trace stream knows it)")
    sender, mid = found
    records, cut = await read_trace(nc, settings, id=mid, conv=q.conv, sender=sender, timeout=timeout)
    return TraceReply(records=records, conv=q.conv, sender=sender, id=mid, truncated=cut)


__all__ = ["NatsHop", "TraceQuery", "TraceReply", "read_trace", "find_message", "answer", "history_lookup",
           "store_lookup", "stream_name", "nats_hops", "sort_key"]
