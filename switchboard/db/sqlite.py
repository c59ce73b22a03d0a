"""One SQLite connection on one dedicated thread, for asyncio code.

sqlite3 is blocking, so every call runs on a single-worker executor that owns
the connection; the event loop never waits on disk, and the one thread
serialises the calls (no two statements race on the connection). WAL mode
lets a second process share the file (a second sequencer in the tests);
``busy_timeout`` makes writers queue instead of failing. Used by
switchboard/store/sqlite.py and switchboard/devices/sqlite.py.

``readers=True`` adds a second, read-only connection on a thread of its
own for :meth:`SqliteExecutor.read`: in WAL mode a reader never waits for
the writer, so reads do not queue behind write transactions and their
fsync (``synchronous=FULL``). Measured on the sequencer in a reconnect
storm: its API requests (a store read each) averaged 2-3 ms, queued behind
receipt writes on the one thread, and overflowed ``api_max_inflight``.
A read sees every write whose ``run`` has returned (autocommit: each read
statement starts a fresh snapshot).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class SqliteExecutor:
    """``await run(fn)`` calls ``fn(connection)`` on the connection's thread.

    ``busy_timeout``: seconds a statement waits for another process's lock
    before it fails; ``pragmas``: run after WAL is on, before ``schema`` (an
    SQL script of idempotent ``CREATE ... IF NOT EXISTS``)."""

    def __init__(self, path: str | Path, *, name: str, schema: str, busy_timeout: float,
                 pragmas: Sequence[str] = (), readers: bool = False) -> None:
        self.path = str(path)
        self.name = name  # the thread's name prefix, and what "not open" errors say
        self._schema = schema
        self._busy_timeout = busy_timeout
        self._pragmas = tuple(pragmas)
        self._db: sqlite3.Connection | None = None
        self._pool: ThreadPoolExecutor | None = None
        # The read-only connection (readers=True, a file: ":memory:" is one
        # database per connection), else reads go through the writer's thread.
        self._readers = readers and self.path != ":memory:"
        self._rdb: sqlite3.Connection | None = None
        self._rpool: ThreadPoolExecutor | None = None

    @property
    def is_open(self) -> bool:
        return self._db is not None

    async def open(self) -> None:
        """Connect, switch to WAL, create the schema. Opening an open executor does nothing."""
        if self._pool is not None:
            return
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.name)

        def connect() -> sqlite3.Connection:
            # timeout = busy timeout, set before the first statement: another
            # process opening the same file at once (switching it to WAL, say)
            # holds the lock for a moment; wait rather than fail.
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                 timeout=self._busy_timeout)
            try:
                wal_mode(db)
                for pragma in self._pragmas:
                    db.execute(pragma)
                db.executescript(self._schema)
            except BaseException:
                db.close()
                raise
            return db

        try:
            self._db = await asyncio.get_running_loop().run_in_executor(pool, connect)
        except BaseException:
            pool.shutdown(wait=False)
            raise
        self._pool = pool
        if self._readers:
            await self._open_reader()

    async def _open_reader(self) -> None:
        """The read-only connection, once the schema exists (made by the writer)."""
        rpool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.name + "-read")

        def connect_reader() -> sqlite3.Connection:
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                 timeout=self._busy_timeout)
            db.execute("PRAGMA query_only=ON")
            return db

        try:
            self._rdb = await asyncio.get_running_loop().run_in_executor(rpool, connect_reader)
        except BaseException:
            rpool.shutdown(wait=False)
            await self.close()
            raise
        self._rpool = rpool

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` on the connection's thread; its result or exception."""
        pool, db = self._pool, self._db
        if pool is None or db is None:
            raise RuntimeError(f"{self.name}: not open")
        return await asyncio.get_running_loop().run_in_executor(pool, fn, db)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` for a read: on the read-only connection's thread
        if there is one (``readers=True``), else as :meth:`run`."""
        rpool, rdb = self._rpool, self._rdb
        if rpool is None or rdb is None:
            return await self.run(fn)
        return await asyncio.get_running_loop().run_in_executor(rpool, fn, rdb)

    async def close(self) -> None:
        """Close the connections and stop their threads; closing a closed executor does nothing."""
        rpool, rdb, self._rpool, self._rdb = self._rpool, self._rdb, None, None
        pool, db, self._pool, self._db = self._pool, self._db, None, None
        try:
            await _shut(rpool, rdb)
        finally:
            await _shut(pool, db)


async def _shut(pool: ThreadPoolExecutor | None, db: sqlite3.Connection | None) -> None:
    """Close ``db`` on its own thread (sqlite3 objects stay on it), then stop the thread."""
    if pool is None:
        return
    try:
        if db is not None:
            await asyncio.get_running_loop().run_in_executor(pool, db.close)
    finally:
        pool.shutdown(wait=True)


def wal_mode(db: sqlite3.Connection, attempts: int = 100) -> None:
    """Switch to WAL. SQLite answers "locked" at once, without its busy
    handler, when another process switches the same file at that moment: retry."""
    for i in range(attempts):
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or i == attempts - 1:
                raise
            time.sleep(0.05)


def in_tx(db: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``fn`` in one write transaction (taken at once: no upgrade deadlock)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        out = fn(db)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return out


def in_snapshot(db: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``fn``'s reads in one read transaction: one snapshot for all its
    statements (in autocommit each statement would take its own)."""
    db.execute("BEGIN")
    try:
        return fn(db)
    finally:
        db.execute("COMMIT")
