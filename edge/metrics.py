"""Prometheus metrics of one edge (a registry per edge: no module-level state)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from switchboard.log import redact
from switchboard.metrics import IntHistogram, histogram

# The steps of an opening (upgrade -> synced), timed per connection:
# hello: the upgrade until the hello frame is read; subscribe: the user's
# subscriptions queued and the session registered (no round trip: the INBOX
# read that follows goes over the same NATS connection, after them); replay:
# INBOX bounds and the replay after the cursor; groups: the sequencer's
# large-groups answer.
OPENING_STEPS = ("hello", "subscribe", "replay", "groups")


class EdgeMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.connections = Gauge("switchboard_edge_connections", "Open WebSocket connections", registry=r)
        self.users = Gauge("switchboard_edge_users", "Users with at least one connection here", registry=r)
        self.accepted = Counter("switchboard_edge_connections_accepted", "Connections accepted", registry=r)
        self.rejected = Counter("switchboard_edge_connections_rejected", "Connections refused (auth, admission)",
                                ["reason"], registry=r)
        # Upgrades that waited in the lobby for a place among the openings
        # (edge/lobby.py); those that waited too long are also counted in
        # rejected{reason="opening"}.
        self.held = Counter("switchboard_edge_connections_held", "Upgrades that waited for a free opening",
                            registry=r)
        self.lobby = Gauge("switchboard_edge_lobby", "Upgrades waiting now for a free opening", registry=r)
        # Counted per frame on the hot path: a plain int (prometheus_client's
        # Counter takes a lock per inc, ~5 % of the edge's CPU at 8k msgs/s),
        # exported when scraped.
        self.frames_in = 0
        # Where a connection's opening spends its time (once per connection;
        # plain-int buckets, no lock): what an admit_max_opening or a storm
        # waits on (docs/operations.md, reconnect storms).
        self.opening_steps: dict[tuple[str, ...], IntHistogram] = {(step,): IntHistogram() for step in OPENING_STEPS}
        # Bus frames edge.hub refused (wrong subject for their type, a live
        # entry without Nats-Sequence), by subject kind: live, event, conv.
        self.bus_dropped: dict[str, int] = {"live": 0, "event": 0, "conv": 0}
        r.register(_HotCounters(self))
        self.slow_consumers = Counter("switchboard_edge_slow_consumers", "Sockets closed for not draining",
                                      registry=r)
        self.gaps = Counter("switchboard_edge_gaps", "Live gaps repaired from INBOX", registry=r)
        # The path tick (edge/pathtick.py): each break re-reads INBOX for every session.
        self.path_breaks = Counter("switchboard_edge_path_breaks",
                                   "Delivery path breaks seen by the path tick (every session re-read INBOX)",
                                   ["reason"], registry=r)
        for reason in ("tick_lost", "silent"):
            self.path_breaks.labels(reason)
        self.tokens_expired = Counter("switchboard_edge_tokens_expired",
                                      "Sockets closed (4001) because their token expired", registry=r)
        self.replaced = Counter("switchboard_edge_sockets_replaced",
                                "Oldest sockets closed (4010): the user opened more than max_sockets_per_user",
                                registry=r)
        # Set to a function of the transport at start (bytes held for backed-up sockets).
        self.held_bytes = Gauge("switchboard_edge_send_queue_bytes",
                                "Bytes held for sockets that do not read (bounded by edge_send_queue_bytes)",
                                registry=r)
        # Presence fan-out (docs/presence.md, "What presence costs"): plain
        # ints bumped by edge.hub once per presence event from the tracker
        # ("events") and by the number of the watcher's sockets here it went
        # to ("frames"); exported at scrape as *_total counters (rate() =
        # per second). No label per user: one series each.
        self.presence_fanout: dict[str, int] = {"events": 0, "frames": 0}
        # Set to functions of edge.features at start: watch entries (watcher,
        # watched user) of users connected here, and how many users watch.
        self.presence_watches = Gauge("switchboard_edge_presence_watches",
                                      "Presence watch entries (watcher, watched user) of users connected here",
                                      registry=r)
        self.presence_watchers = Gauge("switchboard_edge_presence_watchers",
                                       "Users connected here that watch the presence of at least one user",
                                       registry=r)

        self.extra: list[Collector] = []  # other components' metrics in the same process

    def render(self) -> bytes:
        page = generate_latest(self.registry) + b"".join(generate_latest(r) for r in self.extra)
        # No metric carries a URL or a secret today; should a label ever hold
        # one (an error text, a server address), its credentials stay masked
        # as in the logs. Once per scrape, ~0.1 ms for a page of this size.
        return redact(page.decode("utf-8", "replace")).encode()


class _HotCounters:
    """Exports the plain-int counters of :class:`EdgeMetrics` at scrape time."""

    def __init__(self, m: EdgeMetrics) -> None:
        self._m = m

    def collect(self) -> Iterator[Metric]:
        c = CounterMetricFamily("switchboard_edge_frames_in", "Frames received from clients")
        c.add_metric([], self._m.frames_in)
        yield c
        d = CounterMetricFamily("switchboard_edge_bus_frames_dropped",
                                "Frames from NATS not forwarded: type does not match the subject", labels=["subject"])
        for kind, n in self._m.bus_dropped.items():
            d.add_metric([kind], n)
        yield d
        p = self._m.presence_fanout
        e = CounterMetricFamily("switchboard_edge_presence_events",
                                "Presence changes received from the tracker for watchers connected here")
        e.add_metric([], p["events"])
        yield e
        f = CounterMetricFamily("switchboard_edge_presence_frames",
                                "Presence change frames handed to watchers' sockets (the fan-out)")
        f.add_metric([], p["frames"])
        yield f
        yield histogram("switchboard_edge_opening_seconds",
                        "Time of each step of a connection's opening (upgrade to synced), by step",
                        self._m.opening_steps, ["step"])
