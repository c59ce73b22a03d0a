"""Prometheus metrics of one archiver, in its own registry (no globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class ArchiverMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.lag = Gauge("switchboard_archiver_lag",
                         "Messages in MESSAGES not yet archived (consumer pending + unacked)", registry=r)
        self.archived = Counter("switchboard_archiver_messages",
                                "Messages written to the store and acked", registry=r)
        self.dead_lettered = Counter("switchboard_archiver_dead_letters",
                                     "Messages sent to the dead-letter subject", ["reason"], registry=r)
        self.store_errors = Counter("switchboard_archiver_store_errors",
                                    "Failed store writes (each retry counts)", registry=r)
        self.batch_seconds = Histogram("switchboard_archiver_batch_seconds",
                                       "Store write time of one batch", registry=r,
                                       buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10))
        self.history_seconds = Histogram("switchboard_archiver_history_seconds",
                                         "Time to answer one history query", registry=r,
                                         buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1))

    def render(self) -> bytes:
        """Prometheus text exposition of every archiver metric."""
        return generate_latest(self.registry)
