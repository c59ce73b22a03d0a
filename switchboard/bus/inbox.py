"""One wildcard reply subscription for the answers of many requests.

Request n's reply subject is ``<inbox>.<n>``; one ``<inbox>.*`` subscription
on a :class:`~switchboard.bus.conn.BusConnection` takes every answer and the
handler reads n back with :meth:`ReplyInbox.token`. Used by the readers that
collect several messages per request (:mod:`switchboard.bus.directread`,
:mod:`archiver.puller`); :class:`switchboard.bus.replies.Replies` keeps its
own copy of the three lines on the hot path.
"""

from __future__ import annotations

from collections.abc import Callable

from switchboard.bus.conn import BusConnection, BusMsg


class ReplyInbox:
    __slots__ = ("_conn", "_handler", "prefix", "_plen", "_sid")

    def __init__(self, conn: BusConnection, handler: Callable[[BusMsg], None]) -> None:
        self._conn = conn
        self._handler = handler
        self.prefix = conn.new_inbox() + "."  # + str(n): request n's reply subject
        self._plen = len(self.prefix)
        self._sid: int | None = None

    @property
    def active(self) -> bool:
        return self._sid is not None

    def start(self) -> None:
        if self._sid is None:
            self._sid = self._conn.subscribe(self.prefix + "*", self._handler)

    def stop(self) -> None:
        if self._sid is not None:
            self._conn.unsubscribe(self._sid)
            self._sid = None

    def token(self, subject: str) -> str:
        """n of a reply subject ``<inbox>.<n>``."""
        return subject[self._plen:]
