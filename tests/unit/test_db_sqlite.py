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
