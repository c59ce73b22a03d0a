"""JetStream stream definitions, created idempotently by the admin step.

Streams (and the consumers and KV bucket the roles use) are created by
``switchboard init`` (admin NATS user with the JetStream management API) or
by ``switchboard up`` before it starts the roles: sbctl/init.py.
Long-running roles only check that what they use exists
(:func:`require_streams`) and stop with one line naming ``switchboard init``
if not; their NATS users may not create or change streams.

The same definitions are written as JSON to ``nats/streams/`` by
``switchboard nats-config`` so operators can apply them with the ``nats`` CLI
(``nats stream add --config nats/streams/MESSAGES.json``).

- MESSAGES (``sb.msg.*``): every message of every conversation, in order;
  the dedup window makes a retried send land once. No republish: the
  sequencer publishes a large group's message to ``sb.conv.<conv>.live``
  itself after the write was acked (a republish of every message would cost
  the server a copy per message for the few conversations that need it).
- INBOX (``sb.user.*.inbox``): per-user mailbox entries; republished after
  storage to ``sb.user.<uid>.live`` (with ``Nats-Sequence`` = the cursor and
  ``Nats-Last-Sequence`` = the previous entry of that user), which is what
  the user's edges subscribe to. Delivery therefore happens only after the
  entry is stored, and an edge can see a gap in a user's entries.
- PUSH (``sb.push.*``): work queue for the pusher.
- DEADLETTER (``sb.dlq.>``): entries the archiver or pusher gave up on, kept
  14 days for an operator to inspect (``nats stream view DEADLETTER``).
- SB_TRACE (``sb.trace.>``): per-message trace records (switchboard/trace.py),
  kept ``trace_max_age_sec`` (default one hour); only traced messages write
  any. Every role that records hops checks it exists; only the admin user
  and the sequencer may read it (nats/accounts.conf).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RePublish, RetentionPolicy, StorageType, StreamConfig, StreamInfo

from switchboard.config import Settings
from switchboard.errors import SwitchboardError


class NotInitialized(SwitchboardError):
    """A stream, consumer or KV bucket a role needs does not exist: the admin
    step (``switchboard init``) has not run against this NATS."""

    code = "not_initialized"

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} does not exist: run `switchboard init` first "
                         "(with a NATS user allowed the JetStream management API)")


def names(settings: Settings) -> tuple[str, str, str]:
    p = settings.stream_prefix
    return f"{p}MESSAGES", f"{p}INBOX", f"{p}PUSH"


def deadletter_name(settings: Settings) -> str:
    return f"{settings.stream_prefix}DEADLETTER"


def trace_name(settings: Settings) -> str:
    return f"{settings.stream_prefix}SB_TRACE"


def definitions(settings: Settings) -> list[StreamConfig]:
    s = settings.subjects
    messages, inbox, push = names(settings)
    return [
        _stored(settings, StreamConfig(
            name=messages, subjects=[s.msg_all], retention=RetentionPolicy.LIMITS,
            max_age=settings.messages_max_age_sec, discard=DiscardPolicy.OLD,
            description="Every message of every conversation, sequenced; the archive keeps them forever")),
        _stored(settings, StreamConfig(
            name=inbox, subjects=[s.inbox_all], retention=RetentionPolicy.LIMITS,
            max_age=settings.inbox_max_age_sec, max_msgs_per_subject=settings.inbox_max_per_user,
            discard=DiscardPolicy.OLD,
            republish=RePublish(src=s.inbox_all, dest=s.live_republish_dest),
            description="Per-user mailbox; cursor = stream sequence")),
        _stored(settings, StreamConfig(
            name=push, subjects=[s.push_all], retention=RetentionPolicy.WORK_QUEUE,
            max_age=86400.0, discard=DiscardPolicy.OLD,
            description="Push notifications to send (work queue for the pusher)")),
        _stored(settings, StreamConfig(
            name=deadletter_name(settings), subjects=[f"{s.prefix}.dlq.>"], retention=RetentionPolicy.LIMITS,
            max_age=14 * 86400.0, discard=DiscardPolicy.OLD,
            description="What the archiver and the pusher gave up on, with the reason in headers")),
        _stored(settings, StreamConfig(
            name=trace_name(settings), subjects=[f"{s.prefix}.trace.>"], retention=RetentionPolicy.LIMITS,
            max_age=settings.trace_max_age_sec, discard=DiscardPolicy.OLD,
            description="Per-message trace records: one per hop of a traced message (switchboard trace)"),
            # JetStream refuses a dedup window longer than max_age (a short-lived trace stream)
            duplicate_window=min(settings.dedup_window_sec, settings.trace_max_age_sec)),
    ]


def _stored(settings: Settings, cfg: StreamConfig, duplicate_window: float | None = None) -> StreamConfig:
    """``cfg`` with what every stream shares: file storage, ``replicas``
    copies, the dedup window (``dedup_window_sec`` unless given), direct gets."""
    if duplicate_window is None:
        duplicate_window = settings.dedup_window_sec
    return dataclasses.replace(cfg, storage=StorageType.FILE, num_replicas=settings.replicas,
                               duplicate_window=duplicate_window, allow_direct=True)


async def ensure_streams(js: JetStreamContext, settings: Settings) -> None:
    """Create every stream, or bring an existing one to this definition."""
    for cfg in definitions(settings):
        try:
            await js.add_stream(cfg)
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != 10058:  # stream name already in use with a different configuration
                raise
            await js.update_stream(cfg)


async def require_streams(js: JetStreamContext, stream_names: list[str] | tuple[str, ...]) -> None:
    """Check that these streams exist (one STREAM.INFO each); a role calls
    this instead of creating them. :class:`NotInitialized` names the first
    missing one."""
    for name in stream_names:
        try:
            await js.stream_info(name)
        except nats.js.errors.NotFoundError:
            raise NotInitialized(f"JetStream stream {name}") from None


async def epoch(js: JetStreamContext, stream: str) -> str:
    """A short id of this incarnation of ``stream``: it changes when the stream
    is recreated, so a client holding cursors of the old one knows to resync."""
    return epoch_of(await js.stream_info(stream))


def epoch_of(info: StreamInfo) -> str:
    created = info.created.isoformat() if info.created else ""
    return hashlib.sha256(f"{info.config.name}|{created}".encode()).hexdigest()[:12]


def write_json(settings: Settings, folder: str | Path) -> list[Path]:
    out: list[Path] = []
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for cfg in definitions(settings):
        path = folder / f"{cfg.name}.json"
        path.write_text(json.dumps(cfg.as_dict(), indent=2, sort_keys=True) + "\n")
        out.append(path)
    return out
