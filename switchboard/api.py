"""Every request/reply endpoint of the fabric, described once (switchboard/rpc/).

Subjects are under the configurable prefix (``sb`` by default). The request
and reply types are the msgspec Structs of :mod:`switchboard.events`,
:mod:`switchboard.presence.messages`, :mod:`switchboard.devices` and
:mod:`switchboard.trace_read`; the names are the micro endpoints' (``nats
micro stats`` rows). Errors: see :mod:`switchboard.rpc`.

Served by the sequencer (``sb-sequencer``), the archiver (``sb-archiver``),
the pusher (``sb-pusher``), the presence tracker (``sb-presence``) and the
edge (``sb-edge``, its stats only). Not here: the hot path's
``sb.send.<partition>.<conv>`` / ``sb.seq.<partition>.system`` (callback
pipeline, see :mod:`switchboard.rpc`).
"""

from __future__ import annotations

import msgspec

from switchboard import events
from switchboard.devices import RegisterReply, RegisterRequest
from switchboard.presence.messages import ContactsReply, ContactsRequest, PresenceReply, QueryRequest, WatchRequest
from switchboard.rpc import Endpoint
from switchboard.trace_read import TraceQuery, TraceReply


class SequencerStats(msgspec.Struct):
    """One sequencer's partitions and pipeline counters (for operators and handover tests)."""

    instance: str
    owned: list[int]
    members: list[str]
    writes: int = 0
    sent: int = 0
    errors: int = 0
    not_owner: int = 0
    fence_retries: int = 0
    duplicates: int = 0
    repairs: int = 0


class EdgeStats(msgspec.Struct):
    edge: str
    connections: int
    users: int


# -- sequencer -------------------------------------------------------------------------
SYSTEM_SEND = Endpoint("system-send", "api.system.send", events.SendRequest, events.SendReply)
CONV_CREATE = Endpoint("conv-create", "api.conv.create", events.ConvCreateRequest, events.ConvReply)
CONV_GET = Endpoint("conv-get", "api.conv.get", events.ConvGetRequest, events.ConvReply)
CONV_CONTACTS = Endpoint("conv-contacts", "api.conv.contacts", ContactsRequest, ContactsReply)
CONV_LIST = Endpoint("conv-list", "api.conv.list", events.ConvListQuery, events.ConvListReply)
CONV_RANGES = Endpoint("conv-ranges", "api.conv.ranges", events.RangesQuery, events.RangesReply)
CONV_LARGE = Endpoint("conv-large", "api.conv.large", events.RangesQuery, events.RangesReply)
RECEIPT = Endpoint("receipt", "receipt.{conv}", events.ReceiptRequest, events.ReceiptsReply)
RECEIPT_BATCH = Endpoint("receipt-batch", "api.receipts.batch", events.ReceiptBatch, events.ReceiptBatchReply)
RECEIPTS_GET = Endpoint("receipts-get", "api.receipts.get", events.ReceiptsQuery, events.ReceiptsReply)
UNREAD = Endpoint("unread", "api.unread", events.UnreadQuery, events.UnreadReply)
TRACE_GET = Endpoint("trace-get", "api.trace.get", TraceQuery, TraceReply)
SEQUENCER_STATS: Endpoint[None, SequencerStats] = Endpoint(
    "stats", "api.sequencer.{instance}.stats", None, SequencerStats)

# -- archiver, pusher, presence tracker, edge --------------------------------------------
HISTORY = Endpoint("history", "api.history", events.HistoryQuery, events.HistoryReply)
PUSH_REGISTER = Endpoint("push-register", "api.push.register", RegisterRequest, RegisterReply)
PRESENCE_QUERY = Endpoint("query", "api.presence.query", QueryRequest, PresenceReply)
PRESENCE_WATCH = Endpoint("watch", "api.presence.watch", WatchRequest, PresenceReply)
EDGE_STATS: Endpoint[None, EdgeStats] = Endpoint("stats", "api.edge.{edge}.stats", None, EdgeStats)
