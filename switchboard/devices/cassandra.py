"""Cassandra DeviceStore: device tokens next to the archive, for several pushers.

Two tables, both keyed for one read each:

- ``devices_by_user ((user), registered, platform, token)``: a user's devices
  in registration order (``registered`` = microseconds, made unique per
  process);
- ``device_owner ((platform, token)) -> user, registered``: who holds a token,
  so a token moving to another user, and a dead token, find their row.

Writes are plain upserts and deletes (no LWT): two registrations of one token
racing for two users may leave it listed under both until the next
registration or removal of that token (both users' notifications then reach
that device). Rare; documented in docs/push.md.
"""

from __future__ import annotations

import time
from typing import Any

from switchboard import ids
from switchboard.db.cql import CqlSession, parse_url
from switchboard.devices import Device, check_token


def _tables(ks: str) -> list[str]:
    # `token` is a CQL keyword (the token() function): the column is device_token.
    return [
        f"CREATE TABLE IF NOT EXISTS {ks}.devices_by_user (user text, registered bigint, platform text,"
        " device_token text, PRIMARY KEY ((user), registered, platform, device_token))",
        f"CREATE TABLE IF NOT EXISTS {ks}.device_owner (platform text, device_token text, user text,"
        " registered bigint, PRIMARY KEY ((platform, device_token)))",
    ]


def _statements(ks: str) -> dict[str, str]:
    return {
        "owner_get": f"SELECT user, registered FROM {ks}.device_owner WHERE platform = ? AND device_token = ?",
        "owner_put": f"INSERT INTO {ks}.device_owner (platform, device_token, user, registered)"
                     " VALUES (?, ?, ?, ?)",
        "owner_del": f"DELETE FROM {ks}.device_owner WHERE platform = ? AND device_token = ?",
        "dev_put": f"INSERT INTO {ks}.devices_by_user (user, registered, platform, device_token)"
                   " VALUES (?, ?, ?, ?)",
        "dev_del": f"DELETE FROM {ks}.devices_by_user WHERE user = ? AND registered = ? AND platform = ?"
                   " AND device_token = ?",
        "dev_list": f"SELECT platform, device_token FROM {ks}.devices_by_user WHERE user = ?",
    }


class CassandraDeviceStore:
    """See :class:`switchboard.devices.DeviceStore` for the contract."""

    def __init__(self, *, url: str) -> None:
        self._cql = CqlSession(parse_url(url))  # connection, keyspace and async bridge (switchboard/db/cql.py)
        self._ps: dict[str, Any] = {}
        self._last_us = 0

    async def open(self) -> None:
        if self._cql.is_open:
            return
        ks = self._cql.keyspace
        self._ps = await self._cql.open(tables=_tables(ks), statements=_statements(ks))  # all idempotent

    async def close(self) -> None:
        await self._cql.close()

    def _now_us(self) -> int:
        self._last_us = max(time.time_ns() // 1000, self._last_us + 1)
        return self._last_us

    async def _owner(self, platform: str, token: str) -> tuple[str, int] | None:
        rows = await self._cql.execute(self._ps["owner_get"], (platform, token))
        return (rows[0].user, rows[0].registered) if rows else None

    async def register(self, user: str, platform: str, token: str) -> Device:
        ids.check(user, "user")
        device = Device(platform, check_token(platform, token))
        owner = await self._owner(device.platform, device.token)
        if owner is not None and owner[0] == user:
            return device  # already registered to this user: no-op
        if owner is not None:  # the token moves to its new user
            await self._cql.execute(self._ps["dev_del"], (owner[0], owner[1], device.platform, device.token))
        now = self._now_us()
        await self._cql.execute(self._ps["owner_put"], (device.platform, device.token, user, now))
        await self._cql.execute(self._ps["dev_put"], (user, now, device.platform, device.token))
        return device

    async def tokens_of(self, user: str) -> list[Device]:
        rows = await self._cql.execute(self._ps["dev_list"], (user,), all_pages=True)
        return [Device(r.platform, r.device_token) for r in rows]

    async def remove(self, platform: str, token: str) -> None:
        owner = await self._owner(platform, token)
        if owner is None:
            return
        await self._cql.execute(self._ps["dev_del"], (owner[0], owner[1], platform, token))
        await self._cql.execute(self._ps["owner_del"], (platform, token))
