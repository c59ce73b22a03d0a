"""Per-user subscriptions shared by that user's sockets on this edge.

"Deliver to Bob" is "publish to Bob's subject": the edge subscribes to
``sb.user.<uid>.live`` once per connected user (not per socket) and hands each
message to every socket of that user without awaiting any of them.
"""

from __future__ import annotations

from typing import Protocol

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg as NatsMsg
from nats.aio.subscription import Subscription

from switchboard.bus.fastsub import subscribe_inline
from switchboard.subjects import Subjects


class Receiver(Protocol):
    def on_bus_message(self, msg: NatsMsg) -> None: ...


class _Entry:
    __slots__ = ("sub", "sockets")

    def __init__(self) -> None:
        self.sub: Subscription | None = None
        self.sockets: set[Receiver] = set()


class ConvReceiver(Protocol):
    def on_conv_message(self, msg: NatsMsg) -> None: ...


class Hub:
    def __init__(self, *, nc: NATS, subjects: Subjects) -> None:
        self._nc = nc
        self._subjects = subjects
        self._users: dict[str, _Entry] = {}
        self._convs: dict[str, _Entry] = {}  # large groups (pull mode)

    @property
    def users(self) -> int:
        return len(self._users)

    def sockets_of(self, user: str) -> int:
        e = self._users.get(user)
        return len(e.sockets) if e else 0

    async def attach(self, user: str, socket: Receiver) -> bool:
        """Add a socket; subscribe if it is the user's first here. Returns True
        if this is the user's first socket on this edge."""
        entry = self._users.get(user)
        first = entry is None
        if entry is None:
            entry = self._users[user] = _Entry()
        entry.sockets.add(socket)
        if first:
            sockets = entry.sockets

            def deliver(msg: NatsMsg) -> None:
                for s in tuple(sockets):
                    s.on_bus_message(msg)

            entry.sub = await subscribe_inline(self._nc, self._subjects.live(user), deliver)
        return first

    async def attach_conv(self, conv: str, socket: ConvReceiver) -> None:
        """Subscribe a socket to a large group's republished MESSAGES subject
        (one NATS subscription per group per edge, shared by its sockets)."""
        entry = self._convs.get(conv)
        if entry is None:
            entry = self._convs[conv] = _Entry()
            sockets = entry.sockets

            def deliver(msg: NatsMsg) -> None:
                for s in tuple(sockets):
                    s.on_conv_message(msg)

            entry.sockets.add(socket)  # type: ignore[arg-type]
            entry.sub = await subscribe_inline(self._nc, self._subjects.conv_live(conv), deliver)
        else:
            entry.sockets.add(socket)  # type: ignore[arg-type]

    async def detach_conv(self, conv: str, socket: ConvReceiver) -> None:
        entry = self._convs.get(conv)
        if entry is None:
            return
        entry.sockets.discard(socket)  # type: ignore[arg-type]
        if not entry.sockets:
            del self._convs[conv]
            if entry.sub is not None:
                try:
                    await entry.sub.unsubscribe()
                except Exception:  # noqa: BLE001 - connection already closed
                    pass

    async def detach(self, user: str, socket: Receiver) -> bool:
        """Remove a socket; unsubscribe if it was the user's last. Returns True
        if the user has no socket left on this edge."""
        entry = self._users.get(user)
        if entry is None:
            return False
        entry.sockets.discard(socket)
        if entry.sockets:
            return False
        del self._users[user]
        if entry.sub is not None:
            try:
                await entry.sub.unsubscribe()
            except Exception:  # noqa: BLE001 - connection already closed
                pass
        return True
