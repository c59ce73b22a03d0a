"""SQLite DeviceStore: its own table, in any SQLite file (may be the store's).

Like the SQLite store, every call runs on one dedicated thread that owns the
connection, so the event loop never waits on disk.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, TypeVar

from switchboard.store.sqlite import wal_mode
from switchboard import ids
from switchboard.devices import Device, check_token

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS push_devices (
    platform TEXT NOT NULL,
    token TEXT NOT NULL,
    user TEXT NOT NULL,
    registered_ns INTEGER NOT NULL,
    PRIMARY KEY (platform, token)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS push_devices_by_user ON push_devices (user, registered_ns);
"""


class SqliteDeviceStore:
    """See :class:`switchboard.devices.DeviceStore` for the contract."""

    def __init__(self, *, path: str | Path) -> None:
        self.path = str(path)
        self._db: sqlite3.Connection | None = None
        self._pool: ThreadPoolExecutor | None = None

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        assert self._pool is not None and self._db is not None, "device store not open"
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, self._db)

    async def open(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sb-devices")

        def _open() -> sqlite3.Connection:
            # timeout = busy timeout, before the first statement: another process
            # writing (or opening) the file at once: queue, don't fail.
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=5.0)
            wal_mode(db)
            db.executescript(_SCHEMA)
            return db

        self._db = await asyncio.get_running_loop().run_in_executor(self._pool, _open)

    async def close(self) -> None:
        if self._db is not None:
            await self._run(lambda db: db.close())
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._db, self._pool = None, None

    async def register(self, user: str, platform: str, token: str) -> Device:
        ids.check(user, "user")
        device = Device(platform, check_token(platform, token))
        now = time.time_ns()

        def _reg(db: sqlite3.Connection) -> None:
            # Same owner: keep the row (and its registration time). Other owner: move it.
            db.execute(
                "INSERT INTO push_devices (platform, token, user, registered_ns) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (platform, token) DO UPDATE SET user = excluded.user, "
                "registered_ns = excluded.registered_ns WHERE push_devices.user != excluded.user",
                (device.platform, device.token, user, now))

        await self._run(_reg)
        return device

    async def tokens_of(self, user: str) -> list[Device]:
        rows = await self._run(lambda db: db.execute(
            "SELECT platform, token FROM push_devices WHERE user = ? ORDER BY registered_ns, platform, token",
            (user,)).fetchall())
        return [Device(p, t) for p, t in rows]

    async def remove(self, platform: str, token: str) -> None:
        await self._run(lambda db: db.execute(
            "DELETE FROM push_devices WHERE platform = ? AND token = ?", (platform, token)))
