"""SQLite DeviceStore: its own table, in any SQLite file (may be the store's).

Like the SQLite store, every call runs on the connection's own thread
(:class:`switchboard.db.sqlite.SqliteExecutor`), so the event loop never
waits on disk.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from switchboard import ids
from switchboard.db.sqlite import SqliteExecutor
from switchboard.devices import Device, check_token

# Seconds a write waits for another process's lock (the pusher and a second
# one, or the archiver on a shared file): a registration is one short upsert.
BUSY_TIMEOUT = 5.0

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
        self._ex = SqliteExecutor(self.path, name="sb-devices", schema=_SCHEMA, busy_timeout=BUSY_TIMEOUT)
        self._run = self._ex.run

    async def open(self) -> None:
        await self._ex.open()

    async def close(self) -> None:
        await self._ex.close()

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
