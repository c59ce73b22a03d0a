"""JetStream acks and delivery metadata of a pulled message, on the lean bus.

A message fetched by :class:`archiver.puller.Puller` carries its ack subject as
``reply``::

    $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>
    $JS.ACK.<domain>.<account hash>.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>[.<token>]

Acking is a plain publish of ``+ACK`` / ``+WPI`` (in progress: restart the
ack wait, no delivery spent) / ``+TERM`` (never redeliver) to that subject,
without a reply: :meth:`BusConnection.publish` appends it to the tick's one
write (nats-py paid a coroutine and a publish call per ack). The metadata is
parsed only when needed (dead letters, the delivery count of a suspect
message), not per message.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from switchboard.bus.conn import BusConnection, BusMsg

ACK = b"+ACK"
IN_PROGRESS = b"+WPI"
TERM = b"+TERM"

_V1_TOKENS = 9  # without domain
_V2_MIN_TOKENS = 11  # with domain and account hash (12 with the random token)


@dataclass(frozen=True, slots=True)
class Delivery:
    """What the ack subject says about one delivery."""

    stream: str
    consumer: str
    delivered: int  # 1 on the first delivery
    stream_seq: int
    consumer_seq: int


def delivery(reply: str) -> Delivery:
    """The :class:`Delivery` of an ack subject; ValueError if it is not one."""
    t = reply.split(".")
    if len(t) < 2 or t[0] != "$JS" or t[1] != "ACK":
        raise ValueError(f"not a JetStream ack subject: {reply[:200]!r}")
    if len(t) == _V1_TOKENS:
        i = 2
    elif len(t) >= _V2_MIN_TOKENS:
        i = 4
    else:
        raise ValueError(f"not a JetStream ack subject: {reply[:200]!r}")
    return Delivery(stream=t[i], consumer=t[i + 1], delivered=int(t[i + 2]), stream_seq=int(t[i + 3]),
                    consumer_seq=int(t[i + 4]))


def send(conn: BusConnection, items: Iterable[tuple[BusMsg, object]], what: bytes) -> None:
    """Publish ``what`` (:data:`ACK`, :data:`IN_PROGRESS`, :data:`TERM`) to the
    ack subject of each message; ``items`` are (message, anything) pairs, as
    the writer holds them (no copy of the list to ack it).

    Buffered publishes: written with the rest of this loop tick. While the
    connection is reconnecting they wait in its pending buffer (the server
    takes a late ack as long as it did not redeliver the message meanwhile);
    with that buffer full :class:`~switchboard.bus.conn.BusUnavailable` is
    raised and the message stays unacked, so it is redelivered later.
    """
    publish = conn.publish
    for m, _ in items:
        publish(m.reply, what)
