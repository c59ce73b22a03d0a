"""Lock-free metric primitives the services count with, exported at scrape time.

prometheus_client's ``Counter.inc`` and ``Histogram.observe`` take a lock on
every call (~5 % of the edge's CPU at 8k msgs/s when it counted frames that
way). On the hot paths the services count with plain ints instead (``x += 1``
on the event loop's thread) and a custom collector turns them into metric
families when Prometheus scrapes (``collect()`` runs on the HTTP server's
thread and only reads). This module holds the two helpers those collectors
share: :class:`IntHistogram` (a histogram of plain-int buckets) and
:func:`counter` / :func:`gauge` (one family from a value or a labelled dict).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

# Seconds: from a loopback round trip (~0.2 ms) to a JetStream write stuck
# behind a leader election (seconds); 14 buckets keep a series small.
LATENCY_BUCKETS = (.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1.0, 2.5, 5.0, 10.0)


class IntHistogram:
    """A histogram whose :meth:`observe` is a bisect and two additions (no lock).

    ``counts[i]`` holds observations ``<= bounds[i]`` (and above the bound
    before it); the last slot is ``+Inf``. Exported cumulatively by
    :meth:`family`.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Iterable[float] = LATENCY_BUCKETS) -> None:
        self.bounds = tuple(sorted(bounds))
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def buckets(self) -> list[tuple[str, int]]:
        """Cumulative ``(le, count)`` pairs, ``+Inf`` last."""
        out, total = [], 0
        for bound, n in zip((*map(_le, self.bounds), "+Inf"), self.counts):
            total += n
            out.append((bound, total))
        return out


def _le(bound: float) -> str:
    return repr(float(bound))


def histogram(name: str, doc: str, hists: IntHistogram | Mapping[tuple[str, ...], IntHistogram],
              labels: Iterable[str] = ()) -> HistogramMetricFamily:
    """One histogram family: a single :class:`IntHistogram`, or one per label values tuple."""
    fam = HistogramMetricFamily(name, doc, labels=list(labels))
    items = [((), hists)] if isinstance(hists, IntHistogram) else list(hists.items())
    for values, h in items:
        fam.add_metric(list(values), h.buckets(), h.sum)
    return fam


def counter(name: str, doc: str, value: int | float | Mapping[tuple[str, ...], int | float],
            labels: Iterable[str] = ()) -> CounterMetricFamily:
    """One counter family (``name`` without ``_total``): a value, or one per label values tuple."""
    fam = CounterMetricFamily(name, doc, labels=list(labels))
    for values, v in _items(value):
        fam.add_metric(list(values), v)
    return fam


def gauge(name: str, doc: str, value: int | float | Mapping[tuple[str, ...], int | float],
          labels: Iterable[str] = ()) -> GaugeMetricFamily:
    fam = GaugeMetricFamily(name, doc, labels=list(labels))
    for values, v in _items(value):
        fam.add_metric(list(values), v)
    return fam


def _items(value: int | float | Mapping[tuple[str, ...], int | float]) -> list[tuple[tuple[str, ...], int | float]]:
    if isinstance(value, Mapping):
        return list(value.items())  # a copy: the event loop may add a key while we read
    return [((), value)]
