"""Cassandra store: the production archive (docs/storage.md has the design).

URL: ``cassandra://host1[:port],host2[:port]/keyspace?option=value&...``
(options in :data:`switchboard.db.cql.OPTIONS`; unknown ones are rejected).

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

The connection, the URL options and the bridge from the driver's threads to
the event loop are :class:`switchboard.db.cql.CqlSession`'s (shared with the
Cassandra device store).
"""

from __future__ import annotations

import struct
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from switchboard.db.cql import OPTIONS, CassandraOptions, CqlSession, StoreUnavailable, parse_url
from switchboard.frames import Msg
from switchboard.store import Conversation, Watermark

__all__ = ["BUCKET_SIZE", "OPTIONS", "CassandraOptions", "CassandraStore", "StoreUnavailable", "bucket_of",
           "parse_url", "row_values"]

# 1000 messages per partition: at the 16 KiB body cap a partition stays under
# ~16 MiB (typical chat: ~200 KiB), well below Cassandra's comfort zone of
# ~100 MiB, and a page of up to 1000 messages reads at most 2 partitions.
# Changing it changes where existing rows are looked up: never change it for
# a keyspace that holds data.
BUCKET_SIZE = 1000
# Statements per single-partition UNLOGGED batch: one mutation per chunk;
# 100 x 16 KiB bodies = 1.6 MiB, far below max_mutation_size (half a commitlog
# segment, 16 MiB by default).
BATCH_ROWS = 100
# Partitions per multi-partition UNLOGGED batch, for partitions with few rows
# in an archive batch (thousands of conversations: ~1 row each). Each request
# costs ~190 us of the driver's Python and ~200 us of the JVM whatever its
# size, so rows of several partitions share one; only partitions with the
# same replicas go together (the coordinator, chosen by the first row's
# token, then applies them locally and forwards as it would anyway). 10 is
# Cassandra's unlogged_batch_across_partitions_warn_threshold: above it
# every such batch logs a warning on the coordinator.
CROSS_PARTITIONS = 10
# Rows of one partition in one archive batch below which it shares a
# multi-partition batch rather than getting a request of its own.
SMALL_PARTITION = 10
# Bytes of data (Cassandra's measure: values plus ~16 bytes per cell) per
# multi-partition batch: Cassandra logs a warning for each one over
# batch_size_warn_threshold (5 KiB by default) and refuses those over
# batch_size_fail_threshold (50 KiB); single-partition batches are exempt
# from both. A partition whose rows are larger goes alone.
CROSS_BYTES = 4096
_ROW_OVERHEAD = 128  # per row: the clustering seq, ts and 5 cells' timestamps and TTLs, with margin
_SEQ_MAX = 2**62
_P = TypeVar("_P")  # a partition in _by_replicas: (conv, bucket) or (conv, bucket, rows)
# (conv, bucket) keys remembered as indexed: ~100 bytes each, a few MiB; an
# evicted key only costs one idempotent re-write of its index row.
INDEX_CACHE = 50_000


_int64 = struct.Struct(">q").pack  # CQL bigint, as the driver's int64_pack


def row_values(conv: bytes, bucket: bytes, m: Msg) -> list[bytes]:
    """The serialized values of one ``msg_insert`` row (conv and bucket
    already serialized): text is UTF-8, bigint 8 bytes big-endian, exactly
    what binding the prepared statement produces (a contract test compares
    them), at a fifth of the cost (no BoundStatement, no per-column type
    dispatch). Bad values raise as binding would (the archiver then bisects)."""
    return [conv, bucket, _int64(m.seq), m.id.encode(), m.from_.encode(), m.body.encode(), _int64(m.ts),
            m.kind.encode()]


def bucket_of(seq: int) -> int:
    return seq // BUCKET_SIZE


def _composite(*parts: bytes) -> bytes:
    """The routing key of a composite partition key (Cassandra's
    CompositeType: each part's 2-byte length, its bytes, a 0 byte), as the
    driver computes it for a bound statement."""
    return b"".join(struct.pack(">H", len(p)) + p + b"\x00" for p in parts)


def _tables(ks: str) -> list[str]:
    return [
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


def _statements(ks: str) -> dict[str, str]:
    return {
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


class CassandraStore:
    """See :class:`switchboard.store.Store` for the contract."""

    def __init__(self, *, options: CassandraOptions) -> None:
        self.options = options
        self._cql = CqlSession(options)
        self._ps: dict[str, Any] = {}
        # (conv, bucket) whose conv_index row this process has written.
        self._indexed: OrderedDict[tuple[str, int], None] = OrderedDict()
        # Appends a row serialized by row_values to a batch (set by open():
        # switchboard.compat.cassandra_driver, which imports the driver).
        self._add_row: Callable[[Any, bytes, Sequence[bytes]], None] | None = None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> CassandraStore:
        return cls(options=parse_url(url, **options))

    # -- lifecycle ----------------------------------------------------------
    async def open(self) -> None:
        if self._cql.is_open:
            return
        ks = self.options.keyspace
        # row_values' rows go into batches through a driver internal, checked
        # (version and attribute) when this guard is first imported.
        from switchboard.compat import cassandra_driver

        self._add_row = cassandra_driver.add_serialized_row
        # Everything but the LWT is an upsert or a read: safe to retry.
        self._ps = await self._cql.open(tables=_tables(ks), statements=_statements(ks),
                                        not_idempotent={"conv_insert"})

    async def close(self) -> None:
        await self._cql.close()

    # -- conversations ------------------------------------------------------
    async def create_conversation(self, conv: Conversation) -> tuple[Conversation, bool]:
        members = tuple(sorted(set(conv.members)))
        rows = await self._cql.execute(self._ps["conv_insert"],
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
        by_user = self._ps["by_user_insert"]
        await self._cql.execute_many([(batch, None), *((by_user, (u, conv.id)) for u in conv.members)])

    async def get_conversation(self, conv_id: str) -> Conversation | None:
        rows = await self._cql.execute(self._ps["conv_get"], (conv_id,))
        return _conv_from_row(rows[0]._asdict()) if rows else None

    async def conversations_of(self, user: str) -> list[str]:
        rows = await self._cql.execute(self._ps["by_user"], (user,), all_pages=True)
        return [r.conv for r in rows]

    # -- messages -----------------------------------------------------------
    async def append_messages(self, msgs: Sequence[Msg]) -> None:
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
            await self._cql.execute_many(self._index_requests(new))
            for key in new:
                self._indexed[key] = None
            while len(self._indexed) > INDEX_CACHE:
                self._indexed.popitem(last=False)
        # 2) the messages: one UNLOGGED batch per chunk of a partition with
        #    many rows (a single mutation on one replica set); partitions
        #    with few rows share multi-partition batches (CROSS_PARTITIONS);
        #    all requests concurrently.
        work: list[tuple[Any, Any]] = []  # (statement, params) for execute_many
        small: list[tuple[str, int, list[Msg], int]] = []  # (conv, bucket, rows, bytes)
        for (conv, bucket), rows in by_partition.items():
            ordered = [rows[s] for s in sorted(rows)]
            if len(ordered) < SMALL_PARTITION:
                size = sum(_ROW_OVERHEAD + len(m.id) + len(m.from_) + len(m.body.encode()) + len(m.kind)
                           for m in ordered)
                if size <= CROSS_BYTES:
                    small.append((conv, bucket, ordered, size))
                    continue
            for i in range(0, len(ordered), BATCH_ROWS):
                work.append(self._msg_request([(conv, bucket, ordered[i:i + BATCH_ROWS])]))
        for group in self._by_replicas(small, lambda p: _composite(p[0].encode(), _int64(p[1])),
                                       lambda p: (len(p[2]), p[3])):
            work.append(self._msg_request([(conv, bucket, rows) for conv, bucket, rows, _ in group]))
        await self._cql.execute_many(work)

    def _msg_request(self, parts: list[tuple[str, int, list[Msg]]]) -> tuple[Any, Any]:
        """(statement, params) writing the rows of ``parts`` (conv, bucket,
        rows): a plain insert for a lone row (cheaper than a batch of one),
        else one UNLOGGED batch. Its first row goes through the public API,
        which sets the batch's routing key (token-aware routing: the first
        partition's replicas) and keyspace; the others are serialized by
        row_values (same bytes, the same query id)."""
        from cassandra.query import BatchStatement, BatchType

        ins = self._ps["msg_insert"]
        conv, bucket, rows = parts[0]
        m = rows[0]
        first = (conv, bucket, m.seq, m.id, m.from_, m.body, m.ts, m.kind)
        if len(parts) == 1 and len(rows) == 1:
            return ins, first
        add, query_id = self._add_row, ins.query_id
        assert add is not None  # open() set it
        batch = BatchStatement(batch_type=BatchType.UNLOGGED)
        batch.add(ins, first)
        for k, (conv, bucket, rows) in enumerate(parts):
            conv_b, bucket_b = conv.encode(), _int64(bucket)
            for m in rows[1:] if k == 0 else rows:
                add(batch, query_id, row_values(conv_b, bucket_b, m))
        batch.is_idempotent = True  # an upsert of identical rows
        return batch, None

    def _index_requests(self, keys: list[tuple[str, int]]) -> list[tuple[Any, Any]]:
        """The conv_index rows of ``keys``: up to CROSS_PARTITIONS
        conversations with the same replicas per UNLOGGED batch."""
        from cassandra.query import BatchStatement, BatchType

        stmt = self._ps["index_insert"]
        out: list[tuple[Any, Any]] = []
        for group in self._by_replicas(keys, lambda k: k[0].encode(), lambda k: (1, _ROW_OVERHEAD + len(k[0]))):
            if len(group) == 1:
                out.append((stmt, group[0]))
                continue
            batch = BatchStatement(batch_type=BatchType.UNLOGGED)
            for key in group:
                batch.add(stmt, key)
            batch.is_idempotent = True
            out.append((batch, None))
        return out

    def _by_replicas(self, items: Sequence[_P], routing_key: Callable[[_P], bytes],
                     size: Callable[[_P], tuple[int, int]]) -> list[list[_P]]:
        """``items`` (partitions) in groups of at most CROSS_PARTITIONS whose
        partitions have the same replicas (by the driver's token map; one set
        for all when it has none), at most BATCH_ROWS rows and CROSS_BYTES
        bytes (``size``: rows, bytes)."""
        metadata, ks = self._cql.session.cluster.metadata, self.options.keyspace
        by_set: dict[tuple[Any, ...], list[_P]] = defaultdict(list)
        for item in items:
            by_set[tuple(metadata.get_replicas(ks, routing_key(item)))].append(item)
        out: list[list[_P]] = []
        for same in by_set.values():
            group: list[_P] = []
            rows = nbytes = 0
            for item in same:
                n, b = size(item)
                if group and (len(group) == CROSS_PARTITIONS or rows + n > BATCH_ROWS or nbytes + b > CROSS_BYTES):
                    out.append(group)
                    group, rows, nbytes = [], 0, 0
                group.append(item)
                rows += n
                nbytes += b
            if group:
                out.append(group)
        return out

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
        bucket: int | None
        if newest_first:
            bucket, stop = bucket_of(hi - 1), bucket_of(lo + 1)
            while bucket is not None:
                rows = await self._cql.execute(self._ps["msgs_desc"], (conv_id, bucket, lo, hi, limit - len(out)))
                out.extend(_msg(r) for r in rows)
                if len(out) >= limit or bucket <= stop:
                    break
                nxt = await self._cql.execute(self._ps["bucket_below"], (conv_id, bucket, stop))
                bucket = nxt[0].bucket if nxt else None
            out.reverse()
        else:
            bucket = bucket_of(lo + 1)
            stop = bucket_of(hi - 1) if before is not None else _SEQ_MAX // BUCKET_SIZE
            while bucket is not None:
                rows = await self._cql.execute(self._ps["msgs_asc"], (conv_id, bucket, lo, hi, limit - len(out)))
                out.extend(_msg(r) for r in rows)
                if len(out) >= limit or bucket >= stop:
                    break
                nxt = await self._cql.execute(self._ps["bucket_above"], (conv_id, bucket, stop))
                bucket = nxt[0].bucket if nxt else None
        return out

    async def last_seq(self, conv_id: str) -> int:
        # The newest non-empty bucket's first row (clustered seq DESC): two
        # single-row reads; more only if an indexed bucket holds no message.
        found = await self._cql.execute(self._ps["newest_bucket"], (conv_id,))
        while found:
            bucket = found[0].bucket
            rows = await self._cql.execute(self._ps["newest_seq"], (conv_id, bucket))
            if rows:
                return int(rows[0].seq)
            found = await self._cql.execute(self._ps["bucket_below"], (conv_id, bucket, 0))
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
            await self._cql.execute_many(work)

    async def watermarks(self, conv_id: str) -> list[Watermark]:
        rows = await self._cql.execute(self._ps["wm_get"], (conv_id,), all_pages=True)
        return [Watermark(conv=conv_id, user=r.user, delivered=r.delivered or 0, read=r.read or 0) for r in rows]


def _msg(r: Any) -> Msg:
    return Msg(conv=r.conv, seq=r.seq, id=r.id, from_=r.sender, body=r.body or "", ts=r.ts or 0,
               kind=r.kind or "user")


def _conv_from_row(row: dict[str, Any]) -> Conversation:
    return Conversation(id=row["id"], members=tuple(sorted(row.get("members") or ())), title=row.get("title") or "",
                        kind=row.get("kind") or "group", created_by=row.get("created_by") or "",
                        created_ts=row.get("created_ts") or 0)
