"""Cassandra store: the production archive (docs/storage.md has the design).

URL: ``cassandra://host1[:port],host2[:port]/keyspace?option=value&...``
(options in :data:`OPTIONS`; unknown ones are rejected).

Schema, modelled for the read pattern (one history page = 1-2 partitions):

- ``messages``: partition ``(conv, bucket)`` with ``bucket = seq // BUCKET_SIZE``,
  clustered by ``seq DESC``. No partition grows without bound (at most
  BUCKET_SIZE rows), and a page of ``limit <= BUCKET_SIZE`` messages touches one
  partition, or two when it crosses a boundary.
- ``conv_index``: per conversation, one row per non-empty bucket (so a page
  jumps straight to the next bucket, even across gaps in seq) and a static
  ``last_seq`` cell. Rows are written ``USING TIMESTAMP <max seq written>``:
  Cassandra keeps the cell with the highest write timestamp, so ``last_seq``
  converges to max(seq) without read-before-write or Paxos.
- ``conversations`` (by id, with the member set, created with a lightweight
  transaction ``IF NOT EXISTS``), ``members`` (by conversation) and
  ``conversations_by_user`` (by user), the last two derived from the first.

The driver is threaded; every request is sent with ``execute_async`` and its
``ResponseFuture`` callbacks complete an asyncio future through
``loop.call_soon_threadsafe``, so the event loop never blocks. The driver's
I/O reactor is libev when built, else asyncore/asyncio (:func:`connection_class`).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, defaultdict
from dataclasses import dataclass
from typing import Any, Sequence
from urllib.parse import parse_qsl, unquote, urlsplit

from switchboard.errors import ConfigError, Unavailable
from switchboard.frames import Msg
from switchboard.store import Conversation, Watermark

# 1000 messages per partition: at the 16 KiB body cap a partition stays under
# ~16 MiB (typical chat: ~200 KiB), well below Cassandra's comfort zone of
# ~100 MiB, and a page of up to 1000 messages reads at most 2 partitions.
# Changing it changes where existing rows are looked up: never change it for
# a keyspace that holds data.
BUCKET_SIZE = 1000
DEFAULT_PORT = 9042
# Statements per single-partition UNLOGGED batch: one mutation per chunk;
# 100 x 16 KiB bodies = 1.6 MiB, far below max_mutation_size (half a commitlog
# segment, 16 MiB by default).
BATCH_ROWS = 100
_SEQ_MAX = 2**62
# (conv, bucket) keys remembered as indexed: ~100 bytes each, a few MiB; an
# evicted key only costs one idempotent re-write of its index row.
INDEX_CACHE = 50_000

CONSISTENCY_LEVELS = ("ONE", "TWO", "THREE", "QUORUM", "LOCAL_QUORUM", "EACH_QUORUM", "ALL", "LOCAL_ONE")
SERIAL_LEVELS = ("SERIAL", "LOCAL_SERIAL")

# Query options of the URL (also accepted as keyword arguments of from_url).
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

        return LibevConnection
    except Exception:  # ImportError / DependencyException: extension or libev missing
        pass
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # asyncore is deprecated since 3.6
            from cassandra.io.asyncorereactor import AsyncoreConnection
        return AsyncoreConnection
    except Exception:  # Python 3.12+: no asyncore
        from cassandra.io.asyncioreactor import AsyncioConnection

        return AsyncioConnection


def bucket_of(seq: int) -> int:
    return seq // BUCKET_SIZE


def _schema(o: CassandraOptions) -> list[str]:
    rep = ", ".join(f"'{k}': {v!r}" if isinstance(v, str) else f"'{k}': {v}" for k, v in o.replication_map().items())
    ks = o.keyspace
    return [
        f"CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {{{rep}}}",
        f"""CREATE TABLE IF NOT EXISTS {ks}.conversations (
            id text PRIMARY KEY, title text, kind text, created_by text, created_ts bigint, members set<text>)""",
        f"""CREATE TABLE IF NOT EXISTS {ks}.members (
            conv text, user text, PRIMARY KEY ((conv), user))""",
        f"""CREATE TABLE IF NOT EXISTS {ks}.conversations_by_user (
            user text, conv text, PRIMARY KEY ((user), conv))""",
        f"""CREATE TABLE IF NOT EXISTS {ks}.messages (
            conv text, bucket bigint, seq bigint, id text, sender text, body text, ts bigint, kind text,
            PRIMARY KEY ((conv, bucket), seq)) WITH CLUSTERING ORDER BY (seq DESC)""",
        f"""CREATE TABLE IF NOT EXISTS {ks}.conv_index (
            conv text, bucket bigint, PRIMARY KEY ((conv), bucket)) WITH CLUSTERING ORDER BY (bucket DESC)""",
        f"""CREATE TABLE IF NOT EXISTS {ks}.watermarks (
            conv text, user text, delivered bigint, read bigint, PRIMARY KEY ((conv), user))""",
    ]


class CassandraStore:
    """See :class:`switchboard.store.Store` for the contract."""

    def __init__(self, *, options: CassandraOptions) -> None:
        self.options = options
        self._cluster: Any = None
        self._session: Any = None
        self._ps: dict[str, Any] = {}
        # (conv, bucket) whose conv_index row this process has written.
        self._indexed: OrderedDict[tuple[str, int], None] = OrderedDict()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> "CassandraStore":
        return cls(options=parse_url(url, **options))

    # -- lifecycle ----------------------------------------------------------
    async def open(self) -> None:
        if self._session is not None:
            return
        await asyncio.get_running_loop().run_in_executor(None, self._connect)

    def _connect(self) -> None:  # blocking: runs in a worker thread
        from cassandra import ConsistencyLevel, ProtocolVersion
        from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable
        from cassandra.policies import DCAwareRoundRobinPolicy, ExponentialReconnectionPolicy, TokenAwarePolicy

        o = self.options
        profile = ExecutionProfile(
            load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=o.local_dc)),
            consistency_level=ConsistencyLevel.name_to_value[o.consistency],
            serial_consistency_level=ConsistencyLevel.name_to_value[o.serial_consistency],
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
            for stmt in _schema(o):
                # DDL waits for schema agreement, so later statements see the tables.
                session.execute(stmt, timeout=max(o.timeout, 60.0))
            ks = o.keyspace
            ps = {
                "conv_insert": f"INSERT INTO {ks}.conversations (id, title, kind, created_by, created_ts, members)"
                               " VALUES (?, ?, ?, ?, ?, ?) IF NOT EXISTS",
                "conv_get": f"SELECT id, title, kind, created_by, created_ts, members FROM {ks}.conversations WHERE id = ?",
                "member_insert": f"INSERT INTO {ks}.members (conv, user) VALUES (?, ?)",
                "by_user_insert": f"INSERT INTO {ks}.conversations_by_user (user, conv) VALUES (?, ?)",
                "by_user": f"SELECT conv FROM {ks}.conversations_by_user WHERE user = ?",
                "msg_insert": f"INSERT INTO {ks}.messages (conv, bucket, seq, id, sender, body, ts, kind)"
                              " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                "index_insert": f"INSERT INTO {ks}.conv_index (conv, bucket) VALUES (?, ?)",
                "newest_bucket": f"SELECT bucket FROM {ks}.conv_index WHERE conv = ? LIMIT 1",
                "newest_seq": f"SELECT seq FROM {ks}.messages WHERE conv = ? AND bucket = ? LIMIT 1",
                "msgs_desc": f"SELECT conv, seq, id, sender, body, ts, kind FROM {ks}.messages"
                             " WHERE conv = ? AND bucket = ? AND seq > ? AND seq < ? ORDER BY seq DESC LIMIT ?",
                "msgs_asc": f"SELECT conv, seq, id, sender, body, ts, kind FROM {ks}.messages"
                            " WHERE conv = ? AND bucket = ? AND seq > ? AND seq < ? ORDER BY seq ASC LIMIT ?",
                "bucket_below": f"SELECT bucket FROM {ks}.conv_index WHERE conv = ? AND bucket < ? AND bucket >= ?"
                                " ORDER BY bucket DESC LIMIT 1",
                "bucket_above": f"SELECT bucket FROM {ks}.conv_index WHERE conv = ? AND bucket > ? AND bucket <= ?"
                                " ORDER BY bucket ASC LIMIT 1",
                # Each cell written USING TIMESTAMP <its value>: the highest wins (monotonic max).
                "wm_delivered": f"UPDATE {ks}.watermarks USING TIMESTAMP ? SET delivered = ? WHERE conv = ? AND user = ?",
                "wm_read": f"UPDATE {ks}.watermarks USING TIMESTAMP ? SET read = ? WHERE conv = ? AND user = ?",
                "wm_get": f"SELECT user, delivered, read FROM {ks}.watermarks WHERE conv = ?",
            }
            self._ps = {name: session.prepare(cql) for name, cql in ps.items()}
            for name, stmt in self._ps.items():
                # Everything but the LWT is an upsert or a read: safe to retry.
                stmt.is_idempotent = name != "conv_insert"
        except NoHostAvailable as exc:
            cluster.shutdown()
            raise StoreUnavailable(f"cassandra {o.hosts}: {exc}") from exc
        except BaseException:
            cluster.shutdown()
            raise
        self._cluster, self._session = cluster, session

    async def close(self) -> None:
        cluster, self._cluster, self._session = self._cluster, None, None
        if cluster is not None:
            await asyncio.get_running_loop().run_in_executor(None, cluster.shutdown)

    # -- the bridge ---------------------------------------------------------
    async def _exec(self, stmt: Any, params: Any = None, *, all_pages: bool = False) -> list[Any]:
        """Run one statement without blocking the loop; return its rows."""
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
                fut.set_exception(_translate(exc))

        def on_rows(page: Any) -> None:  # driver thread
            rows.extend(page or ())
            if all_pages and rf.has_more_pages:
                rf.start_fetching_next_page()  # calls on_rows again
            else:
                loop.call_soon_threadsafe(done, rows)

        rf.add_callbacks(on_rows, lambda exc: loop.call_soon_threadsafe(fail, exc))
        return await fut

    async def _exec_many(self, items: Sequence[tuple[Any, Any]]) -> None:
        """Run statements concurrently, at most ``concurrency`` in flight.

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
            err = _translate(exc)
            if err is exc:
                raise
            raise err from exc

    # -- conversations ------------------------------------------------------
    async def create_conversation(self, conv: Conversation) -> tuple[Conversation, bool]:
        members = tuple(sorted(set(conv.members)))
        rows = await self._exec(self._ps["conv_insert"],
                                (conv.id, conv.title, conv.kind, conv.created_by, conv.created_ts, set(members)))
        row = rows[0]
        created = bool(row[0])  # [applied]; when False the row carries the stored values
        stored = Conversation(id=conv.id, members=members, title=conv.title, kind=conv.kind,
                              created_by=conv.created_by, created_ts=conv.created_ts) if created \
            else _conv_from_row(row._asdict())
        # The member set in the conversation row is the truth; the two lookup
        # tables derive from it. Written after the LWT and re-written on every
        # create of an existing id, so a crash in between heals on the retry.
        await self._write_member_rows(stored)
        return stored, created

    async def _write_member_rows(self, conv: Conversation) -> None:
        from cassandra.query import BatchStatement, BatchType

        if not conv.members:
            return
        # members: one partition, so one UNLOGGED batch (a single mutation, no
        # batch size limit applies); conversations_by_user: one partition per
        # user, written as concurrent single-row upserts (a multi-partition
        # batch would hit batch_size_fail_threshold for big groups). All of it
        # is idempotent and re-done on every create of the id.
        batch = BatchStatement(batch_type=BatchType.UNLOGGED)
        for user in conv.members:
            batch.add(self._ps["member_insert"], (conv.id, user))
        batch.is_idempotent = True
        await self._exec_many([(batch, None), *((self._ps["by_user_insert"], (u, conv.id)) for u in conv.members)])

    async def get_conversation(self, conv_id: str) -> Conversation | None:
        rows = await self._exec(self._ps["conv_get"], (conv_id,))
        return _conv_from_row(rows[0]._asdict()) if rows else None

    async def conversations_of(self, user: str) -> list[str]:
        rows = await self._exec(self._ps["by_user"], (user,), all_pages=True)
        return [r.conv for r in rows]

    # -- messages -----------------------------------------------------------
    async def append_messages(self, msgs: Sequence[Msg]) -> None:
        from cassandra.query import BatchStatement, BatchType

        if not msgs:
            return
        by_partition: dict[tuple[str, int], dict[int, Msg]] = defaultdict(dict)
        for m in msgs:
            by_partition[(m.conv, bucket_of(m.seq))][m.seq] = m  # duplicates inside a batch collapse
        # 1) the index row of each (conv, bucket) first: if the messages then
        #    fail to land, a page visits an empty bucket, never skips a full
        #    one. Written once per (conv, bucket) per process (remembered in
        #    _indexed), i.e. once per BUCKET_SIZE messages of a conversation.
        new = [key for key in by_partition if key not in self._indexed]
        if new:
            await self._exec_many([(self._ps["index_insert"], key) for key in new])
            for key in new:
                self._indexed[key] = None
            while len(self._indexed) > INDEX_CACHE:
                self._indexed.popitem(last=False)
        # 2) the messages: one UNLOGGED batch per partition chunk (a single
        #    mutation on one replica set; multi-partition batches would only
        #    add coordinator work), all chunks concurrently.
        ins = self._ps["msg_insert"]
        work = []
        for (conv, bucket), rows in by_partition.items():
            ordered = [rows[s] for s in sorted(rows)]
            if len(ordered) == 1:  # a lone row: a plain insert is cheaper than a batch of one
                m = ordered[0]
                work.append((ins, (conv, bucket, m.seq, m.id, m.from_, m.body, m.ts, m.kind)))
                continue
            for i in range(0, len(ordered), BATCH_ROWS):
                batch = BatchStatement(batch_type=BatchType.UNLOGGED)
                for m in ordered[i:i + BATCH_ROWS]:
                    batch.add(ins, (conv, bucket, m.seq, m.id, m.from_, m.body, m.ts, m.kind))
                batch.is_idempotent = True  # an upsert of identical rows
                work.append((batch, None))
        await self._exec_many(work)

    async def messages(self, conv_id: str, *, before: int | None = None, after: int | None = None,
                       limit: int = 50) -> list[Msg]:
        if limit <= 0:
            return []
        lo = after or 0
        hi = before if before is not None else _SEQ_MAX
        if hi - lo <= 1:
            return []
        newest_first = before is not None and after is None
        out: list[Msg] = []
        if newest_first:
            bucket, stop = bucket_of(hi - 1), bucket_of(lo + 1)
            while bucket is not None:
                rows = await self._exec(self._ps["msgs_desc"], (conv_id, bucket, lo, hi, limit - len(out)))
                out.extend(_msg(r) for r in rows)
                if len(out) >= limit or bucket <= stop:
                    break
                nxt = await self._exec(self._ps["bucket_below"], (conv_id, bucket, stop))
                bucket = nxt[0].bucket if nxt else None
            out.reverse()
        else:
            bucket = bucket_of(lo + 1)
            stop = bucket_of(hi - 1) if before is not None else _SEQ_MAX // BUCKET_SIZE
            while bucket is not None:
                rows = await self._exec(self._ps["msgs_asc"], (conv_id, bucket, lo, hi, limit - len(out)))
                out.extend(_msg(r) for r in rows)
                if len(out) >= limit or bucket >= stop:
                    break
                nxt = await self._exec(self._ps["bucket_above"], (conv_id, bucket, stop))
                bucket = nxt[0].bucket if nxt else None
        return out

    async def last_seq(self, conv_id: str) -> int:
        # The newest non-empty bucket's first row (clustered seq DESC): two
        # single-row reads; more only if an indexed bucket holds no message.
        found = await self._exec(self._ps["newest_bucket"], (conv_id,))
        while found:
            bucket = found[0].bucket
            rows = await self._exec(self._ps["newest_seq"], (conv_id, bucket))
            if rows:
                return int(rows[0].seq)
            found = await self._exec(self._ps["bucket_below"], (conv_id, bucket, 0))
        return 0

    # -- receipts -------------------------------------------------------------
    async def merge_watermarks(self, marks: Sequence[Watermark]) -> None:
        # Last-write-wins by timestamp, with the value as the timestamp, is a
        # max-register: a stale or repeated receipt has a lower or equal
        # timestamp and changes nothing, with no read-before-write.
        best: dict[tuple[str, str], list[int]] = {}
        for m in marks:
            cur = best.setdefault((m.conv, m.user), [0, 0])
            cur[0], cur[1] = max(cur[0], m.delivered), max(cur[1], m.read)
        work = []
        for (conv, user), (delivered, read) in best.items():
            work.append((self._ps["wm_delivered"], (delivered, delivered, conv, user)))
            work.append((self._ps["wm_read"], (read, read, conv, user)))
        if work:
            await self._exec_many(work)

    async def watermarks(self, conv_id: str) -> list[Watermark]:
        rows = await self._exec(self._ps["wm_get"], (conv_id,), all_pages=True)
        return [Watermark(conv=conv_id, user=r.user, delivered=r.delivered or 0, read=r.read or 0) for r in rows]


def _msg(r: Any) -> Msg:
    return Msg(conv=r.conv, seq=r.seq, id=r.id, from_=r.sender, body=r.body or "", ts=r.ts or 0,
               kind=r.kind or "user")


def _conv_from_row(row: dict[str, Any]) -> Conversation:
    return Conversation(id=row["id"], members=tuple(sorted(row.get("members") or ())), title=row.get("title") or "",
                        kind=row.get("kind") or "group", created_by=row.get("created_by") or "",
                        created_ts=row.get("created_ts") or 0)


def _translate(exc: BaseException) -> BaseException:
    """Driver errors that mean "the cluster is not answering" -> StoreUnavailable."""
    from cassandra import OperationTimedOut, ReadTimeout, Unavailable as CUnavailable, WriteTimeout
    from cassandra.cluster import NoHostAvailable

    if isinstance(exc, (NoHostAvailable, OperationTimedOut, ReadTimeout, WriteTimeout, CUnavailable)):
        err = StoreUnavailable(f"cassandra: {type(exc).__name__}: {exc}")
        err.__cause__ = exc
        return err
    return exc
