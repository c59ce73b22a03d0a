"""Conversations: creation, lookup and membership, cached in front of the store.

Membership is immutable in protocol v1 (no add/remove frames), so a cached
conversation never goes stale; the cache is bounded and simply refilled from
the store.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import OrderedDict

from sequencer.quotas import UserQuota
from switchboard import ids
from switchboard.errors import LimitExceeded, NotFound, NotMember
from switchboard.store import Conversation, Store

# Conversations of a watcher looked at by contacts() (whose members' presence
# it may see): bounds one query's store reads; a user in more conversations
# sees the members of the first this many the store lists.
MAX_CONVS_FOR_CONTACTS = 1000
CONTACTS_BATCH = 64  # conversations loaded at once (cache misses read the store concurrently)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Conversations:
    def __init__(self, *, store: Store, max_members: int, cache_size: int = 100_000,
                 create_per_min: int = 0) -> None:
        self._store = store
        self._max_members = max_members
        self._cache: OrderedDict[str, Conversation] = OrderedDict()
        self._cache_size = cache_size
        self._member_sets: dict[str, frozenset[str]] = {}  # conv -> members, for contacts(); same bound
        # conv.create per creator per minute (0: no limit)
        self.create_quota = UserQuota(create_per_min, what="new groups") if create_per_min > 0 else None

    def _remember(self, conv: Conversation) -> Conversation:
        self._cache[conv.id] = conv
        self._cache.move_to_end(conv.id)
        if len(self._cache) > self._cache_size:
            old, _ = self._cache.popitem(last=False)
            self._member_sets.pop(old, None)
        return conv

    async def get(self, conv_id: str) -> Conversation | None:
        conv = self._cache.get(conv_id)
        if conv is not None:
            return conv
        conv = await self._store.get_conversation(conv_id)
        return self._remember(conv) if conv is not None else None

    async def for_send(self, *, conv_id: str, sender: str, to: str | None, system: bool) -> Conversation:
        """The conversation a send goes to, creating a 1:1 one on first use."""
        conv = await self.get(conv_id)
        if conv is None and to is not None and not system:
            if ids.dm_conv(sender, to) != conv_id:
                raise NotFound(f"conversation {conv_id} is not the 1:1 of {sender} and {to}")
            conv, _ = await self._store.create_conversation(Conversation(
                id=conv_id, members=tuple(sorted({sender, to})), kind="dm", created_by=sender,
                created_ts=now_ms()))
            self._remember(conv)
        if conv is None:
            raise NotFound(f"no conversation {conv_id}")
        if not system and sender not in conv.members:
            raise NotMember(f"{sender} is not a member of {conv_id}")
        return conv

    async def create(self, *, creator: str, members: list[str], title: str, conv_id: str | None) -> Conversation:
        ids.check(creator, "user")
        for m in members:
            ids.check(m, "user")
        everyone = sorted(set(members) | {creator})
        if len(everyone) > self._max_members:
            raise LimitExceeded(f"a conversation has at most {self._max_members} members")
        if len(title) > 256:
            raise LimitExceeded("title is longer than 256 characters")
        cid = ids.check(conv_id, "conv") if conv_id else "g-" + secrets.token_urlsafe(15)
        # Users get generated ids; a backend service that names its groups
        # (conv_id) is trusted and not counted.
        if self.create_quota is not None and not conv_id and not self.create_quota.take(creator):
            raise self.create_quota.refusal(creator)
        conv, _ = await self._store.create_conversation(Conversation(
            id=cid, members=tuple(everyone), title=title, kind="group", created_by=creator, created_ts=now_ms()))
        return self._remember(conv)

    async def contacts(self, user: str, users: list[str]) -> list[str]:
        """Those of ``users`` who share a conversation with ``user`` (in the
        order given; ``user`` itself always): whose presence ``user`` may see.

        Looks at up to MAX_CONVS_FOR_CONTACTS of ``user``'s conversations,
        loading them CONTACTS_BATCH at a time, and stops as soon as every one
        asked for was found."""
        ids.check(user, "user")
        wanted = {ids.check(u, "user") for u in users}
        found = {user} & wanted
        wanted -= found
        cids = (await self._store.conversations_of(user))[:MAX_CONVS_FOR_CONTACTS] if wanted else []
        for i in range(0, len(cids), CONTACTS_BATCH):
            chunk = cids[i:i + CONTACTS_BATCH]
            for conv in await asyncio.gather(*(self.get(c) for c in chunk)):
                if conv is None:
                    continue
                members = self._member_sets.get(conv.id)
                if members is None:
                    members = self._member_sets[conv.id] = frozenset(conv.members)
                hit = wanted & members
                if hit:
                    found |= hit
                    wanted -= hit
            if not wanted:
                break
        return [u for u in dict.fromkeys(users) if u in found]

    async def get_for(self, conv_id: str, user: str | None) -> Conversation:
        conv = await self.get(conv_id)
        if conv is None:
            raise NotFound(f"no conversation {conv_id}")
        if user is not None and user not in conv.members:
            raise NotMember(f"{user} is not a member of {conv_id}")
        return conv
