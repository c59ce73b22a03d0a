"""SQLite store: the embedded default, one file under the data dir.

sqlite3 is blocking, so every call runs on one dedicated thread (a
single-worker executor) that owns the connection; the event loop never waits
on disk. WAL mode lets a second process (a second sequencer in the tests)
share the file; ``busy_timeout`` makes writers queue instead of failing.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from switchboard.frames import Msg
from switchboard.store import Conversation, Watermark

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    kind TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_ts INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS members (
    conv TEXT NOT NULL,
    user TEXT NOT NULL,
    PRIMARY KEY (conv, user)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS members_by_user ON members (user, conv);
CREATE TABLE IF NOT EXISTS messages (
    conv TEXT NOT NULL,
    seq INTEGER NOT NULL,
    id TEXT NOT NULL,
    sender TEXT NOT NULL,
    body TEXT NOT NULL,
    ts INTEGER NOT NULL,
    kind TEXT NOT NULL,
    PRIMARY KEY (conv, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS watermarks (
    conv TEXT NOT NULL,
    user TEXT NOT NULL,
    delivered INTEGER NOT NULL,
    read INTEGER NOT NULL,
    PRIMARY KEY (conv, user)
) WITHOUT ROWID;
"""


class SqliteStore:
    """See :class:`switchboard.store.Store` for the contract."""

    def __init__(self, *, path: str | Path, **_ignored: Any) -> None:
        self.path = str(path)
        self._db: sqlite3.Connection | None = None
        self._pool: ThreadPoolExecutor | None = None

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        assert self._pool is not None and self._db is not None, "store not open"
        db = self._db
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, db)

    async def open(self) -> None:
        if self._pool is not None:
            return
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")

        def connect() -> sqlite3.Connection:
            # timeout = busy timeout, set before the first statement: another
            # process opening the same file at once (switching it to WAL, say)
            # holds the lock for a moment; wait rather than fail.
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10.0)
            wal_mode(db)
            db.execute("PRAGMA synchronous=FULL")  # append returns only once durable
            db.executescript(_SCHEMA)
            return db

        self._db = await asyncio.get_running_loop().run_in_executor(self._pool, connect)

    async def close(self) -> None:
        if self._pool is None:
            return
        await self._run(lambda db: db.close())
        self._pool.shutdown(wait=True)
        self._pool = None
        self._db = None

    # -- conversations ------------------------------------------------------
    async def create_conversation(self, conv: Conversation) -> tuple[Conversation, bool]:
        members = tuple(sorted(set(conv.members)))

        def insert(db: sqlite3.Connection) -> bool:
            cur = db.execute(
                "INSERT OR IGNORE INTO conversations (id, title, kind, created_by, created_ts)"
                " VALUES (?, ?, ?, ?, ?)",
                (conv.id, conv.title, conv.kind, conv.created_by, conv.created_ts),
            )
            if cur.rowcount == 1:
                db.executemany("INSERT OR IGNORE INTO members (conv, user) VALUES (?, ?)",
                               [(conv.id, m) for m in members])
            return cur.rowcount == 1

        def tx(db: sqlite3.Connection) -> tuple[Conversation, bool]:
            created = _in_tx(db, insert)
            stored = _get_conv(db, conv.id)
            assert stored is not None
            return stored, created

        return await self._run(tx)

    async def get_conversation(self, conv_id: str) -> Conversation | None:
        return await self._run(lambda db: _get_conv(db, conv_id))

    async def conversations_of(self, user: str) -> list[str]:
        def q(db: sqlite3.Connection) -> list[str]:
            return [r[0] for r in db.execute("SELECT conv FROM members WHERE user = ? ORDER BY conv", (user,))]

        return await self._run(q)

    # -- messages -----------------------------------------------------------
    async def append_messages(self, msgs: Sequence[Msg]) -> None:
        rows = [(m.conv, m.seq, m.id, m.from_, m.body, m.ts, m.kind) for m in msgs]
        if not rows:
            return

        await self._run(lambda db: _in_tx(db, lambda db: db.executemany(
            "INSERT OR IGNORE INTO messages (conv, seq, id, sender, body, ts, kind)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)", rows)))

    async def messages(self, conv_id: str, *, before: int | None = None, after: int | None = None,
                       limit: int = 50) -> list[Msg]:
        def q(db: sqlite3.Connection) -> list[Msg]:
            cols = "conv, seq, id, sender, body, ts, kind"
            if before is not None and after is None:
                rows = db.execute(
                    f"SELECT {cols} FROM messages WHERE conv = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
                    (conv_id, before, limit)).fetchall()
                rows.reverse()
            else:
                lo = after or 0
                hi = before if before is not None else 2**62
                rows = db.execute(
                    f"SELECT {cols} FROM messages WHERE conv = ? AND seq > ? AND seq < ? ORDER BY seq ASC LIMIT ?",
                    (conv_id, lo, hi, limit)).fetchall()
            return [Msg(conv=r[0], seq=r[1], id=r[2], from_=r[3], body=r[4], ts=r[5], kind=r[6]) for r in rows]

        return await self._run(q)

    async def last_seq(self, conv_id: str) -> int:
        def q(db: sqlite3.Connection) -> int:
            row = db.execute("SELECT MAX(seq) FROM messages WHERE conv = ?", (conv_id,)).fetchone()
            return int(row[0] or 0)

        return await self._run(q)


    # -- receipts -------------------------------------------------------------
    async def merge_watermarks(self, marks: Sequence[Watermark]) -> None:
        rows = [(m.conv, m.user, m.delivered, m.read) for m in marks]
        if not rows:
            return

        await self._run(lambda db: _in_tx(db, lambda db: db.executemany(
            "INSERT INTO watermarks (conv, user, delivered, read) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (conv, user) DO UPDATE SET"
            " delivered = max(delivered, excluded.delivered), read = max(read, excluded.read)", rows)))

    async def watermarks(self, conv_id: str) -> list[Watermark]:
        def q(db: sqlite3.Connection) -> list[Watermark]:
            return [Watermark(conv=conv_id, user=r[0], delivered=r[1], read=r[2]) for r in db.execute(
                "SELECT user, delivered, read FROM watermarks WHERE conv = ? ORDER BY user", (conv_id,))]

        return await self._run(q)


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


def _in_tx(db: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``fn`` in one write transaction (taken at once: no upgrade deadlock)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        out = fn(db)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return out


def _get_conv(db: sqlite3.Connection, conv_id: str) -> Conversation | None:
    row = db.execute("SELECT id, title, kind, created_by, created_ts FROM conversations WHERE id = ?",
                     (conv_id,)).fetchone()
    if row is None:
        return None
    members = tuple(r[0] for r in db.execute("SELECT user FROM members WHERE conv = ? ORDER BY user", (conv_id,)))
    return Conversation(id=row[0], members=members, title=row[1], kind=row[2], created_by=row[3], created_ts=row[4])
