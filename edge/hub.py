"""Shared subscriptions: one per connected user, one per large group, per edge.

"Deliver to Bob" is "publish to Bob's subject": the edge subscribes to
``sb.user.<uid>.live`` once per connected user (not per socket) and hands each
message to every socket of that user without awaiting any of them. Members
of a large group (pull mode) additionally share one subscription per group
to ``sb.conv.<conv>.live``. Subscriptions are on the edge's lean bus
connection (:mod:`switchboard.bus.conn`): subscribing is synchronous and
handlers run inline in its read, where they only append to socket buffers.
A SUB takes effect once the server has read it: a caller that must not miss
what is published right after (the hello's INBOX read, on another
connection) awaits ``bus.flush()`` when attach returns True.
"""

from __future__ import annotations

from typing import Callable, Protocol

from switchboard.bus.conn import BusConnection, BusMsg
from switchboard.subjects import Subjects


class Receiver(Protocol):
    def on_bus_message(self, msg: BusMsg) -> None: ...

    def on_conv_message(self, msg: BusMsg) -> None: ...


class _Entry:
    __slots__ = ("sid", "sockets")

    def __init__(self) -> None:
        self.sid = 0
        self.sockets: set[Receiver] = set()


class _Table:
    """Subscriptions keyed by user or conversation, each shared by sockets."""

    def __init__(self, *, bus: BusConnection, subject_of: Callable[[str], str],
                 handler_of: Callable[[Receiver], Callable[[BusMsg], None]]) -> None:
        self._bus = bus
        self._subject_of = subject_of
        self._handler_of = handler_of  # which method of a socket gets the messages
        self.entries: dict[str, _Entry] = {}

    def attach(self, key: str, socket: Receiver) -> bool:
        entry = self.entries.get(key)
        first = entry is None
        if entry is None:
            entry = self.entries[key] = _Entry()
        entry.sockets.add(socket)
        if first:
            sockets, handler_of = entry.sockets, self._handler_of

            def deliver(msg: BusMsg) -> None:
                if len(sockets) == 1:
                    for s in sockets:
                        handler_of(s)(msg)
                else:
                    for s in tuple(sockets):
                        handler_of(s)(msg)

            try:
                entry.sid = self._bus.subscribe(self._subject_of(key), deliver)
            except Exception:
                del self.entries[key]
                raise
        return first

    def detach(self, key: str, socket: Receiver) -> bool:
        entry = self.entries.get(key)
        if entry is None:
            return False
        entry.sockets.discard(socket)
        if entry.sockets:
            return False
        del self.entries[key]
        self._bus.unsubscribe(entry.sid)  # a no-op on a closed connection
        return True


class Hub:
    def __init__(self, *, bus: BusConnection, subjects: Subjects) -> None:
        self._users = _Table(bus=bus, subject_of=subjects.live, handler_of=lambda s: s.on_bus_message)
        self._convs = _Table(bus=bus, subject_of=subjects.conv_live, handler_of=lambda s: s.on_conv_message)

    @property
    def users(self) -> int:
        return len(self._users.entries)

    def sockets_of(self, user: str) -> int:
        e = self._users.entries.get(user)
        return len(e.sockets) if e else 0

    def attach(self, user: str, socket: Receiver) -> bool:
        """Add a socket; subscribe if it is the user's first here. True if so."""
        return self._users.attach(user, socket)

    def detach(self, user: str, socket: Receiver) -> bool:
        """Remove a socket; unsubscribe if it was the user's last. True if so."""
        return self._users.detach(user, socket)

    def attach_conv(self, conv: str, socket: Receiver) -> bool:
        """Subscribe a socket to a large group's republished MESSAGES subject."""
        return self._convs.attach(conv, socket)

    def detach_conv(self, conv: str, socket: Receiver) -> None:
        self._convs.detach(conv, socket)
