"""Per-endpoint counters of the request/reply layer, and their two readers.

Counted by :class:`switchboard.rpc.server.RpcService` once per request, from
its arrival to its answer (the real work, not a hand-off): plain ints and
floats, no lock (one event loop). Read by:

- ``nats micro stats`` (``$SRV.STATS``): :class:`MicroService` answers from
  these counters instead of nats-py's own, which time only the callback
  that hands the request to a task and never see an error answered by hand;
- Prometheus: :class:`RpcCollector`.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import TYPE_CHECKING

from nats.aio.client import Client as NATS
from nats.micro.service import Service, ServiceConfig, ServiceStats
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

# Imported for its check: MicroService relies on micro's STATS dispatch
# calling stats() (switchboard/compat/natspy.py BORROWED).
from switchboard.compat import natspy  # noqa: F401

if TYPE_CHECKING:
    from switchboard.rpc.server import RpcService

# Upper bounds (seconds) of switchboard_rpc_seconds: a presence query takes
# ~0.2 ms, a conv.list of a user in 500 conversations tens of ms, anything
# near the callers' 5 s timeout is an outage.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class EndpointCounts:
    """One endpoint's counters since its service was made."""

    __slots__ = ("requests", "errors", "by_code", "ns", "seconds", "buckets", "last_error")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.by_code: dict[str, int] = {}
        self.ns = 0  # total processing time, as micro reports it
        self.seconds = 0.0
        self.buckets = [0] * (len(BUCKETS) + 1)  # per bucket (not cumulative); the last is +Inf
        self.last_error = ""

    def observe(self, ns: int, code: str | None = None, message: str = "") -> None:
        self.requests += 1
        self.ns += ns
        seconds = ns / 1e9
        self.seconds += seconds
        self.buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
        if code is not None:
            self.errors += 1
            self.by_code[code] = self.by_code.get(code, 0) + 1
            self.last_error = f"{code}: {message}"


class MicroService(Service):
    """nats-py's micro service whose ``$SRV.STATS`` answer carries the
    layer's counters (``counts``: endpoint name -> counts). It overrides
    the public ``stats()`` method; that the private STATS handler answers
    with it is checked at import (switchboard/compat/natspy.py) and
    tests/unit/test_rpc.py reads ``$SRV.STATS`` to hold nats-py to it."""

    def __init__(self, client: NATS, config: ServiceConfig, counts: dict[str, EndpointCounts]) -> None:
        super().__init__(client, config)
        self._sb_counts = counts

    def stats(self) -> ServiceStats:
        st = super().stats()
        for e in st.endpoints:
            c = self._sb_counts.get(e.name)
            if c is not None:
                e.num_requests, e.num_errors, e.processing_time = c.requests, c.errors, c.ns
                e.average_processing_time = c.ns // c.requests if c.requests else 0
                e.last_error = c.last_error or None
        return st


class RpcCollector:
    """A ``prometheus_client`` collector of the endpoints of one or more
    :class:`~switchboard.rpc.server.RpcService` (register it in a role's
    registry: ``registry.register(RpcCollector(svc))``):

    - ``switchboard_rpc_requests_total{service,endpoint}``
    - ``switchboard_rpc_errors_total{service,endpoint,code}``
    - ``switchboard_rpc_seconds{service,endpoint}``: histogram of the time
      from a request's arrival to its answer (:data:`BUCKETS`)."""

    def __init__(self, *services: RpcService) -> None:
        self._services = list(services)

    def add(self, service: RpcService) -> None:
        self._services.append(service)

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("switchboard_rpc_requests", "Requests answered by a service endpoint",
                                       labels=["service", "endpoint"])
        errors = CounterMetricFamily("switchboard_rpc_errors", "Requests answered with an error, by code",
                                     labels=["service", "endpoint", "code"])
        seconds = HistogramMetricFamily("switchboard_rpc_seconds", "Time from a request's arrival to its answer",
                                        labels=["service", "endpoint"])
        for svc in self._services:
            for name, c in list(svc.counts.items()):
                labels = [svc.name, name]
                requests.add_metric(labels, c.requests)
                for code, n in list(c.by_code.items()):
                    errors.add_metric([*labels, code], n)
                cumulative, buckets = 0, []
                for bound, n in zip((*(f"{b:g}" for b in BUCKETS), "+Inf"), c.buckets):
                    cumulative += n
                    buckets.append((bound, cumulative))
                seconds.add_metric(labels, buckets, c.seconds)
        yield requests
        yield errors
        yield seconds
