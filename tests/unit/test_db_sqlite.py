"""switchboard.db.sqlite.SqliteExecutor, the one SQLite executor the stores
share (the contract suites in tests/contract run the stores on it).

What it protects: a call before open (or after close) is a clear error, not a
hang or a call on a closed connection; open and close are idempotent (a
store opened twice keeps one thread and one connection); a schema that fails
leaves nothing open behind it; every call runs on the one connection thread
(sqlite3 objects must not cross threads); the file's directory is created."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from switchboard.db.sqlite import SqliteExecutor, in_tx

SCHEMA = "CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v TEXT NOT NULL);"


async def test_calls_need_an_open_executor(tmp_path):
    ex = SqliteExecutor(tmp_path / "a.db", name="t-db", schema=SCHEMA, busy_timeout=1.0)
    with pytest.raises(RuntimeError, match="t-db: not open"):
        await ex.run(lambda db: db.execute("SELECT 1"))
    await ex.open()
    await ex.close()
    await ex.close()  # twice: nothing
    with pytest.raises(RuntimeError, match="not open"):
        await ex.run(lambda db: db.execute("SELECT 1"))


async def test_one_thread_one_connection_wal_and_pragmas(tmp_path):
    path = tmp_path / "sub" / "dir" / "a.db"  # the directory does not exist yet
    ex = SqliteExecutor(path, name="t-db", schema=SCHEMA, busy_timeout=1.0, pragmas=("PRAGMA synchronous=FULL",))
    await ex.open()
    first = await ex.run(id)
    await ex.open()  # again: same connection
    assert await ex.run(id) == first and ex.is_open
    seen = {await ex.run(lambda db: threading.current_thread().name) for _ in range(5)}
    assert len(seen) == 1 and seen.pop().startswith("t-db")
    assert await ex.run(lambda db: db.execute("PRAGMA journal_mode").fetchone()[0]) == "wal"
    assert await ex.run(lambda db: db.execute("PRAGMA synchronous").fetchone()[0]) == 2  # FULL
    await ex.close()


async def test_a_failed_transaction_rolls_back(tmp_path):
    ex = SqliteExecutor(tmp_path / "a.db", name="t-db", schema=SCHEMA, busy_timeout=1.0)
    await ex.open()

    def half(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO t VALUES (1, 'a')")
        db.execute("INSERT INTO t VALUES (1, 'again')")  # primary key: fails

    with pytest.raises(sqlite3.IntegrityError):
        await ex.run(lambda db: in_tx(db, half))
    assert await ex.run(lambda db: db.execute("SELECT count(*) FROM t").fetchone()[0]) == 0
    await ex.close()


async def test_a_bad_schema_leaves_nothing_open(tmp_path):
    ex = SqliteExecutor(tmp_path / "a.db", name="t-db", schema="CREATE TABLEX nope;", busy_timeout=1.0)
    with pytest.raises(sqlite3.OperationalError):
        await ex.open()
    assert not ex.is_open
    with pytest.raises(RuntimeError, match="not open"):
        await ex.run(lambda db: None)


async def test_reads_do_not_wait_for_the_writer(tmp_path):
    """readers=True: a read is answered while a write transaction holds the
    writer's thread (it used to queue behind it and its fsync: the
    sequencer's API requests averaged 2-3 ms in a reconnect storm and
    overflowed api_max_inflight), it does not see the uncommitted row, it
    sees it once the write has returned, and it cannot write."""
    import asyncio

    ex = SqliteExecutor(tmp_path / "a.db", name="t-db", schema=SCHEMA, busy_timeout=1.0, readers=True)
    await ex.open()
    gate = threading.Event()

    def slow_write(db: sqlite3.Connection) -> None:
        in_tx(db, lambda db: (db.execute("INSERT INTO t (k, v) VALUES (1, 'a')"), gate.wait(5)))

    def count(db: sqlite3.Connection) -> int:
        return db.execute("SELECT count(*) FROM t").fetchone()[0]

    try:
        write = asyncio.ensure_future(ex.run(slow_write))
        await asyncio.sleep(0.05)  # the write transaction is open on the writer's thread
        assert await asyncio.wait_for(ex.read(count), 2.0) == 0
        gate.set()
        await write
        assert await ex.read(count) == 1
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            await ex.read(lambda db: db.execute("INSERT INTO t (k, v) VALUES (2, 'b')"))
    finally:
        gate.set()
        await ex.close()
    await ex.close()  # twice: nothing


async def test_reads_without_readers_or_in_memory_go_through_the_writer(tmp_path):
    for path in (tmp_path / "b.db", ":memory:"):
        ex = SqliteExecutor(path, name="t-db", schema=SCHEMA, busy_timeout=1.0, readers=path == ":memory:")
        await ex.open()
        try:
            await ex.run(lambda db: db.execute("INSERT INTO t (k, v) VALUES (1, 'a')"))
            names = await ex.read(lambda db: (threading.current_thread().name,
                                              db.execute("SELECT v FROM t").fetchone()[0]))
            assert names[0].startswith("t-db_") and names[1] == "a", names
        finally:
            await ex.close()
