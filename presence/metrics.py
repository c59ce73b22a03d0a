"""Prometheus metrics of a presence tracker (a registry per tracker: no module-level state).

The tracker counts with plain ints (one increment per report and per batch
of changes, no lock); this collector exports them when scraped. In
``switchboard up`` the edge's ``/metrics`` re-exports them (the tracker's
process serves its registries to the edge, sbctl/metrics.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily

if TYPE_CHECKING:
    from presence.tracker import PresenceTracker


class TrackerMetrics:
    def __init__(self, tracker: "PresenceTracker") -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_Counters(tracker))


class _Counters:
    def __init__(self, tracker: "PresenceTracker") -> None:
        self._t = tracker

    def collect(self):
        t = self._t
        for name, doc, value in (
            ("switchboard_presence_reports", "Heartbeats and connect/disconnect reports received from edges",
             t.reports),
            ("switchboard_presence_changes", "Online/offline transitions published", t.changes),
            ("switchboard_presence_fanout", "Presence frames published to watchers (one per watcher per change)",
             t.fanout),
        ):
            c = CounterMetricFamily(name, doc)
            c.add_metric([], value)
            yield c
