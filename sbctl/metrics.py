"""Prometheus pages of a role process: its roles, its process, other processes.

- :func:`process_collector`: what every role process adds to its roles'
  metrics: CPU, memory, open fds (``process_*``), the interpreter and its GC
  (``python_*``), and ``switchboard_process_info{roles=...}`` naming the roles
  it runs (dashboards join on it to show CPU and RSS per role).
- :func:`serve_metrics`: the ``metrics_port`` listener of a role process.
- :class:`RemoteMetrics`: another process's page, re-exported by this one.

``switchboard up`` runs its roles as separate processes, yet its edge's
``/metrics`` (and ``metrics_port``, if set) must still show every component,
as it did when they shared one process. Each non-edge child serves its own
registries on a loopback port; :class:`RemoteMetrics` fetches such a page when
it is collected and yields its metric families, so it can sit in the edge's
``metrics.extra`` list or in a ``CollectorRegistry`` like a local registry.

The fetch is synchronous (``collect()`` is): a scrape of a loopback page takes
about a millisecond and happens once per Prometheus scrape, so it does not
need a task of its own. A child that is restarting is skipped (its metrics
are missing from that one scrape), never an error. A re-exported page leaves
out the other process's per-process families (:data:`PER_PROCESS`): two
``process_cpu_seconds_total`` on one page would be one series twice, which
Prometheus rejects; scrape each process's own ``metrics_port`` for those.
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator

from prometheus_client import (
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry

import switchboard
from switchboard.errors import ConfigError

# A scrape must not stall the edge's event loop for long when a child hangs;
# a loopback answer takes ~1 ms, so 0.5 s only ever hits a stuck child.
FETCH_TIMEOUT_SEC = 0.5
# prometheus_client's *_created series (a gauge per counter and histogram
# with its creation time) double the page and no query here uses them.
disable_created_metrics()
# Families that describe one process, not a role: shown once per page, by
# the process they describe.
PER_PROCESS = ("process_", "python_", "switchboard_process_")


def process_collector(roles: Iterable[str]) -> CollectorRegistry:
    """This process's metrics: ``process_*`` (CPU seconds, resident and
    virtual memory, open and max fds, start time; from /proc), ``python_*``
    (version, GC) and ``switchboard_process_info{roles, version} 1``."""
    reg = CollectorRegistry()
    ProcessCollector(registry=reg)
    PlatformCollector(registry=reg)
    GCCollector(registry=reg)
    reg.register(_ProcessInfo("+".join(roles)))
    return reg


class _ProcessInfo:
    def __init__(self, roles: str) -> None:
        self._roles = roles

    def collect(self) -> Iterator[Metric]:
        g = GaugeMetricFamily("switchboard_process_info", "The roles this process runs (always 1): join on it "
                              "to label process_* series by role", labels=["roles", "version"])
        g.add_metric([self._roles, switchboard.__version__], 1)
        yield g


class Merged:
    """One collector yielding the metric families of several, a family that
    more than one yields (``switchboard_rpc_*`` of two processes on the
    edge's page) once with all their samples: a name declared twice on a
    page is a scrape Prometheus rejects."""

    def __init__(self, collectors: list[Collector]) -> None:
        self._collectors = collectors

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for c in self._collectors:
            for fam in c.collect():
                have = merged.get(fam.name)
                if have is None:
                    merged[fam.name] = fam
                elif have.type == fam.type:
                    both = Metric(have.name, have.documentation, have.type, have.unit)
                    both.samples = [*have.samples, *fam.samples]
                    merged[fam.name] = both
        return iter(merged.values())


class MetricsServer:
    """A ``/metrics`` listener (prometheus_client's HTTP server thread)."""

    def __init__(self, server) -> None:
        self._server = server
        self.port: int = server.server_address[1]

    async def close(self) -> None:
        """Stop serving and free the port (the thread's poll ends within 0.5 s, off the loop)."""
        await asyncio.to_thread(self._server.shutdown)
        self._server.server_close()


def serve_metrics(port: int, host: str, collectors: list[Collector]) -> MetricsServer:
    """Serve ``collectors`` as one ``/metrics`` page on ``host:port`` (a
    thread of prometheus_client's; the scrape runs there). A port in use is a
    :class:`ConfigError` naming it (one line, no traceback)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(Merged(collectors))
    try:
        server, _thread = start_http_server(port, addr=host, registry=reg)
    except OSError as exc:
        raise ConfigError(f"metrics_port {port} on {host}: {exc.strerror or exc}") from None
    return MetricsServer(server)


class RemoteMetrics:
    """A collector: the metric families served at ``url`` (text format);
    without its :data:`PER_PROCESS` families unless ``per_process``."""

    def __init__(self, url: str, *, timeout: float = FETCH_TIMEOUT_SEC, per_process: bool = False) -> None:
        self.url = url
        self.timeout = timeout
        self.per_process = per_process

    def collect(self) -> Iterator[Metric]:
        try:
            with urllib.request.urlopen(self.url, timeout=self.timeout) as resp:
                text = resp.read().decode("utf-8", "replace")
        except (OSError, urllib.error.URLError):
            return iter(())
        families = text_string_to_metric_families(text)
        if self.per_process:
            return families
        return (f for f in families if not f.name.startswith(PER_PROCESS))

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
