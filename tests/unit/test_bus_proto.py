"""switchboard.bus.proto: the sans-I/O NATS parser and encoders."""

from __future__ import annotations

import pytest

from switchboard.bus import proto
from switchboard.bus.proto import (
    OP_ERR,
    OP_INFO,
    OP_OK,
    OP_PING,
    OP_PONG,
    BusMsg,
    Parser,
    ProtocolError,
    encode_headers,
    header_at,
    header_key,
    header_value,
    parse_headers,
)


class Collect:
    """A parser with every sid 1..9 collected into one list, ops into another."""

    def __init__(self) -> None:
        self.msgs: list[tuple[int, BusMsg]] = []
        self.ops: list[tuple[int, object]] = []
        handlers = {str(i).encode(): (lambda m, i=i: self.msgs.append((i, m))) for i in range(1, 10)}
        self.parser = Parser(handlers, lambda op, arg: self.ops.append((op, arg)))

    def feed(self, *chunks: bytes) -> Collect:
        for c in chunks:
            self.parser.feed(c)
        return self


BIG = bytes(range(256)) * 4096  # 1 MiB, every byte value, CRLFs inside

STREAM = (
    b'INFO {"server_id":"X","max_payload":1048576,"headers":true,"nonce":"abc"}\r\n'
    b"PING\r\n"
    b"MSG a.b 1 5\r\nhello\r\n"
    b"MSG a.c 2 _INBOX.x.1 0\r\n\r\n"
    b"HMSG h.s 3 24 29\r\nNATS/1.0\r\nK: v\r\nX: y\r\n\r\nworld\r\n"
    b"HMSG r.s 4 _INBOX.y.7 16 16\r\nNATS/1.0 503\r\n\r\n\r\n"
    b"+OK\r\n"
    b"MSG a.b 1 4\r\n\r\n\r\n\r\n"
    b"PONG\r\n"
    b"-ERR 'Permissions Violation for Publish to \"x\"'\r\n"
    b"MSG big 5 " + str(len(BIG)).encode() + b"\r\n" + BIG + b"\r\n"
    b"MSG ignored.sid 42 3\r\nabc\r\n"
    b"MSG tail 1 1\r\nz\r\n"
)


def check_stream(c: Collect) -> None:
    assert [(i, m.subject, m.reply, m.data, m.hdr) for i, m in c.msgs] == [
        (1, "a.b", "", b"hello", b""),
        (2, "a.c", "_INBOX.x.1", b"", b""),
        (3, "h.s", "", b"world", b"NATS/1.0\r\nK: v\r\nX: y\r\n\r\n"),
        (4, "r.s", "_INBOX.y.7", b"", b"NATS/1.0 503\r\n\r\n"),
        (1, "a.b", "", b"\r\n\r\n", b""),
        (5, "big", "", BIG, b""),
        (1, "tail", "", b"z", b""),
    ]
    assert c.ops == [
        (OP_INFO, {"server_id": "X", "max_payload": 1048576, "headers": True, "nonce": "abc"}),
        (OP_PING, None), (OP_OK, None), (OP_PONG, None),
        (OP_ERR, 'Permissions Violation for Publish to "x"'),
    ]
    assert c.parser.msgs == 8  # the unknown sid 42 is parsed and dropped
    assert c.parser.buffered == 0


def test_whole_stream_in_one_read() -> None:
    check_stream(Collect().feed(STREAM))


def test_split_at_every_byte_offset() -> None:
    # Everything but the 1 MiB message: split into two reads at every offset.
    small = STREAM.split(b"MSG big")[0]
    for cut in range(len(small) + 1):
        c = Collect().feed(small[:cut], small[cut:])
        assert len(c.msgs) == 5 and len(c.ops) == 5, cut
        assert c.parser.buffered == 0


def test_split_big_payload_at_many_offsets_and_byte_by_byte_frames() -> None:
    for cut in (1, 5, 11, 4096, 65536, len(STREAM) // 2, len(STREAM) - 3, len(STREAM) - 1):
        check_stream(Collect().feed(STREAM[:cut], STREAM[cut:]))
    # 64 KiB reads, as a socket would deliver the big payload
    check_stream(Collect().feed(*(STREAM[i:i + 65536] for i in range(0, len(STREAM), 65536))))
    # every frame but the big one fed one byte at a time
    c = Collect()
    small = STREAM.split(b"MSG big")[0]
    for i in range(len(small)):
        c.parser.feed(small[i:i + 1])
    assert len(c.msgs) == 5 and len(c.ops) == 5


def test_incomplete_payload_is_not_reparsed_until_complete() -> None:
    c = Collect().feed(b"MSG s 1 100000\r\n")
    for _ in range(99):
        c.parser.feed(b"x" * 1000)
    assert c.msgs == [] and c.parser.buffered == 16 + 99000
    c.feed(b"x" * 1000 + b"\r\nPING\r\n")
    assert c.msgs[0][1].data == b"x" * 100000 and c.ops == [(OP_PING, None)]


@pytest.mark.parametrize("hdr, status, desc, headers", [
    (b"NATS/1.0\r\nA: 1\r\nB:2\r\n\r\n", None, None, {"A": "1", "B": "2"}),
    (b"NATS/1.0 503\r\n\r\n", "503", None, {}),
    (b"NATS/1.0 408 Request Timeout\r\n\r\n", "408", "Request Timeout", {}),
    (b"NATS/1.0 404 No Messages\r\nNats-Pending-Messages: 3\r\n\r\n", "404", "No Messages",
     {"Nats-Pending-Messages": "3"}),
    (b"NATS/1.0\r\nK: first\r\nK: last\r\nV: a: b\r\n\r\n", None, None, {"K": "last", "V": "a: b"}),
    (b"", None, None, None),
])
def test_headers_and_status(hdr: bytes, status: str | None, desc: str | None, headers: dict | None) -> None:
    m = BusMsg("s", "", b"", hdr)
    assert m.status == status
    assert m.description == desc
    assert m.headers == headers
    assert m.headers is m.headers  # cached


REPUBLISH = (b"NATS/1.0\r\nNats-Msg-Id: dm-1:5:alice\r\nNats-Stream: SB_INBOX\r\nNats-Subject: sb.user.bob.inbox"
             b"\r\nNats-Sequence: 123\r\nNats-Time-Stamp: 2026-11-30T00:30:00Z\r\nNats-Last-Sequence: 120\r\n\r\n")


# header_value finds one field in the raw block (the edge's hot path reads
# three of an INBOX republish this way instead of parsing all seven): it must
# agree with parse_headers wherever a field appears once, and never match a
# value or a longer field name that ends with the one asked for.
@pytest.mark.parametrize("hdr, field, value", [
    (REPUBLISH, b"Nats-Sequence", b"123"),  # not Nats-Last-Sequence's value
    (REPUBLISH, b"Nats-Last-Sequence", b"120"),
    (REPUBLISH, b"Nats-Msg-Id", b"dm-1:5:alice"),  # colons inside the value
    (REPUBLISH, b"Sequence", None),  # a suffix of a field name is not that field
    (REPUBLISH, b"Sb-Trace", None),
    (b"NATS/1.0\r\nX: a\r\nY: Nats-Sequence: 9\r\n\r\n", b"Nats-Sequence", None),  # only inside a value
    (b"NATS/1.0\r\nNats-Sequence:7", b"Nats-Sequence", b"7"),  # a block cut short: up to its end
    (b"NATS/1.0\r\nK:  spaced  \r\n\r\n", b"K", b"spaced"),
    (b"NATS/1.0 503\r\n\r\n", b"Nats-Sequence", None),
])
def test_header_value(hdr: bytes, field: bytes, value: bytes | None) -> None:
    assert header_value(hdr, field) == value
    assert BusMsg("s", "", b"", hdr).header(field) == value
    raw = header_at(hdr, header_key(field))  # the edge's form: unstripped, int() and .strip() take it from there
    assert (raw.strip() if raw is not None else None) == value
    parsed = parse_headers(hdr).get(field.decode())
    assert parsed == (value.decode() if value is not None else None)


def test_header_of_a_message_without_headers() -> None:
    assert BusMsg("s", "", b"x").header(b"Nats-Sequence") is None


@pytest.mark.parametrize("bad", [
    b"BOGUS\r\n",
    b"MSG a\r\n",
    b"MSG a 1 2 3 4 5\r\n",
    b"MSG a 1 x\r\n",
    b"MSG a 1 3\r\nabcXY",  # payload not followed by CRLF
    b"HMSG a 1 9 4\r\n",  # header larger than total
    b"INFO {not json}\r\n",
])
def test_malformed_stream_raises(bad: bytes) -> None:
    with pytest.raises((ProtocolError, ValueError)):
        Collect().feed(bad)


def test_runaway_control_line_raises() -> None:
    with pytest.raises(ProtocolError):
        Collect().feed(b"MSG " + b"x" * (proto.MAX_CONTROL_LINE + 1))


def test_handler_exception_does_not_stop_the_parse() -> None:
    seen: list[bytes] = []

    def boom(m: BusMsg) -> None:
        raise RuntimeError("handler bug")

    p = Parser({b"1": boom, b"2": lambda m: seen.append(m.data)})
    p.feed(b"MSG a 1 1\r\nx\r\nMSG b 2 1\r\ny\r\n")
    assert seen == [b"y"]


def test_lower_case_ops_are_accepted() -> None:
    c = Collect().feed(b"ping\r\npong\r\n+ok\r\n")
    assert [op for op, _ in c.ops] == [OP_PING, OP_PONG, OP_OK]


@pytest.mark.parametrize("got, want", [
    (proto.encode_pub("a.b", b"hi"), b"PUB a.b 2\r\nhi\r\n"),
    (proto.encode_pub("a.b", b"", "r.1"), b"PUB a.b r.1 0\r\n\r\n"),
    (proto.encode_hpub("a", b"NATS/1.0\r\nK: v\r\n\r\n", b"xy"),
     b"HPUB a 18 20\r\nNATS/1.0\r\nK: v\r\n\r\nxy\r\n"),
    (proto.encode_hpub("a", b"NATS/1.0\r\n\r\n", b"", "r"), b"HPUB a r 12 12\r\nNATS/1.0\r\n\r\n\r\n"),
    (proto.encode_sub("a.*", 7), b"SUB a.* 7\r\n"),
    (proto.encode_sub("a.>", 8, "workers"), b"SUB a.> workers 8\r\n"),
    (proto.encode_unsub(7), b"UNSUB 7\r\n"),
    (proto.encode_unsub(7, 1), b"UNSUB 7 1\r\n"),
    (proto.encode_connect({"verbose": False, "name": "x"}), b'CONNECT {"verbose":false,"name":"x"}\r\n'),
    (encode_headers({"Nats-Msg-Id": "m1", "K": "v"}), b"NATS/1.0\r\nNats-Msg-Id: m1\r\nK: v\r\n\r\n"),
    (encode_headers({}), b"NATS/1.0\r\n\r\n"),
])
def test_encoders(got: bytes, want: bytes) -> None:
    assert got == want


def test_encoded_frames_parse_back() -> None:
    """What the client encodes is what a server would echo as MSG/HMSG."""
    hdr = encode_headers({"K": "v"})
    wire = proto.encode_hpub("s.x", hdr, b"payload", "r.1")
    line, _, rest = wire.partition(b"\r\n")
    c = Collect().feed(line.replace(b"HPUB s.x", b"HMSG s.x 1") + b"\r\n" + rest)
    (_, m), = c.msgs
    assert (m.subject, m.reply, m.data, m.headers) == ("s.x", "r.1", b"payload", {"K": "v"})


@pytest.mark.parametrize("bad", [{"K\r\nX": "v"}, {"K": "v\r\nX: y"}, {"K:": "v"}])
def test_encode_headers_rejects_injection(bad: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        encode_headers(bad)


@pytest.mark.parametrize("subject", ["", "a b", "a\r\nPUB x 1", "a\tb"])
def test_check_subject(subject: str) -> None:
    with pytest.raises(proto.BusError):
        proto.check_subject(subject)


def test_errors_are_switchboard_errors() -> None:
    from switchboard.errors import SwitchboardError, Unavailable
    assert issubclass(proto.BusUnavailable, proto.BusError)
    assert issubclass(proto.BusError, SwitchboardError)
    assert issubclass(proto.BusUnavailable, Unavailable)
    assert proto.BusUnavailable("x").retry is True and proto.BusError("x").retry is False
