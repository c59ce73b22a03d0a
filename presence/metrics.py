"""Prometheus metrics of a presence tracker (a registry per tracker: no module-level state).

The tracker counts with plain ints (one increment per report and per batch
of changes, no lock) and an :class:`~switchboard.metrics.IntHistogram`; this
collector exports them when scraped. In ``switchboard up`` the edge's
``/metrics`` re-exports them (the tracker's process serves its registries to
the edge, sbctl/metrics.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

from switchboard.metrics import counter, histogram

if TYPE_CHECKING:
    from presence.tracker import PresenceTracker

# tracker attribute -> (counter name without _total, help)
_COUNTERS = (
    ("reports", "switchboard_presence_reports", "Heartbeats and connect/disconnect reports received from edges"),
    ("changes", "switchboard_presence_changes", "Online/offline transitions published"),
    ("fanout", "switchboard_presence_fanout", "Presence frames published to watchers (one per watcher per change)"),
    ("expired", "switchboard_presence_expired",
     "Users gone offline because their edge stopped heartbeating (the sweep)"),
    ("rejected_ids", "switchboard_presence_rejected_ids", "User ids in reports that are not valid ids (dropped)"),
    ("report_failures", "switchboard_presence_report_failures",
     "Reports the backend failed on (e.g. Redis away); the next heartbeat repairs the state"),
    ("sweep_failures", "switchboard_presence_sweep_failures", "Expiry sweeps that failed"),
    ("watches_refused", "switchboard_presence_watches_refused",
     "Watch requests refused: the watcher would watch more than presence_max_watches_per_user"),
)


class TrackerMetrics:
    def __init__(self, tracker: PresenceTracker) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_Counters(tracker))


class _Counters:
    def __init__(self, tracker: PresenceTracker) -> None:
        self._t = tracker

    def collect(self) -> Iterator[Metric]:
        t = self._t
        for attr, name, doc in _COUNTERS:
            yield counter(name, doc, getattr(t, attr))
        yield histogram("switchboard_presence_report_seconds",
                        "Time to apply one report: backend update and publishing its changes", t.report_seconds)
