"""Typed payloads that travel between services over NATS (not the client wire).

Requests and replies of the ``sb.send``, ``sb.api`` and ``sb.receipt``
subjects. JSON (msgspec), so operators can read them with ``nats sub``.
"""

from __future__ import annotations

from typing import TypeVar

import msgspec

from switchboard import frames


class ErrorBody(msgspec.Struct):
    code: str
    message: str
    retry: bool = False


class SendRequest(msgspec.Struct, omit_defaults=True):
    """``sb.send.<conv>``: sequence, persist and fan out one message."""

    sender: str
    id: str
    conv: str
    body: str
    to: str | None = None  # set for 1:1 sends: the dm conversation is made on first use
    kind: str = "user"  # "user" or "system"
    # System messages only: trace this one (switchboard/trace.py). A user's
    # send is marked by the edge with the Sb-Trace header instead.
    trace: bool = False


class SendReply(msgspec.Struct, omit_defaults=True):
    conv: str = ""
    seq: int = 0
    ts: int = 0
    id: str = ""
    duplicate: bool = False
    error: ErrorBody | None = None


class ConvCreateRequest(msgspec.Struct, omit_defaults=True):
    creator: str
    members: list[str]
    title: str = ""
    conv: str | None = None  # a service may choose the id; users get a generated one


class ConvGetRequest(msgspec.Struct):
    conv: str
    user: str | None = None  # when set, membership is enforced


class ConvReply(msgspec.Struct, omit_defaults=True):
    conv: str = ""
    members: list[str] = []
    title: str = ""
    kind: str = "group"
    error: ErrorBody | None = None


class HistoryQuery(msgspec.Struct, omit_defaults=True):
    conv: str
    user: str | None = None  # when set, membership is enforced
    before: int | None = None
    after: int | None = None
    limit: int = 50


class HistoryReply(msgspec.Struct, omit_defaults=True):
    conv: str = ""
    messages: list[frames.Msg] = []
    more: bool = False
    error: ErrorBody | None = None


def error_body(exc: BaseException) -> ErrorBody:
    return ErrorBody(
        code=getattr(exc, "code", "internal"),
        message=getattr(exc, "message", None) or str(exc),
        retry=bool(getattr(exc, "retry", False)),
    )


encode = msgspec.json.Encoder().encode


_T = TypeVar("_T")


def decoder(t: type[_T]) -> msgspec.json.Decoder[_T]:
    return msgspec.json.Decoder(t)


class PushEntry(msgspec.Struct, omit_defaults=True):
    """``sb.push.<uid>`` (stream PUSH): notify ``user`` of one message.

    Enqueued by the sequencer for a recipient with no online device. The
    pusher looks up the user's device tokens, skips it if the user has
    since read ``conv`` up to ``seq``, and sends a trimmed preview.
    """

    user: str
    conv: str
    seq: int
    id: str
    sender: str
    body: str  # already trimmed to a preview by the sequencer
    ts: int
    title: str = ""


class ReceiptRequest(msgspec.Struct, omit_defaults=True):
    """``sb.receipt.<conv>``: ``user`` has received (``delivered``) / read
    (``read``) the conversation up to these seqs. 0 = no change."""

    user: str
    conv: str
    delivered: int = 0
    read: int = 0


class ReceiptBatch(msgspec.Struct):
    """``sb.api.receipts.batch``: many receipts in one request, what an edge
    gathered in one flush (at most ``RECEIPT_BATCH_MAX``). One request per
    flush, not one per socket and conversation: a hello storm's replays
    make thousands of acks per flush, each a request that counted against
    the sequencer's API bound (``api_max_inflight``)."""

    receipts: list[ReceiptRequest]


RECEIPT_BATCH_MAX = 512  # receipts per batch: ~40 KB of JSON, far under NATS' 1 MB max_payload


class ReceiptFailure(msgspec.Struct):
    """One receipt of a batch that was refused: its index in the batch and why."""

    index: int
    error: ErrorBody


class ReceiptBatchReply(msgspec.Struct, omit_defaults=True):
    """Receipts not listed in ``failed`` were applied."""

    failed: list[ReceiptFailure] = []
    error: ErrorBody | None = None


class ReceiptsQuery(msgspec.Struct):
    """``sb.api.receipts.get``: every member's watermarks of ``conv``."""

    conv: str
    user: str | None = None  # when set, membership is enforced


class ReceiptsReply(msgspec.Struct, omit_defaults=True):
    receipts: list[frames.Receipt] = []
    error: ErrorBody | None = None


class UnreadQuery(msgspec.Struct):
    """``sb.api.unread``: messages of others not yet read, over the user's conversations."""

    user: str


class UnreadReply(msgspec.Struct, omit_defaults=True):
    total: int = 0
    by_conv: dict[str, int] = {}
    error: ErrorBody | None = None


class RangesQuery(msgspec.Struct):
    """``sb.api.conv.ranges``: the user's conversations with their last seq (resync)."""

    user: str


class RangesReply(msgspec.Struct, omit_defaults=True):
    ranges: list[frames.ResyncRange] = []
    error: ErrorBody | None = None


class ConvListQuery(msgspec.Struct):
    """``sb.api.conv.list``: ``user``'s conversations for a ``conv.list`` frame."""

    user: str


class ConvListReply(msgspec.Struct, omit_defaults=True):
    convs: list[frames.ConvSummary] = []
    more: bool = False
    error: ErrorBody | None = None
