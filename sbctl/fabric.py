"""Wire services into one process: the only place that imports them all.

``roles`` picks what runs here: ``switchboard edge`` / ``sequencer`` / ...
run one role each against an existing NATS, so each scales on its own;
``switchboard run archiver+presence+pusher`` runs several in one process;
``switchboard up --layout single`` (and the tests, in-process) runs every
role in one process. ``switchboard up`` by default runs each process group of
its layout as a child process of its own (sbctl/supervisor.py),
each child being one ``run`` of this module.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import AsyncIterator

import nats
import nats.errors
from nats.aio.client import Client as NATS

from switchboard import log, tls
from switchboard.bus import streams
from sbctl.embedded import EmbeddedNats
from sbctl.metrics import remote_collectors
from switchboard.config import Settings, data_path
from switchboard.store import Store, open_store

ALL_ROLES = ("sequencer", "edge", "archiver", "presence", "pusher")


def streams_of(settings: Settings, roles: tuple[str, ...]) -> list[str]:
    """The streams these roles use: what a role process checks at start
    (no role creates them: sbctl/init.py, the admin step, does).
    Consumers and the lease bucket are checked by the roles themselves."""
    messages, inbox, push = streams.names(settings)
    trace = streams.trace_name(settings)  # every role that records trace hops
    need = {"sequencer": (messages, inbox, push, trace), "edge": (inbox, trace), "archiver": (messages, trace),
            "pusher": (push, trace)}
    return list(dict.fromkeys(name for role in roles for name in need.get(role, ())))


@dataclass
class Fabric:
    settings: Settings
    nc: NATS
    store: Store | None = None
    embedded: EmbeddedNats | None = None
    components: dict[str, object] = field(default_factory=dict)

    @property
    def edge(self):
        return self.components.get("edge")


async def connect(settings: Settings, name: str) -> NATS:
    # A comma list names several servers of a cluster (seeds).
    servers = [u.strip() for u in settings.nats_url.split(",") if u.strip()]
    nc = await nats.connect(servers=servers, name=name, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                            pending_size=8 * 1024 * 1024, **tls.nats_py_options(settings))
    try:
        tls.require_tls(nc, settings)  # nats_tls_*: never on in plain text
    except Exception:
        await nc.close()
        raise
    return nc


@contextlib.asynccontextmanager
async def run(settings: Settings, roles: tuple[str, ...], *, embedded_nats: bool = False,
              nats_port: int = 0, create_streams: bool = True, metrics_host: str | None = None,
              metrics_peers: tuple[str, ...] = ()) -> AsyncIterator[Fabric]:
    """Start ``roles`` (and an embedded nats-server if asked); stop all on exit.

    ``create_streams=True`` (in-process fabrics: tests, ``up --layout
    single``): run the admin step (:func:`sbctl.init.init_fabric`:
    streams, consumers, KV) with this connection before the roles start.
    ``False`` (role processes: ``switchboard edge`` ..., the children of
    ``up``): only check that the streams exist; the roles check their
    consumers and bucket; anything missing stops the process with one line
    naming ``switchboard init``. ``metrics_host``: address of the
    ``metrics_port`` listener (default ``settings.host``). ``metrics_peers``:
    ``host:port`` of other processes' metrics pages that the edge's
    ``/metrics`` re-exports (the children of ``switchboard up``).
    """
    logger = log.get("fabric")
    embedded = None
    if embedded_nats:
        embedded = EmbeddedNats(store_dir=str(data_path(settings, "nats", "x").parent), port=nats_port,
                                host="127.0.0.1")
        await asyncio.get_running_loop().run_in_executor(None, embedded.start)
        settings = settings.replace(nats_url=embedded.url)
        logger.info("embedded nats-server started", url=embedded.url, monitor=embedded.monitor_url)
    stack = contextlib.AsyncExitStack()
    try:
        if embedded is not None:
            stack.push_async_callback(embedded.astop)
        nc = await connect(settings, name="switchboard-" + "+".join(roles))
        stack.push_async_callback(_close_nats, nc)
        if create_streams:
            from sbctl.init import init_fabric

            await init_fabric(nc, settings)
        else:
            await streams.require_streams(nc.jetstream(), streams_of(settings, roles))
        fab = Fabric(settings=settings, nc=nc, embedded=embedded)
        if {"sequencer", "archiver"} & set(roles):
            fab.store = open_store(settings.store_url)
            await fab.store.open()
            stack.push_async_callback(fab.store.close)
        for role in roles:
            comp = await _start_role(role, fab)
            if comp is not None:
                fab.components[role] = comp
                stack.push_async_callback(comp.stop)
        if settings.metrics_port:
            _serve_metrics(fab, metrics_host or settings.host)
        if fab.edge is not None:  # the edge's /metrics shows every component of this process and the peers
            fab.edge.metrics.extra = [r for r in _registries(fab) if r is not fab.edge.metrics.registry]
            fab.edge.metrics.extra += remote_collectors(metrics_peers)
        logger.info("fabric up", roles=list(fab.components), nats=settings.nats_url)
        yield fab
    finally:
        await stack.aclose()
        logger.info("fabric stopped")


# Draining (unsubscribe, deliver what is buffered, flush) takes milliseconds
# against a live server; past this the server is slow or gone and closing is
# all that is left to do.
DRAIN_TIMEOUT_SEC = 5.0


async def _close_nats(nc: NATS) -> None:
    """Drain if connected, else close: a stop while NATS is down (e.g. `up`
    stopped or killed together with its nats-server) must not raise or hang."""
    if nc.is_closed:
        return
    if nc.is_connected:
        try:
            await asyncio.wait_for(nc.drain(), DRAIN_TIMEOUT_SEC)
            return
        except (asyncio.TimeoutError, nats.errors.Error):
            pass
    try:
        await asyncio.wait_for(nc.close(), DRAIN_TIMEOUT_SEC)
    except (asyncio.TimeoutError, nats.errors.Error):
        pass


async def _start_role(role: str, fab: Fabric):
    s, nc = fab.settings, fab.nc
    if role == "sequencer":
        from sequencer.service import Sequencer

        comp = Sequencer(settings=s, nc=nc, store=fab.store)
    elif role == "edge":
        from edge import Edge

        comp = Edge(settings=s, nc=nc)
    elif role == "archiver":
        try:
            from archiver import Archiver
        except ImportError:
            return None
        comp = Archiver(settings=s, nc=nc, store=fab.store)
    elif role == "presence":
        from switchboard.presence import open_presence
        from presence.tracker import PresenceTracker, TrackerConfig

        backend = open_presence(s.presence_url)
        await backend.open()
        comp = _WithClose(PresenceTracker(nc=nc, backend=backend, subjects=s.subjects,
                                          config=TrackerConfig(sweep_sec=s.presence_sweep_sec,
                                                               max_watches_per_user=s.presence_max_watches_per_user)),
                           backend.close)
    elif role == "pusher":
        from pusher.config import PushConfig
        from pusher.lookups import SequencerLookups
        from pusher.service import PusherService
        from switchboard.devices import open_device_store

        config = PushConfig.load(s.push_config)
        devices = None
        if not s.push_config:  # no config file: keep device tokens in the data dir
            devices = open_device_store(f"sqlite:///{data_path(s, 'devices.db')}")
        lookups = SequencerLookups(nc=nc, subjects=s.subjects)
        comp = PusherService(settings=s, config=config, devices=devices, read_upto=lookups.read_upto,
                             unread_count=lookups.unread_count)
    else:
        raise ValueError(f"unknown role {role!r}; choose from {ALL_ROLES}")
    await comp.start()
    return comp


def _serve_metrics(fab: Fabric, host: str) -> None:
    """Prometheus metrics of every component that has them, on metrics_port."""
    from prometheus_client import start_http_server
    from prometheus_client.registry import CollectorRegistry

    combined = CollectorRegistry()
    combined.register(_Union(_registries(fab)))
    start_http_server(fab.settings.metrics_port, addr=host, registry=combined)


def _registries(fab: Fabric) -> list:
    out = []
    for comp in fab.components.values():
        holder = getattr(comp, "metrics_", None) or getattr(comp, "metrics", None)
        registry = getattr(holder, "registry", None)
        if registry is not None:
            out.append(registry)
    return out


class _Union:
    """One collector yielding the metrics of several registries."""

    def __init__(self, registries: list) -> None:
        self._registries = registries

    def collect(self):
        for r in self._registries:
            yield from r.collect()


class _WithClose:
    """A component plus what to close after it stops (its backend)."""

    def __init__(self, comp, close) -> None:
        self._comp = comp
        self._close = close
        self.metrics = getattr(comp, "metrics", None)  # its registry joins /metrics (_registries)

    async def start(self) -> None:
        await self._comp.start()

    async def stop(self) -> None:
        try:
            await self._comp.stop()
        finally:
            await self._close()
