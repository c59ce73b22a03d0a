"""Shared subscriptions: two per connected user, one per large group, per edge.

"Deliver to Bob" is "publish to one of Bob's subjects": the edge subscribes
once per connected user (not per socket) and hands each message to every
socket of that user without awaiting any of them. Per user:

- ``sb.user.<uid>.live``: stored entries only, the INBOX republish of the
  server (no NATS user may publish there: nats/accounts.conf). Forwarded
  only with a ``Nats-Sequence`` header and as a ``msg`` frame.
- ``sb.user.<uid>.ev.*``: ephemeral events, one subject per kind
  (``ev.typing`` from edges, ``ev.presence`` from the tracker,
  ``ev.receipt`` and ``ev.conv`` from the sequencer; each kind publishable
  only by its role). Forwarded only if the frame's type is the one of its
  subject; a ``msg`` never comes this way.

Members of a large group (pull mode) additionally share one subscription per
group to ``sb.conv.<conv>.live`` (published by the sequencer only, after
storage): forwarded only as ``msg`` frames.

What does not fit is dropped and counted (``dropped``, by subject kind:
``live``, ``event``, ``conv``; exported as
``switchboard_edge_bus_frames_dropped_total``). The checks run once per
delivery (not per socket): a header lookup and a byte-prefix comparison for
stored messages (on the raw header bytes), a typed decode of the (small) event frames, whose duplicate
or escaped ``type`` keys would otherwise slip past a prefix check.

Why two subscriptions and not one to ``sb.user.<uid>.>``: that one would
also receive the sequencer's raw INBOX writes (``sb.user.<uid>.inbox``), a
second copy of every message on the hot path. The second subscription is
cheap: ``switchboard bench idle --connections 2000`` (one user per
connection) measured 11.30 / 11.02 KiB of edge RSS per idle connection with
one subscription per user and 11.35 / 11.64 KiB with two (about +0.3 KiB).

Subscriptions are on the edge's lean bus connection
(:mod:`switchboard.bus.conn`): subscribing is synchronous and handlers run
inline in its read, where they only append to socket buffers. A SUB takes
effect once the server has read it: a caller that must not miss what is
published right after (the hello's INBOX read, on another connection)
awaits ``bus.flush()`` when attach returns True.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import msgspec

from switchboard import frames
from switchboard.bus.conn import BusConnection, BusMsg
from switchboard.bus.proto import header_key
from switchboard.subjects import EV_CONV, EV_PRESENCE, EV_RECEIPT, EV_TYPING, Subjects

# Every stored message is a frames.Msg, encoded with its tag first.
MSG_PREFIX = b'{"type":"msg",'
# The frame type each event subject may carry.
EVENT_FRAMES: dict[str, type] = {
    EV_TYPING: frames.TypingEvent,
    EV_PRESENCE: frames.Presence,
    EV_RECEIPT: frames.Receipt,
    EV_CONV: frames.Conv,
}
# A stored entry's header block has this line (INBOX's republish); looked
# for in the raw bytes, the block is not parsed (switchboard.bus.proto.header_at;
# edge.session reads the value with the same key).
NATS_SEQUENCE_LINE = header_key(b"Nats-Sequence")
# A conversation notice with this header (its value = the conversation)
# subscribes the members' sockets to a large group's subject.
LARGE_CONV_HEADER = "Sb-Large-Conv"

_decode = frames.decode_server_frame


class Receiver(Protocol):
    def on_bus_message(self, msg: BusMsg) -> None: ...

    def on_event(self, data: bytes, large_conv: str | None) -> None: ...

    def on_conv_message(self, msg: BusMsg) -> None: ...


class _Entry:
    __slots__ = ("sids", "sockets")

    def __init__(self) -> None:
        self.sids: tuple[int, ...] = ()
        self.sockets: set[Receiver] = set()


Deliveries = Callable[[str, set[Receiver]], list[tuple[str, Callable[[BusMsg], None]]]]


class _Table:
    """Subscriptions keyed by user or conversation, each shared by sockets.
    ``deliveries(key, sockets)`` names the subjects of a key and the handler
    of each (handed the set of sockets, which attach/detach keep current)."""

    def __init__(self, *, bus: BusConnection, deliveries: Deliveries) -> None:
        self._bus = bus
        self._deliveries = deliveries
        self.entries: dict[str, _Entry] = {}

    def attach(self, key: str, socket: Receiver) -> bool:
        entry = self.entries.get(key)
        first = entry is None
        if entry is None:
            entry = self.entries[key] = _Entry()
        entry.sockets.add(socket)
        if first:
            sids: list[int] = []
            try:
                for subject, deliver in self._deliveries(key, entry.sockets):
                    sids.append(self._bus.subscribe(subject, deliver))
            except Exception:
                for sid in sids:
                    self._bus.unsubscribe(sid)
                del self.entries[key]
                raise
            entry.sids = tuple(sids)
        return first

    def detach(self, key: str, socket: Receiver) -> bool:
        entry = self.entries.get(key)
        if entry is None:
            return False
        entry.sockets.discard(socket)
        if entry.sockets:
            return False
        del self.entries[key]
        for sid in entry.sids:
            self._bus.unsubscribe(sid)  # a no-op on a closed connection
        return True


class Hub:
    def __init__(self, *, bus: BusConnection, subjects: Subjects, dropped: dict[str, int] | None = None,
                 presence: dict[str, int] | None = None) -> None:
        self._subjects = subjects
        # Frames refused by the checks above, by subject kind (plain ints:
        # hot path; exported at scrape by edge.metrics).
        self.dropped = dropped if dropped is not None else {}
        for kind in ("live", "event", "conv"):
            self.dropped.setdefault(kind, 0)
        # Presence fan-out: "events" from the tracker, "frames" handed to
        # sockets (plain ints, exported by edge.metrics).
        self.presence = presence if presence is not None else {}
        for kind in ("events", "frames"):
            self.presence.setdefault(kind, 0)
        self._users = _Table(bus=bus, deliveries=self._user_deliveries)
        self._convs = _Table(bus=bus, deliveries=self._conv_deliveries)

    # -- what arrives, checked once per delivery --------------------------------
    def _user_deliveries(self, user: str, sockets: set[Receiver]) -> list[tuple[str, Callable[[BusMsg], None]]]:
        dropped = self.dropped
        presence = self.presence

        def live(msg: BusMsg) -> None:
            if msg.hdr.find(NATS_SEQUENCE_LINE) < 0 or not msg.data.startswith(MSG_PREFIX):
                dropped["live"] += 1
                return
            if len(sockets) == 1:
                for s in sockets:
                    s.on_bus_message(msg)
            else:
                for s in tuple(sockets):
                    s.on_bus_message(msg)

        def event(msg: BusMsg) -> None:
            expected = EVENT_FRAMES.get(msg.subject.rpartition(".")[2])
            try:
                frame = _decode(msg.data) if expected is not None else None
            except msgspec.DecodeError:
                frame = None
            if frame is None or type(frame) is not expected:
                dropped["event"] += 1
                return
            large = None
            if expected is frames.Conv:
                h = msg.headers
                if h is not None and h.get(LARGE_CONV_HEADER) == frame.conv:  # type: ignore[union-attr]
                    large = frame.conv  # type: ignore[union-attr]
            elif expected is frames.Presence:
                presence["events"] += 1
                presence["frames"] += len(sockets)
            data = msg.data
            if len(sockets) == 1:
                for s in sockets:
                    s.on_event(data, large)
            else:
                for s in tuple(sockets):
                    s.on_event(data, large)

        return [(self._subjects.live(user), live), (self._subjects.user_events(user), event)]

    def _conv_deliveries(self, conv: str, sockets: set[Receiver]) -> list[tuple[str, Callable[[BusMsg], None]]]:
        dropped = self.dropped

        def deliver(msg: BusMsg) -> None:
            if not msg.data.startswith(MSG_PREFIX):
                dropped["conv"] += 1
                return
            for s in tuple(sockets):
                s.on_conv_message(msg)

        return [(self._subjects.conv_live(conv), deliver)]

    # -- sockets come and go --------------------------------------------------------
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
        """Subscribe a socket to a large group's subject (sequencer-published messages)."""
        return self._convs.attach(conv, socket)

    def detach_conv(self, conv: str, socket: Receiver) -> None:
        self._convs.detach(conv, socket)
