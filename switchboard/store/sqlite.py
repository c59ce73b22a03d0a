"""SQLite store: the embedded default, one file under the data dir.

Every call runs on the connection's own thread
(:class:`switchboard.db.sqlite.SqliteExecutor`): the event loop never waits on
disk. WAL mode lets a second process (a second sequencer in the tests) share
the file; the busy timeout makes writers queue instead of failing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from switchboard.db.sqlite import SqliteExecutor, in_snapshot, in_tx
from switchboard.frames import Msg
from switchboard.store import Conversation, Watermark

# Seconds a write waits for another process's lock (a second sequencer on the
# same file) before it fails: long enough for any single transaction here.
BUSY_TIMEOUT = 10.0

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
        # synchronous=FULL: append returns only once durable. Reads on a
        # connection of their own: they never wait behind a write's fsync.
        self._ex = SqliteExecutor(self.path, name="sqlite", schema=_SCHEMA, busy_timeout=BUSY_TIMEOUT,
                                  pragmas=("PRAGMA synchronous=FULL",), readers=True)
        self._run = self._ex.run
        self._read = self._ex.read

    async def open(self) -> None:
        await self._ex.open()

    async def close(self) -> None:
        await self._ex.close()

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
            created = in_tx(db, insert)
            stored = _get_conv(db, conv.id)
            assert stored is not None
            return stored, created

        return await self._run(tx)

    async def get_conversation(self, conv_id: str) -> Conversation | None:
        return await self._read(lambda db: in_snapshot(db, lambda db: _get_conv(db, conv_id)))

    async def conversations_of(self, user: str) -> list[str]:
        def q(db: sqlite3.Connection) -> list[str]:
            return [r[0] for r in db.execute("SELECT conv FROM members WHERE user = ? ORDER BY conv", (user,))]

        return await self._read(q)

    # -- messages -----------------------------------------------------------
    async def append_messages(self, msgs: Sequence[Msg]) -> None:
        rows = [(m.conv, m.seq, m.id, m.from_, m.body, m.ts, m.kind) for m in msgs]
        if not rows:
            return

        await self._run(lambda db: in_tx(db, lambda db: db.executemany(
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

        return await self._read(q)

    async def last_seq(self, conv_id: str) -> int:
        def q(db: sqlite3.Connection) -> int:
            row = db.execute("SELECT MAX(seq) FROM messages WHERE conv = ?", (conv_id,)).fetchone()
            return int(row[0] or 0)

        return await self._read(q)

    # -- receipts -------------------------------------------------------------
    async def merge_watermarks(self, marks: Sequence[Watermark]) -> None:
        rows = [(m.conv, m.user, m.delivered, m.read) for m in marks]
        if not rows:
            return

        await self._run(lambda db: in_tx(db, lambda db: db.executemany(
            "INSERT INTO watermarks (conv, user, delivered, read) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (conv, user) DO UPDATE SET"
            " delivered = max(delivered, excluded.delivered), read = max(read, excluded.read)", rows)))

    async def watermarks(self, conv_id: str) -> list[Watermark]:
        def q(db: sqlite3.Connection) -> list[Watermark]:
            return [Watermark(conv=conv_id, user=r[0], delivered=r[1], read=r[2]) for r in db.execute(
                "SELECT user, delivered, read FROM watermarks WHERE conv = ? ORDER BY user", (conv_id,))]

        return await self._read(q)


def _get_conv(db: sqlite3.Connection, conv_id: str) -> Conversation | None:
    row = db.execute("SELECT id, title, kind, created_by, created_ts FROM conversations WHERE id = ?",
                     (conv_id,)).fetchone()
    if row is None:
        return None
    members = tuple(r[0] for r in db.execute("SELECT user FROM members WHERE conv = ? ORDER BY user", (conv_id,)))
    return Conversation(id=row[0], members=members, title=row[1], kind=row[2], created_by=row[3], created_ts=row[4])
