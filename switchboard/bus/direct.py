"""Batch direct get: read a run of one subject's messages straight from a stream.

``$JS.API.DIRECT.GET.<stream>`` with ``{"seq": S, "next_by_subj": SUBJ,
"batch": N}`` answers with up to N messages of SUBJ whose stream sequence is
>= S, in order, each carrying ``Nats-Sequence`` and ``Nats-Num-Pending`` (how
many matching messages remain after it), then one header-only status message
``204 EOB`` (with ``Nats-Num-Pending`` and ``Nats-Last-Sequence``). When
nothing matches it answers a single ``404``. No consumer is created, so this is
cheap enough for every history query (archiver read-your-writes) and every
INBOX replay (edge). The stream needs ``allow_direct`` (all ours have it).

To read a whole range, call again with ``start_seq = batch.last_seq + 1``
while ``batch.num_pending`` > 0.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import NamedTuple

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg as NatsMsg

from switchboard.errors import SwitchboardError, Unavailable


class DirectGetError(SwitchboardError):
    """The stream refused a direct get (bad request, no such stream, no direct access)."""

    code = "direct_get"


class DirectEntry(NamedTuple):
    """One stored message: unpacks as ``(stream_seq, headers, data)``."""

    stream_seq: int
    headers: dict[str, str]
    data: bytes


@dataclass(slots=True)
class DirectBatch:
    """``entries`` in stream order; ``num_pending`` = matching messages after
    the last entry not returned; ``last_seq`` = the stream sequence of the last
    entry (``start_seq - 1`` when there is none), so the next call starts at
    ``last_seq + 1``."""

    entries: list[DirectEntry] = field(default_factory=list)
    num_pending: int = 0
    last_seq: int = 0


async def direct_batch(nc: NATS, *, stream: str, subject: str, start_seq: int, batch: int,
                       timeout: float = 2.0, api_prefix: str = "$JS.API", max_bytes: int = 0) -> DirectBatch:
    """Up to ``batch`` messages of ``subject`` (wildcards allowed) from
    ``stream`` with stream sequence >= ``start_seq``; with ``max_bytes``, the
    server also stops once the batch holds about that many bytes (at least
    one message is returned).

    Raises :class:`Unavailable` (retry) when the server does not answer within
    ``timeout``, :class:`DirectGetError` for any other refusal.
    """
    if batch < 1:
        raise ValueError("batch must be >= 1")
    start_seq = max(1, start_seq)
    req = {"seq": start_seq, "next_by_subj": subject, "batch": batch}
    if max_bytes > 0:
        req["max_bytes"] = max_bytes
    return await _direct(nc, stream=stream, req=req, start_seq=start_seq, timeout=timeout, api_prefix=api_prefix)


async def direct_last_per_subject(nc: NATS, *, stream: str, subject: str | list[str], limit: int = 10_000,
                                  timeout: float = 2.0, api_prefix: str = "$JS.API") -> DirectBatch:
    """The last message of every subject matching ``subject`` (``multi_last``;
    one filter or a list of them), e.g. every key of a KV bucket, or the last
    message of 256 conversations, in one request, with ``Nats-Time-Stamp``."""
    req = {"multi_last": subject if isinstance(subject, list) else [subject], "batch": limit}
    return await _direct(nc, stream=stream, req=req, start_seq=1, timeout=timeout, api_prefix=api_prefix)


async def _direct(nc: NATS, *, stream: str, req: dict[str, object], start_seq: int, timeout: float,
                  api_prefix: str) -> DirectBatch:
    subject = req.get("next_by_subj") or req.get("multi_last")
    inbox = nc.new_inbox()
    queue: asyncio.Queue[NatsMsg] = asyncio.Queue()

    async def on_msg(msg: NatsMsg) -> None:
        queue.put_nowait(msg)

    # A dedicated inbox per call: one request, many replies. SUB goes out on
    # the same connection before PUB, so no reply can arrive before it.
    sub = await nc.subscribe(inbox, cb=on_msg)
    try:
        await nc.publish(f"{api_prefix}.DIRECT.GET.{stream}", json.dumps(req).encode(), reply=inbox)
        out = DirectBatch(last_seq=start_seq - 1)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            try:
                msg = await asyncio.wait_for(queue.get(), max(remaining, 0.0))
            except TimeoutError:
                raise Unavailable(f"direct get on {stream} ({subject}) timed out after {timeout}s") from None
            hdrs = msg.headers or {}
            status = hdrs.get("Status")
            if status and not msg.data:
                desc = next((v for k, v in hdrs.items() if str(k).lower().endswith("description")), "")
                err = refusal(status, desc, stream)
                if err is not None:
                    raise err
                if status == "204":
                    out.num_pending = int(hdrs.get("Nats-Num-Pending", 0))
                return out
            add_entry(out, hdrs, msg.data)
    finally:
        await sub.unsubscribe()


def refusal(status: str, description: str, what: str) -> DirectGetError | None:
    """What a status message (one without data) that ends a batch means:
    None when the batch ended normally (``204`` end of batch, with
    ``Nats-Num-Pending``; ``404`` nothing at or after the start), else the
    refusal (``503`` no responders: no direct access, or no such stream)."""
    if status in ("204", "404"):
        return None
    if status == "503":
        return DirectGetError(f"no responders for direct get on stream {what}")
    return DirectGetError(f"direct get on {what} failed: {status} {description}".strip())


def add_entry(out: DirectBatch, headers: dict[str, str], data: bytes) -> None:
    """Append one stored message of a batch; KeyError without ``Nats-Sequence``."""
    seq = int(headers["Nats-Sequence"])
    out.entries.append(DirectEntry(seq, headers, data))
    out.last_seq = seq
    out.num_pending = int(headers.get("Nats-Num-Pending", 0))
