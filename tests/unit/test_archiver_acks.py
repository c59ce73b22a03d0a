"""archiver.acks: the delivery metadata in a JetStream ack subject, both formats."""

from __future__ import annotations

import pytest

from archiver.acks import Delivery, delivery


def test_v1_ack_subject() -> None:
    # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>
    d = delivery("$JS.ACK.MESSAGES.archiver.3.1207.88.1764430000000000000.12")
    assert d == Delivery(stream="MESSAGES", consumer="archiver", delivered=3, stream_seq=1207, consumer_seq=88)


@pytest.mark.parametrize("tail", ["", ".Zq8v"])  # with and without the random token
def test_v2_ack_subject_with_domain_and_account(tail: str) -> None:
    d = delivery(f"$JS.ACK.hub.ACCHASH.MESSAGES.archiver.1.42.7.1764430000000000000.0{tail}")
    assert d == Delivery(stream="MESSAGES", consumer="archiver", delivered=1, stream_seq=42, consumer_seq=7)


@pytest.mark.parametrize("reply", [
    "", "_INBOX.abc.1", "$JS.ACK.MESSAGES.archiver.1.2", "$JS.NAK.MESSAGES.archiver.3.1207.88.1.12",
    "$JS.ACK.MESSAGES.archiver.x.1207.88.1764430000000000000.12",
])
def test_not_an_ack_subject(reply: str) -> None:
    with pytest.raises(ValueError):
        delivery(reply)
