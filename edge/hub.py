"""Shared subscriptions: one per connected user, one per large group, per edge.

"Deliver to Bob" is "publish to Bob's subject": the edge subscribes to
``sb.user.<uid>.live`` once per connected user (not per socket) and hands each
message to every socket of that user without awaiting any of them. Members
of a large group (pull mode) additionally share one subscription per group
to ``sb.conv.<conv>.live``. Handlers run inline in the NATS read loop
(:mod:`switchboard.bus.fastsub`): they only append to socket buffers.
"""

from __future__ import annotations

from typing import Callable, Protocol

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg as NatsMsg
from nats.aio.subscription import Subscription

from switchboard.bus.fastsub import subscribe_inline
from switchboard.subjects import Subjects


class Receiver(Protocol):
    def on_bus_message(self, msg: NatsMsg) -> None: ...

    def on_conv_message(self, msg: NatsMsg) -> None: ...


class _Entry:
    __slots__ = ("sub", "sockets")

    def __init__(self) -> None:
        self.sub: Subscription | None = None
        self.sockets: set[Receiver] = set()


class _Table:
    """Subscriptions keyed by user or conversation, each shared by sockets."""

    def __init__(self, *, nc: NATS, subject_of: Callable[[str], str],
                 handler_of: Callable[[Receiver], Callable[[NatsMsg], None]]) -> None:
        self._nc = nc
        self._subject_of = subject_of
        self._handler_of = handler_of  # which method of a socket gets the messages
        self.entries: dict[str, _Entry] = {}

    async def attach(self, key: str, socket: Receiver) -> bool:
        entry = self.entries.get(key)
        first = entry is None
        if entry is None:
            entry = self.entries[key] = _Entry()
        entry.sockets.add(socket)
        if first:
            sockets, handler_of = entry.sockets, self._handler_of

            def deliver(msg: NatsMsg) -> None:
                for s in tuple(sockets):
                    handler_of(s)(msg)

            entry.sub = await subscribe_inline(self._nc, self._subject_of(key), deliver)
        return first

    async def detach(self, key: str, socket: Receiver) -> bool:
        entry = self.entries.get(key)
        if entry is None:
            return False
        entry.sockets.discard(socket)
        if entry.sockets:
            return False
        del self.entries[key]
        if entry.sub is not None:
            try:
                await entry.sub.unsubscribe()
            except Exception:  # noqa: BLE001 - connection already closed
                pass
        return True


class Hub:
    def __init__(self, *, nc: NATS, subjects: Subjects) -> None:
        self._users = _Table(nc=nc, subject_of=subjects.live, handler_of=lambda s: s.on_bus_message)
        self._convs = _Table(nc=nc, subject_of=subjects.conv_live, handler_of=lambda s: s.on_conv_message)

    @property
    def users(self) -> int:
        return len(self._users.entries)

    def sockets_of(self, user: str) -> int:
        e = self._users.entries.get(user)
        return len(e.sockets) if e else 0

    async def attach(self, user: str, socket: Receiver) -> bool:
        """Add a socket; subscribe if it is the user's first here. True if so."""
        return await self._users.attach(user, socket)

    async def detach(self, user: str, socket: Receiver) -> bool:
        """Remove a socket; unsubscribe if it was the user's last. True if so."""
        return await self._users.detach(user, socket)

    async def attach_conv(self, conv: str, socket: Receiver) -> None:
        """Subscribe a socket to a large group's republished MESSAGES subject."""
        await self._convs.attach(conv, socket)

    async def detach_conv(self, conv: str, socket: Receiver) -> None:
        await self._convs.detach(conv, socket)
