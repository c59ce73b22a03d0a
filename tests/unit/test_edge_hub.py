"""edge.hub without a server: what a user's and a large group's subscriptions
forward to sockets, and what they drop and count (issue 8 item 2).

Protects: a frame reaches a socket as a stored message only from the live
subject (the INBOX republish) with a Nats-Sequence header; an ephemeral event
only on the subject of its kind; a large group's subject only carries msg
frames. Before the fix the edge forwarded anything without Nats-Sequence on
``sb.user.<uid>.live`` untouched (a forged, never-stored ``msg``).
"""

from __future__ import annotations

import json

import pytest

from edge.hub import Hub
from switchboard import frames
from switchboard.bus.conn import BusMsg, encode_headers
from switchboard.subjects import Subjects

S = Subjects("sb")


class FakeBus:
    def __init__(self) -> None:
        self.subs: dict[int, tuple[str, object]] = {}
        self._sid = 0

    def subscribe(self, subject, handler, *, queue=None) -> int:
        self._sid += 1
        self.subs[self._sid] = (subject, handler)
        return self._sid

    def unsubscribe(self, sid: int) -> None:
        self.subs.pop(sid, None)

    def deliver(self, subject: str, data: bytes, headers: dict[str, str] | None = None) -> None:
        msg = BusMsg(subject, "", data, encode_headers(headers) if headers else b"")
        for sub_subject, handler in list(self.subs.values()):
            if _matches(sub_subject, subject):
                handler(msg)  # type: ignore[operator]


def _matches(pattern: str, subject: str) -> bool:
    p, s = pattern.split("."), subject.split(".")
    return len(p) == len(s) and all(a in ("*", b) for a, b in zip(p, s))


class Sock:
    def __init__(self) -> None:
        self.stored: list[bytes] = []
        self.events: list[tuple[bytes, str | None]] = []
        self.conv: list[bytes] = []

    def on_bus_message(self, msg: BusMsg) -> None:
        self.stored.append(msg.data)

    def on_event(self, data: bytes, large_conv: str | None) -> None:
        self.events.append((data, large_conv))

    def on_conv_message(self, msg: BusMsg) -> None:
        self.conv.append(msg.data)


MSG = frames.encode(frames.Msg(conv="c1", seq=1, id="m1", from_="alice", body="hi"))
TYPING = frames.encode(frames.TypingEvent(conv="c1", user="alice"))
PRESENCE = frames.encode(frames.Presence(user="alice", online=True))
RECEIPT = frames.encode(frames.Receipt(conv="c1", user="alice", delivered=1, read=1))
CONV = frames.encode(frames.Conv(conv="c1", members=["bob", "alice"]))
SEQ = {"Nats-Sequence": "7", "Nats-Last-Sequence": "0"}
# "type" twice, the second one escaped: a JSON parser keeps the last (msg)
TWICE = b'{"type":"presence","\\u0074ype":"msg","user":"a","online":true,"conv":"c1","seq":2,"id":"x","from":"a"}'

# (subject suffix after sb.user.bob., data, headers, forwarded as)
CASES = [
    ("live", MSG, SEQ, "stored"),
    ("live", MSG, None, None),  # a msg that was not stored (no Nats-Sequence): the forgery of item 2
    ("live", TYPING, None, None),  # events no longer travel on the live subject
    ("live", TYPING, SEQ, None),  # a stored entry is a msg
    ("ev.typing", TYPING, None, "event"),
    ("ev.presence", PRESENCE, None, "event"),
    ("ev.receipt", RECEIPT, None, "event"),
    ("ev.conv", CONV, None, "event"),
    ("ev.typing", MSG, None, None),
    ("ev.presence", MSG, SEQ, None),
    ("ev.receipt", MSG, None, None),
    ("ev.conv", MSG, None, None),
    ("ev.presence", TYPING, None, None),  # the kind of another role
    ("ev.typing", RECEIPT, None, None),
    ("ev.presence", TWICE, None, None),
    ("ev.receipt", b"not json", None, None),
    ("ev.receipt", json.dumps({"conv": "c1", "user": "a", "delivered": 1, "read": 1}).encode(), None, None),  # no type
    ("ev.unknown", TYPING, None, None),
]


@pytest.mark.parametrize("suffix,data,headers,forwarded", CASES,
                         ids=[f"{c[0]}-{i}-{c[3]}" for i, c in enumerate(CASES)])
def test_user_subjects_forward_only_what_fits(suffix, data, headers, forwarded) -> None:
    bus, dropped = FakeBus(), {}
    hub = Hub(bus=bus, subjects=S, dropped=dropped)  # type: ignore[arg-type]
    sock = Sock()
    assert hub.attach("bob", sock)
    bus.deliver(f"sb.user.bob.{suffix}", data, headers)
    stored = [data] if forwarded == "stored" else []
    events = [(data, None)] if forwarded == "event" else []
    assert (sock.stored, sock.events) == (stored, events)
    kind = "live" if suffix == "live" else "event"
    assert dropped[kind] == (0 if forwarded else 1)


def test_two_subscriptions_per_user_shared_by_sockets() -> None:
    bus = FakeBus()
    hub = Hub(bus=bus, subjects=S)  # type: ignore[arg-type]
    a, b = Sock(), Sock()
    assert hub.attach("bob", a) is True
    assert hub.attach("bob", b) is False
    assert sorted(s for s, _ in bus.subs.values()) == ["sb.user.bob.ev.*", "sb.user.bob.live"]
    bus.deliver("sb.user.bob.ev.typing", TYPING)
    assert a.events == b.events == [(TYPING, None)]
    assert hub.detach("bob", a) is False
    assert hub.detach("bob", b) is True
    assert bus.subs == {}


@pytest.mark.parametrize("header,large", [({"Sb-Large-Conv": "c1"}, "c1"), ({"Sb-Large-Conv": "other"}, None),
                                          (None, None)])
def test_large_group_notice_only_for_its_own_conversation(header, large) -> None:
    bus = FakeBus()
    hub = Hub(bus=bus, subjects=S)  # type: ignore[arg-type]
    sock = Sock()
    hub.attach("bob", sock)
    bus.deliver("sb.user.bob.ev.conv", CONV, header)
    assert sock.events == [(CONV, large)]


@pytest.mark.parametrize("data,forwarded", [(MSG, True), (TYPING, False), (b"junk", False)])
def test_large_group_subject_carries_messages_only(data, forwarded) -> None:
    bus, dropped = FakeBus(), {}
    hub = Hub(bus=bus, subjects=S, dropped=dropped)  # type: ignore[arg-type]
    sock = Sock()
    hub.attach_conv("c1", sock)
    bus.deliver("sb.conv.c1.live", data)
    assert sock.conv == ([data] if forwarded else [])
    assert dropped["conv"] == (0 if forwarded else 1)
