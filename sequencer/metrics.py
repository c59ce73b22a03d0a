"""Prometheus metrics of one sequencer (a registry per sequencer: no module-level state).

Nothing here runs per message: the pipeline, the partition leases and the
conversation list count with plain ints and an
:class:`~switchboard.metrics.IntHistogram` (no lock), and :class:`_Collector`
reads them when Prometheus scrapes. docs/operations.md, "Metrics", lists
every series and what to alert on.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

from switchboard.metrics import IntHistogram, counter, gauge, histogram

if TYPE_CHECKING:
    from sequencer.service import Sequencer

# pipeline.stats key -> (counter name without switchboard_sequencer_ and _total, help)
_PIPELINE = (
    ("sent", "sends", "Sends stored and answered `sent` (user and system; duplicates included)"),
    ("system", "system_messages", "System messages (sb.api.system.send) stored"),
    ("writes", "stream_writes", "MESSAGES writes issued (a fence retry writes again)"),
    ("fence_retries", "fence_conflicts",
     "MESSAGES writes refused by the fence (another process wrote the conversation): reloaded and retried"),
    ("duplicates", "duplicates", "Retried sends JetStream deduplicated (answered with the original)"),
    ("repairs", "repairs", "Last messages fanned out again after an ownership change (a dead owner's copies)"),
    ("not_owner", "not_owner", "Sends refused because this process does not own the partition (handover)"),
    ("inbox_copies", "inbox_copies", "INBOX copies published (one per member of each stored message)"),
    ("push_entries", "push_entries", "PUSH entries published for offline members"),
    ("copy_retries", "copy_retries", "INBOX/PUSH copies re-published after a failed or missing ack"),
    ("fanout_waits", "fanout_waits",
     "Stored messages whose copies waited for the previous message's copies of the conversation (seq order)"),
    ("loads", "conversation_loads", "Conversation state loads (members, last seq, marks) before a write"),
    ("load_failures", "conversation_load_failures", "Conversation loads that failed (their sends got an error)"),
)
# partitions.counts key -> (counter name, help)
_LEASES = (
    ("renewals", "lease_renewals", "Partition lease renewals that succeeded"),
    ("renewal_failures", "lease_renewal_failures",
     "Partition lease renewals that failed (timeout, NATS away); the lease lapses if it goes on"),
    ("lost", "leases_lost", "Partition leases found taken by another process at renewal"),
    ("lapsed", "leases_lapsed", "Partition leases that ran out before a renewal succeeded"),
    ("acquired", "partitions_acquired", "Partitions taken (rebalance, a dead owner, start)"),
    ("released", "partitions_released", "Partitions given up (rebalance, stop)"),
    ("round_failures", "lease_round_failures", "Lease rounds that failed (NATS away)"),
)


class SequencerMetrics:
    def __init__(self, seq: Sequencer) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(seq))


class _Collector:
    def __init__(self, seq: Sequencer) -> None:
        self._s = seq

    def collect(self) -> Iterator[Metric]:
        s = self._s
        pre = "switchboard_sequencer_"
        pipe = s.pipeline
        stats = pipe.stats if pipe is not None else {}
        for key, name, doc in _PIPELINE:
            yield counter(pre + name, doc, stats.get(key, 0))
        codes = dict(pipe.error_codes) if pipe is not None else {}
        yield counter(pre + "send_errors", "Sends answered with an error, by error code",
                      {(code,): n for code, n in codes.items()}, ["code"])
        yield histogram(pre + "send_seconds",
                        "Sequencer time of a stored send: arrival to the `sent` answer (waiting behind the "
                        "conversation's previous write, loading it, the MESSAGES write, the INBOX/PUSH copies)",
                        pipe.send_seconds if pipe is not None else _EMPTY)
        yield gauge(pre + "inflight", "Sends received and not answered yet",
                    sum(pipe.inflight.values()) if pipe is not None else 0)
        yield gauge(pre + "conversations", "Conversations whose state this process holds (bounded)",
                    len(pipe._convs) if pipe is not None else 0)

        leases = s.leases
        if leases is not None:
            owned, members = len(leases.owned), len(leases.members)
        else:  # static partitions (tests) or not started
            owned, members = (len(pipe.partitions) if pipe is not None else 0), 0
        yield gauge(pre + "partitions_owned", "Partitions this process owns and writes", owned)
        yield gauge(pre + "partitions", "Partitions of the deployment (settings.partitions)", s.settings.partitions)
        yield gauge(pre + "members", "Live sequencers this process sees in the lease bucket", members)
        counts = leases.counts if leases is not None else {}
        for key, name, doc in _LEASES:
            yield counter(pre + name, doc, counts.get(key, 0))

        lister = s.conv_list
        yield counter(pre + "conv_list_requests", "conv.list requests answered or failed", lister.requests)
        yield counter(pre + "conv_list_failures", "conv.list requests that failed", lister.failures)
        yield histogram(pre + "conv_list_seconds", "Time to build one conv.list answer", lister.seconds)
        yield counter(pre + "api_busy", "API requests refused as busy (over [sequencer] api_max_inflight at once)",
                      s.api_counts["busy"])
        yield counter(pre + "api_internal_errors", "API requests that failed on an unexpected error (a bug)",
                      s.api_counts["internal_errors"])


_EMPTY = IntHistogram()  # exported before the pipeline exists (not started): all zero
