"""One Cassandra session for asyncio code: the URL, the connection, the schema
and the bridge from the driver's threads to the event loop.

URL: ``cassandra://host1[:port],host2[:port]/keyspace?option=value&...``
(options in :data:`OPTIONS`; unknown ones are rejected).

The driver is threaded; every request is sent with ``execute_async`` and its
``ResponseFuture`` callbacks complete an asyncio future through
``loop.call_soon_threadsafe``, so the event loop never blocks. The driver's
I/O reactor is libev when built, else asyncore/asyncio (:func:`connection_class`).
Driver errors that mean "the cluster is not answering" become
:class:`StoreUnavailable`. Used by switchboard/store/cassandra.py (the
archive) and switchboard/devices/cassandra.py (device tokens).
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qsl, unquote, urlsplit

from switchboard.errors import ConfigError, Unavailable

DEFAULT_PORT = 9042
# DDL waits for schema agreement across the cluster: slower than a query.
DDL_TIMEOUT = 60.0

CONSISTENCY_LEVELS = ("ONE", "TWO", "THREE", "QUORUM", "LOCAL_QUORUM", "EACH_QUORUM", "ALL", "LOCAL_ONE")
SERIAL_LEVELS = ("SERIAL", "LOCAL_SERIAL")

# Query options of the URL (also accepted as keyword arguments of parse_url).
OPTIONS = {
    "consistency": "read/write consistency level (default LOCAL_QUORUM; ONE for a single test node)",
    "serial_consistency": "level of the create_conversation lightweight transaction (default LOCAL_SERIAL)",
    "replication": "keyspace replication if it must be created: N (NetworkTopologyStrategy with "
                   "replication_factor N in every DC, default 3), or dc1:3,dc2:3 per DC",
    "local_dc": "the client's datacenter for DC-aware routing (default: the driver's guess)",
    "timeout": "per-request timeout in seconds (default 10)",
    "concurrency": "max in-flight requests of one append_messages call (default 64)",
}


class StoreUnavailable(Unavailable):
    """The Cassandra cluster did not answer; try again later."""

    code = "store_unavailable"


@dataclass(frozen=True, kw_only=True)
class CassandraOptions:
    hosts: tuple[tuple[str, int], ...]
    keyspace: str
    consistency: str = "LOCAL_QUORUM"
    serial_consistency: str = "LOCAL_SERIAL"
    replication: str = "3"
    local_dc: str | None = None
    # Generous for a loaded node; a timeout surfaces as StoreUnavailable and the
    # archiver retries with backoff.
    timeout: float = 10.0
    # Enough to keep a node's request threads busy from one client; the driver
    # allows thousands of streams per connection.
    concurrency: int = 64

    def replication_map(self) -> dict[str, Any]:
        rep = self.replication.strip()
        if rep.isdigit():
            return {"class": "NetworkTopologyStrategy", "replication_factor": int(rep)}
        out: dict[str, Any] = {"class": "NetworkTopologyStrategy"}
        for part in rep.split(","):
            dc, sep, n = part.partition(":")
            if not sep or not dc.strip() or not n.strip().isdigit():
                raise ConfigError(f"replication {self.replication!r}: use N or dc1:N,dc2:M")
            out[dc.strip()] = int(n)
        return out


def parse_url(url: str, **overrides: Any) -> CassandraOptions:
    """``cassandra://h1[:p],h2[:p]/keyspace?opts`` -> options (raises ConfigError)."""
    parts = urlsplit(url)
    if parts.scheme != "cassandra":
        raise ConfigError(f"not a cassandra:// URL: {url!r}")
    hosts = []
    for item in unquote(parts.netloc).split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep:
            host, port = item.strip(), ""
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]  # [::1]:9042, as in any URL
        if not host:
            raise ConfigError(f"{url!r}: empty host")
        if port and not port.isdigit():
            raise ConfigError(f"{url!r}: bad port {port!r}")
        hosts.append((host, int(port) if port else DEFAULT_PORT))
    keyspace = parts.path.strip("/")
    if not keyspace or not keyspace.replace("_", "a").isalnum() or not keyspace[0].isalpha() or len(keyspace) > 48:
        raise ConfigError(f"{url!r}: keyspace must be a letter then up to 47 letters, digits or _")
    opts: dict[str, Any] = {}
    for key, value in [*parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False), *overrides.items()]:
        if key not in OPTIONS:
            raise ConfigError(f"unknown cassandra option {key!r}; known: {', '.join(OPTIONS)}")
        opts[key] = value
    if "consistency" in opts:
        opts["consistency"] = str(opts["consistency"]).upper()
        if opts["consistency"] not in CONSISTENCY_LEVELS:
            raise ConfigError(f"consistency {opts['consistency']!r}; use one of {CONSISTENCY_LEVELS}")
    if "serial_consistency" in opts:
        opts["serial_consistency"] = str(opts["serial_consistency"]).upper()
        if opts["serial_consistency"] not in SERIAL_LEVELS:
            raise ConfigError(f"serial_consistency {opts['serial_consistency']!r}; use one of {SERIAL_LEVELS}")
    try:
        if "timeout" in opts:
            opts["timeout"] = float(opts["timeout"])
            if opts["timeout"] <= 0:
                raise ValueError
        if "concurrency" in opts:
            opts["concurrency"] = int(opts["concurrency"])
            if opts["concurrency"] < 1:
                raise ValueError
    except ValueError:
        raise ConfigError(f"{url!r}: timeout must be > 0 seconds and concurrency an integer >= 1") from None
    if "replication" in opts:
        opts["replication"] = str(opts["replication"])
    options = CassandraOptions(hosts=tuple(hosts), keyspace=keyspace, **opts)
    options.replication_map()  # validate now, not at open()
    return options


def connection_class() -> type:
    """The driver's I/O reactor: libev when its extension is built (fastest),
    else asyncore (Python <= 3.11), else asyncio. Measured on the test node:
    libev and asyncore ~4x the throughput of the asyncio reactor, which
    schedules a coroutine per request on its own loop thread."""
    try:
        from cassandra.io.libevreactor import LibevConnection

        return cast(type, LibevConnection)  # cassandra-driver ships no types
    except Exception:  # ImportError / DependencyException: extension or libev missing
        pass
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # asyncore is deprecated since 3.6
            from cassandra.io.asyncorereactor import AsyncoreConnection
        return cast(type, AsyncoreConnection)
    except Exception:  # Python 3.12+: no asyncore
        from cassandra.io.asyncioreactor import AsyncioConnection

        return cast(type, AsyncioConnection)


def keyspace_ddl(o: CassandraOptions) -> str:
    rep = ", ".join(f"'{k}': {v!r}" if isinstance(v, str) else f"'{k}': {v}" for k, v in o.replication_map().items())
    return f"CREATE KEYSPACE IF NOT EXISTS {o.keyspace} WITH replication = {{{rep}}}"


class CqlSession:
    """One cluster connection and session; :meth:`open` also creates the
    keyspace, the caller's tables and prepares its statements."""

    def __init__(self, options: CassandraOptions) -> None:
        self.options = options
        self._cluster: Any = None
        self._session: Any = None

    @property
    def keyspace(self) -> str:
        return self.options.keyspace

    @property
    def session(self) -> Any:
        """The driver's Session (None until open): for benchmarks that drive it bare."""
        return self._session

    @property
    def is_open(self) -> bool:
        return self._session is not None

    async def open(self, *, tables: Sequence[str], statements: Mapping[str, str],
                   not_idempotent: Collection[str] = ()) -> dict[str, Any]:
        """Connect; create the keyspace (if missing) and ``tables`` (DDL with
        ``IF NOT EXISTS``); prepare ``statements``; return them prepared, by
        name. Every statement is marked idempotent (safe for the driver to
        retry) except those named in ``not_idempotent``. Blocking work runs
        in a worker thread. Raises StoreUnavailable if no host answers; on any
        failure the connection is shut down."""
        if self._session is not None:
            raise RuntimeError(f"cassandra session {self.keyspace} is already open")
        return await asyncio.get_running_loop().run_in_executor(
            None, self._connect, tuple(tables), dict(statements), frozenset(not_idempotent))

    def _connect(self, tables: tuple[str, ...], statements: dict[str, str],
                 not_idempotent: frozenset[str]) -> dict[str, Any]:  # blocking: runs in a worker thread
        from cassandra import ConsistencyLevel, ProtocolVersion
        from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable
        from cassandra.policies import DCAwareRoundRobinPolicy, ExponentialReconnectionPolicy, TokenAwarePolicy

        o = self.options
        profile = ExecutionProfile(
            load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=o.local_dc)),
            consistency_level=getattr(ConsistencyLevel, o.consistency),
            serial_consistency_level=getattr(ConsistencyLevel, o.serial_consistency),
            request_timeout=o.timeout,
        )
        # Protocol v5: Cassandra 4.0 and newer. Fixed, so the driver does not
        # probe newer versions and log a downgrade warning on every connect.
        cluster = Cluster(list(o.hosts), connection_class=connection_class(), protocol_version=ProtocolVersion.V5,
                          execution_profiles={EXEC_PROFILE_DEFAULT: profile},
                          connect_timeout=o.timeout, control_connection_timeout=o.timeout,
                          # The driver's default backs off to 10 min: after an outage the
                          # archiver would stay paused that long. Retry a down node every
                          # 0.5 s doubling to 10 s instead.
                          reconnection_policy=ExponentialReconnectionPolicy(0.5, 10.0))
        try:
            session = cluster.connect()
            for stmt in (keyspace_ddl(o), *tables):
                # DDL waits for schema agreement, so later statements see the tables.
                session.execute(stmt, timeout=max(o.timeout, DDL_TIMEOUT))
            prepared = {name: session.prepare(cql) for name, cql in statements.items()}
            for name, stmt in prepared.items():
                stmt.is_idempotent = name not in not_idempotent
        except NoHostAvailable as exc:
            cluster.shutdown()
            raise StoreUnavailable(f"cassandra {o.hosts}: {exc}") from exc
        except BaseException:
            cluster.shutdown()
            raise
        self._cluster, self._session = cluster, session
        return prepared

    async def close(self) -> None:
        cluster, self._cluster, self._session = self._cluster, None, None
        if cluster is not None:
            await asyncio.get_running_loop().run_in_executor(None, cluster.shutdown)

    # -- the bridge ---------------------------------------------------------
    async def execute(self, stmt: Any, params: Any = None, *, all_pages: bool = False) -> list[Any]:
        """Run one statement without blocking the loop; return its rows
        (the first page, or every page with ``all_pages``)."""
        if self._session is None:
            raise StoreUnavailable("store not open")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[Any]] = loop.create_future()
        rows: list[Any] = []
        rf = self._session.execute_async(stmt, params)

        def done(result: Any) -> None:
            if not fut.done():
                fut.set_result(result)

        def fail(exc: BaseException) -> None:
            if not fut.done():
                fut.set_exception(translate(exc))

        def on_rows(page: Any) -> None:  # driver thread
            rows.extend(page or ())
            if all_pages and rf.has_more_pages:
                rf.start_fetching_next_page()  # calls on_rows again
            else:
                loop.call_soon_threadsafe(done, rows)

        rf.add_callbacks(on_rows, lambda exc: loop.call_soon_threadsafe(fail, exc))
        return await fut

    async def execute_many(self, items: Sequence[tuple[Any, Any]]) -> None:
        """Run (statement, params) pairs concurrently, at most ``concurrency`` in flight.

        The driver's own execute_concurrent keeps the window full from its I/O
        thread callbacks; it blocks, so it runs in a worker thread (the loop
        only awaits one future per call instead of one per statement).
        """
        from cassandra.concurrent import execute_concurrent

        if self._session is None:
            raise StoreUnavailable("store not open")
        session, n = self._session, self.options.concurrency
        try:
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: execute_concurrent(session, items, concurrency=n, raise_on_first_error=True))
        except Exception as exc:
            err = translate(exc)
            if err is exc:
                raise
            raise err from exc


def translate(exc: BaseException) -> BaseException:
    """Driver errors that mean "the cluster is not answering" -> StoreUnavailable."""
    from cassandra import OperationTimedOut, ReadTimeout, Unavailable as CUnavailable, WriteTimeout
    from cassandra.cluster import NoHostAvailable

    if isinstance(exc, (NoHostAvailable, OperationTimedOut, ReadTimeout, WriteTimeout, CUnavailable)):
        err = StoreUnavailable(f"cassandra: {type(exc).__name__}: {exc}")
        err.__cause__ = exc
        return err
    return exc
