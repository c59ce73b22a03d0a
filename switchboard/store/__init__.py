"""The store: conversation metadata and the message archive.

A backend is chosen by URL scheme (``sqlite:///path``,
``cassandra://host1,host2/keyspace``); :func:`open_store` rejects anything else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import msgspec

from switchboard.errors import ConfigError
from switchboard.frames import Msg


class Conversation(msgspec.Struct, frozen=True):
    id: str
    members: tuple[str, ...]
    title: str = ""
    kind: str = "group"  # "dm" (1:1, id derived from the pair) or "group"
    created_by: str = ""
    created_ts: int = 0


class Watermark(msgspec.Struct, frozen=True):
    """A member's receipt state in a conversation: delivered / read up to seq."""

    conv: str
    user: str
    delivered: int = 0
    read: int = 0


@runtime_checkable
class Store(Protocol):
    """Conversation metadata and the message archive.

    Contract (the suite in tests/contract/test_store.py checks every backend):

    - ``create_conversation`` is idempotent by id: if the id exists, nothing
      changes and the stored conversation is returned with ``False``; otherwise
      it is stored and returned with ``True``. Members are a set (order and
      duplicates in the input do not matter; the result is sorted).
    - ``append_messages`` is idempotent by (conv, seq): writing a message that
      is already stored (a redelivery) leaves the stored one as it is. A batch
      may mix conversations. When it returns, every message is durable.
    - ``messages`` returns at most ``limit`` messages of one conversation in
      ascending seq order: the newest ones below ``before`` when ``before`` is
      given (and ``after`` is not), otherwise the oldest ones above ``after``
      (0 when absent). Both bounds are exclusive.
    - ``last_seq`` is the highest stored seq of a conversation, 0 if none.
    - ``conversations_of`` lists the ids of the conversations a user belongs to.
    - ``merge_watermarks`` is a monotonic merge: each stored value becomes the
      max of itself and the written one (a stale or repeated receipt changes
      nothing). ``watermarks`` returns every member's stored state of a
      conversation (members without any receipt are absent).
    """

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def create_conversation(self, conv: Conversation) -> tuple[Conversation, bool]: ...

    async def get_conversation(self, conv_id: str) -> Conversation | None: ...

    async def conversations_of(self, user: str) -> list[str]: ...

    async def append_messages(self, msgs: Sequence[Msg]) -> None: ...

    async def messages(self, conv_id: str, *, before: int | None = None, after: int | None = None,
                       limit: int = 50) -> list[Msg]: ...

    async def last_seq(self, conv_id: str) -> int: ...

    async def merge_watermarks(self, marks: Sequence[Watermark]) -> None: ...

    async def watermarks(self, conv_id: str) -> list[Watermark]: ...


def open_store(url: str, **options: Any) -> Store:
    """Build (not yet open) the store backend named by ``url``."""
    scheme, _, rest = url.partition("://")
    if scheme == "sqlite":
        from switchboard.store.sqlite import SqliteStore

        # sqlite:///relative.db and sqlite:////absolute/path.db, as SQLAlchemy does
        return SqliteStore(path=rest[1:] if rest.startswith("/") else rest, **options)
    if scheme == "cassandra":
        from switchboard.store.cassandra import CassandraStore

        return CassandraStore.from_url(url, **options)
    raise ConfigError(f"unknown store URL scheme {scheme!r} in {url!r}; use sqlite:// or cassandra://")
