"""Prometheus metrics of other processes, re-exported by this one.

``switchboard up`` runs its roles as separate processes, yet its edge's
``/metrics`` (and ``metrics_port``, if set) must still show every component,
as it did when they shared one process. Each non-edge child serves its own
registries on a loopback port; :class:`RemoteMetrics` fetches such a page when
it is collected and yields its metric families, so it can sit in the edge's
``metrics.extra`` list or in a ``CollectorRegistry`` like a local registry.

The fetch is synchronous (``collect()`` is): a scrape of a loopback page takes
about a millisecond and happens once per Prometheus scrape, so it does not
need a task of its own. A child that is restarting is skipped (its metrics
are missing from that one scrape), never an error.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Iterable, Iterator

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

# A scrape must not stall the edge's event loop for long when a child hangs;
# a loopback answer takes ~1 ms, so 0.5 s only ever hits a stuck child.
FETCH_TIMEOUT_SEC = 0.5


class RemoteMetrics:
    """A collector: the metric families served at ``url`` (text format)."""

    def __init__(self, url: str, *, timeout: float = FETCH_TIMEOUT_SEC) -> None:
        self.url = url
        self.timeout = timeout

    def collect(self) -> Iterator[Metric]:
        try:
            with urllib.request.urlopen(self.url, timeout=self.timeout) as resp:
                text = resp.read().decode("utf-8", "replace")
        except (OSError, urllib.error.URLError):
            return iter(())
        return text_string_to_metric_families(text)

    def __repr__(self) -> str:
        return f"RemoteMetrics({self.url!r})"


def remote_collectors(addrs: Iterable[str]) -> list[RemoteMetrics]:
    """``host:port`` or full URLs -> collectors of their ``/metrics`` pages."""
    out = []
    for a in addrs:
        a = a.strip()
        if a:
            out.append(RemoteMetrics(a if "://" in a else f"http://{a}/metrics"))
    return out
