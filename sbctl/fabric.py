"""Run roles in one process: the host side of switchboard/roles.py.

Roles come from the registry (sbctl/roles.py); this module gives each a
:class:`~switchboard.roles.RoleContext` (settings, the process's NATS
connection, the shared store, a logger, the data dir), starts them in
order, joins their metrics and stops them in reverse.

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
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import nats
import nats.errors
from nats.aio.client import Client as NATS
from structlog.typing import FilteringBoundLogger

from sbctl.embedded import EmbeddedNats
from sbctl.metrics import Merged, process_collector, remote_collectors, serve_metrics
from sbctl.roles import ALL_ROLES, make as make_role
from switchboard import log, tls
from switchboard.bus import streams
from switchboard.config import Settings, data_path
from switchboard.errors import Unavailable
from switchboard.log import redact_url
from switchboard.reach import QUIET_DRIVERS, error_logger, reach
from switchboard.roles import Role, RoleContext
from switchboard.store import Store, open_store

ErrorCallback = Callable[[Exception], Awaitable[None]]

__all__ = ["ALL_ROLES", "Fabric", "connect", "first_connect", "run", "streams_of"]


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
    store: Store | None = None  # opened when a role first asks for it (RoleContext.store)
    embedded: EmbeddedNats | None = None
    roles: dict[str, Role] = field(default_factory=dict)  # the started roles, in start order

    @property
    def components(self) -> dict[str, object]:
        """The services the roles built (``Edge``, ``PusherService``, ...), by role name."""
        return {name: getattr(role, "service", role) for name, role in self.roles.items()}

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


class _RoundFailed(Exception):
    """Every server of the list failed once: this attempt is over."""


async def _connect_once(settings: Settings, name: str, error_cb: ErrorCallback | None) -> NATS:
    """One attempt of :func:`first_connect`: each server of the list tried
    once (nats-py itself would retry a refused first connect forever, with a
    traceback per try), then the options of :func:`connect` for the life of
    the connection: reconnect forever once started."""
    servers = settings.nats_servers
    failed: list[BaseException] = []
    connected = False

    after_start = error_cb if error_cb is not None else error_logger(log.get("nats"))

    async def on_error(exc: Exception) -> None:
        if connected:  # after the start: the caller's callback, or one line per few seconds (reach.error_logger)
            await after_start(exc)
            return
        failed.append(exc)
        if len(failed) >= len(servers):
            raise _RoundFailed from exc  # out of nats-py's connect loop (it catches only its own errors)

    nc = NATS()
    try:
        await nc.connect(servers=servers, name=name, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                         pending_size=8 * 1024 * 1024, error_cb=on_error, **tls.nats_py_options(settings))
    except BaseException as exc:
        with contextlib.suppress(Exception):
            await nc.close()
        if isinstance(exc, _RoundFailed) and failed:
            raise failed[-1] from None
        raise
    connected = True
    try:
        tls.require_tls(nc, settings)  # nats_tls_*: never on in plain text
    except Exception:
        await nc.close()
        raise
    return nc


async def first_connect(settings: Settings, name: str, log: FilteringBoundLogger, *,
                        timeout_sec: float | None = None, error_cb: ErrorCallback | None = None) -> NATS:
    """The process's first NATS connection: retried with backoff and logged
    until ``timeout_sec`` (default ``nats_connect_timeout_sec``), then
    :class:`~switchboard.reach.Unreachable` (switchboard/reach.py).
    ``error_cb``: nats-py's error callback once connected (default: one
    line per few seconds, no traceback: switchboard.reach.error_logger)."""
    return await reach(lambda: _connect_once(settings, name, error_cb), what="NATS",
                       where=redact_url(settings.nats_url), log=log,
                       timeout_sec=settings.nats_connect_timeout_sec if timeout_sec is None else timeout_sec,
                       retry_on=(OSError, TimeoutError, nats.errors.Error))


async def _open_store(settings: Settings, log: FilteringBoundLogger) -> Store:
    """The message store, opened; an unreachable one (Cassandra) is waited
    for until ``store_connect_timeout_sec`` like NATS."""

    async def attempt() -> Store:
        store = open_store(settings.store_url)
        try:
            await store.open()
        except BaseException:
            with contextlib.suppress(Exception):
                await store.close()
            raise
        return store

    # The driver bounds each attempt itself (its connect timeout, the URL's
    # timeout option): a cancel cannot stop its thread, so no bound of ours.
    return await reach(attempt, what="the store", where=redact_url(settings.store_url),
                       timeout_sec=settings.store_connect_timeout_sec, retry_on=(Unavailable,), log=log,
                       attempt_sec=None, quiet=QUIET_DRIVERS)


@contextlib.asynccontextmanager
async def run(settings: Settings, roles: tuple[str, ...], *, embedded_nats: bool = False,
              nats_port: int = 0, create_streams: bool = True, metrics_host: str | None = None,
              metrics_peers: tuple[str, ...] = ()) -> AsyncIterator[Fabric]:
    """Start ``roles`` (names in sbctl/roles.py; and an embedded nats-server
    if asked), in the order given; stop all on exit, in reverse.

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
    made = [make_role(r) for r in roles]  # an unknown name fails before anything starts
    embedded = None
    if embedded_nats:
        embedded = EmbeddedNats(store_dir=str(data_path(settings, "nats", "x").parent), port=nats_port,
                                host="127.0.0.1", sync_interval=settings.sync_interval)
        await asyncio.get_running_loop().run_in_executor(None, embedded.start)
        settings = settings.replace(nats_url=embedded.url)
        logger.info("embedded nats-server started", url=embedded.url, monitor=embedded.monitor_url)
    stack = contextlib.AsyncExitStack()
    try:
        if embedded is not None:
            stack.push_async_callback(embedded.astop)
        nc = await first_connect(settings, "switchboard-" + "+".join(roles), logger)
        stack.push_async_callback(_close_nats, nc)
        if create_streams:
            from sbctl.init import init_fabric

            await init_fabric(nc, settings)
        else:
            await streams.require_streams(nc.jetstream(), streams_of(settings, roles))
        fab = Fabric(settings=settings, nc=nc, embedded=embedded)

        async def shared_store() -> Store:
            if fab.store is None:
                store = await _open_store(settings, logger)
                stack.push_async_callback(store.close)  # after the roles that use it stopped
                fab.store = store
            return fab.store

        async def new_connection(name: str) -> NATS:
            return await connect(settings, name=name)

        for role in made:
            ctx = RoleContext(settings=settings, nc=nc, connect=new_connection, store=shared_store,
                              log=log.get(role.name), data_dir=Path(settings.data_dir))
            await role.start(ctx)
            fab.roles[role.name] = role
            stack.push_async_callback(role.stop)
        proc = process_collector(fab.roles)  # CPU, memory, fds of this process; switchboard_process_info
        rpc_stats = _rpc_collector(fab)  # switchboard_rpc_*: the roles' request/reply endpoints
        if settings.metrics_port:  # every role of this process and the process, on one page
            server = serve_metrics(settings.metrics_port, metrics_host or settings.host,
                                   [*_registries(fab), *rpc_stats, proc])
            stack.push_async_callback(server.close)
        edge = fab.roles.get("edge")
        if edge is not None:  # the edge's /metrics shows every role of this process and the peers
            from edge.role import EdgeRole

            assert isinstance(edge, EdgeRole)
            others = [c for r in fab.roles.values() if r is not edge and (c := r.metrics()) is not None]
            # one merged collector: the peers' pages may hold families this process has too (switchboard_rpc_*)
            edge.also_export([Merged([*others, *rpc_stats, proc, *remote_collectors(metrics_peers)])])
        logger.info("fabric up", roles=list(fab.roles), nats=settings.nats_url)
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
        except (TimeoutError, OSError, nats.errors.Error):  # OSError: the socket is already gone
            pass
    try:
        await asyncio.wait_for(nc.close(), DRAIN_TIMEOUT_SEC)
    except (TimeoutError, OSError, RuntimeError, nats.errors.Error):
        # OSError: the socket is already gone; RuntimeError: nats-py writes
        # what it buffered while reconnecting into its closed transport (uvloop
        # refuses: "the handler is closed"). Nothing more to close either way.
        pass


def _registries(fab: Fabric) -> list:
    """Every role's metrics collector (roles without metrics have none)."""
    return [c for role in fab.roles.values() if (c := role.metrics()) is not None]


def _rpc_collector(fab: Fabric) -> list:
    """One :class:`~switchboard.rpc.RpcCollector` of the request/reply
    services (``service.rpc``) of this process's roles, if any has one."""
    from switchboard.rpc import RpcCollector, RpcService

    services = [svc for role in fab.roles.values()
                if isinstance(svc := getattr(getattr(role, "service", None), "rpc", None), RpcService)]
    return [RpcCollector(*services)] if services else []
