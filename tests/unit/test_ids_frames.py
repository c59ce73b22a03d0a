"""Ids and wire frames: what the edge accepts and the error code for what it
refuses (table-driven; no sockets)."""

from __future__ import annotations

import msgspec
import pytest

from switchboard import frames, ids
from switchboard.errors import InvalidId

# ---------------------------------------------------------------- ids

VALID_IDS = ["a", "A", "0", "_", "-", "user_1", "dm-abc", "x" * 64, "Az09_-"]
# Ids become NATS subject tokens: "a.>" would be a wildcard subscription to
# other users' subjects, "a.b" an extra token, "*" a wildcard.
INVALID_IDS = ["", " ", "a b", "a.>", "a.b", "*", ">", "a*", "x" * 65, "é", "a\n", "a\t", "a/b", "a:b",
               "a\x00", None, 1, b"abc", ["a"]]


@pytest.mark.parametrize("value", VALID_IDS)
def test_valid_ids(value: str) -> None:
    assert ids.is_valid(value)
    assert ids.check(value) == value


@pytest.mark.parametrize("value", INVALID_IDS, ids=repr)
def test_invalid_ids(value) -> None:
    assert not ids.is_valid(value)
    with pytest.raises(InvalidId) as info:
        ids.check(value, "user")
    assert info.value.code == "invalid_id"


@pytest.mark.parametrize("a, b", [("alice", "bob"), ("b", "a"), ("x" * 64, "y" * 64), ("same", "same"),
                                  ("A", "a")])
def test_dm_conv_symmetric_and_valid(a: str, b: str) -> None:
    conv = ids.dm_conv(a, b)
    assert conv == ids.dm_conv(b, a)
    assert ids.is_valid(conv)  # fits a subject token even for two 64-char users
    assert ids.is_dm(conv)


def test_dm_conv_distinct_pairs_differ() -> None:
    # The pair is joined with a separator no id can contain, so ("ab","c") and
    # ("a","bc") do not collide.
    convs = {ids.dm_conv("ab", "c"), ids.dm_conv("a", "bc"), ids.dm_conv("a", "b"), ids.dm_conv("a", "c")}
    assert len(convs) == 4


@pytest.mark.parametrize("a, b", [("alice", "a.>"), ("*", "bob"), ("", "bob")])
def test_dm_conv_rejects_bad_users(a: str, b: str) -> None:
    with pytest.raises(InvalidId):
        ids.dm_conv(a, b)


def test_is_dm_only_for_dm_ids() -> None:
    assert not ids.is_dm("dm-short")
    assert not ids.is_dm("group1")


# ---------------------------------------------------------------- decoding: accepted


@pytest.mark.parametrize(
    "data, expected",
    [
        (b'{"type":"hello"}', frames.Hello()),
        (b'{"type":"hello","cursor":5,"epoch":"e1"}', frames.Hello(cursor=5, epoch="e1")),
        # Unknown fields are ignored: newer clients may send more.
        (b'{"type":"hello","cursor":1,"extra":2}', frames.Hello(cursor=1)),
        (b'{"type":"send","id":"m1","to":"bob","body":"hi"}', frames.Send(id="m1", to="bob", body="hi")),
        (b'{"type":"send","id":"m1","conv":"c1","body":""}', frames.Send(id="m1", conv="c1", body="")),
        ('{"type":"send","id":"m1","conv":"c1","body":"h\u00e9"}', frames.Send(id="m1", conv="c1", body="h\u00e9")),
        (b'{"type":"ack","cursor":0}', frames.Ack(cursor=0)),
        (b'{"type":"read","conv":"c1","seq":3}', frames.Read(conv="c1", seq=3)),
        (b'{"type":"typing","conv":"c1"}', frames.Typing(conv="c1")),
        (b'{"type":"history","conv":"c1","before":10,"limit":20}',
         frames.HistoryRequest(conv="c1", before=10, limit=20)),
        (b'{"type":"conv.create","members":["a","b"],"title":"t","id":"r1"}',
         frames.ConvCreate(members=["a", "b"], title="t", id="r1")),
        (b'{"type":"presence.watch","users":["a"]}', frames.PresenceWatch(users=["a"])),
        (b'{"type":"push.register","platform":"apns","token":"tok"}',
         frames.PushRegister(platform="apns", token="tok")),
    ],
)
def test_decode_accepts(data, expected) -> None:
    assert frames.decode_client_frame(data) == expected


# ---------------------------------------------------------------- decoding: refused

LONG = "x" * 65
BAD_FRAMES = [
    # malformed JSON
    (b"", "bad_json"),
    (b"not json", "bad_json"),
    (b'{"type":"hello"', "bad_json"),
    (b'{"type":"hello"} x', "bad_json"),
    # not an object / unknown or missing type
    (b"[1]", "bad_frame"),
    (b'"hello"', "bad_frame"),
    (b"{}", "unknown_type"),
    (b'{"type":"nope"}', "unknown_type"),
    (b'{"type":1}', "unknown_type"),
    (b'{"type":"welcome","user":"a","epoch":"e"}', "unknown_type"),  # a server frame from a client
    (b'{"type":"error","ref":null,"code":"x","message":"m","retry":false}', "unknown_type"),
    # missing fields / wrong types
    (b'{"type":"send","id":"m1","to":"bob"}', "bad_frame"),
    (b'{"type":"send","body":"x","to":"bob"}', "bad_frame"),
    (b'{"type":"ack"}', "bad_frame"),
    (b'{"type":"ack","cursor":"5"}', "bad_frame"),
    (b'{"type":"read","conv":"c1"}', "bad_frame"),
    (b'{"type":"typing"}', "bad_frame"),
    (b'{"type":"conv.create"}', "bad_frame"),
    (b'{"type":"push.register","platform":"apns"}', "bad_frame"),
    # values out of range
    (b'{"type":"ack","cursor":-1}', "bad_frame"),
    (b'{"type":"read","conv":"c1","seq":-1}', "bad_frame"),
    (b'{"type":"history","conv":"c1","limit":0}', "bad_frame"),
    (b'{"type":"conv.create","members":[]}', "bad_frame"),
    # send needs exactly one of conv / to
    (b'{"type":"send","id":"m1","body":"x"}', "bad_frame"),
    (b'{"type":"send","id":"m1","body":"x","to":"bob","conv":"c1"}', "bad_frame"),
    # bad ids, in every place an id goes
    (b'{"type":"send","id":"a.>","body":"x","to":"bob"}', "invalid_id"),
    (b'{"type":"send","id":"m1","body":"x","to":"*"}', "invalid_id"),
    (b'{"type":"send","id":"m1","body":"x","to":"a.>"}', "invalid_id"),
    (b'{"type":"send","id":"m1","body":"x","conv":" "}', "invalid_id"),
    (b'{"type":"send","id":"","body":"x","conv":"c1"}', "invalid_id"),
    (f'{{"type":"send","id":"{LONG}","body":"x","conv":"c1"}}'.encode(), "invalid_id"),
    (b'{"type":"read","conv":"a.b","seq":1}', "invalid_id"),
    (b'{"type":"typing","conv":">"}', "invalid_id"),
    (b'{"type":"history","conv":"*"}', "invalid_id"),
    (b'{"type":"conv.create","members":["a","b c"]}', "invalid_id"),
    (b'{"type":"conv.create","members":["a"],"id":"r.1"}', "invalid_id"),
    (b'{"type":"presence.watch","users":["ok","a.>"]}', "invalid_id"),
    (b'{"type":"push.register","platform":"apns","token":"t","id":"*"}', "invalid_id"),
]


@pytest.mark.parametrize("data, code", BAD_FRAMES,
                         ids=lambda v: v.decode(errors="replace")[:60] if isinstance(v, bytes) else v)
def test_decode_refuses_with_stable_code(data: bytes, code: str) -> None:
    with pytest.raises(Exception) as info:
        frames.decode_client_frame(data)
    assert getattr(info.value, "code", None) == code, info.value
    # The error frame built from it carries the same code and is not retryable:
    # resending the same bad frame can never succeed.
    err = frames.error_frame(info.value)
    assert err.code == code and err.retry is False


@pytest.mark.parametrize(
    "body, max_body, code",
    [
        ("x" * 101, 100, "limit_exceeded"),
        ("\u00e9" * 51, 100, "limit_exceeded"),  # 102 bytes of UTF-8 in 51 characters: the limit counts bytes
        ("x" * 100, 100, None),
        ("\u00e9" * 50, 100, None),
    ],
)
def test_body_size_limit(body: str, max_body: int, code: str | None) -> None:
    data = frames.encode(frames.Send(id="m1", conv="c1", body=body))
    if code is None:
        assert frames.decode_client_frame(data, max_body=max_body).body == body
    else:
        with pytest.raises(Exception) as info:
            frames.decode_client_frame(data, max_body=max_body)
        assert info.value.code == code


@pytest.mark.parametrize(
    "data, ref",
    [
        (b'{"type":"send","id":"m1","to":"a.>","body":"x"}', "m1"),
        (b'{"type":"nope","id":"r7"}', "r7"),
        # An invalid string id is echoed so the client can match the error to
        # its frame, capped at 128 characters; a non-string id is not.
        (b'{"type":"send","id":"a.>"}', "a.>"),
        (('{"type":"send","id":"%s"}' % ("x" * 300)).encode(), "x" * 128),
        (b'{"type":"send","id":5}', None),
        (b"not json", None),
        (b"[1]", None),
    ],
)
def test_guess_ref(data: bytes, ref: str | None) -> None:
    assert frames.guess_ref(data) == ref


# ---------------------------------------------------------------- cursor splice

MSGS = [
    frames.Msg(conv="c1", seq=1, id="m1", from_="alice"),
    frames.Msg(conv="c1", seq=2, id="m2", from_="alice", body="hello", ts=1_700_000_000_000),
    frames.Msg(conv="dm-" + "a" * 40, seq=10**12, id="m3", from_="bob", body='tricky "}\\ {', kind="system"),
    frames.Msg(conv="c2", seq=3, id="m4", from_="bob", body="\u00e9\u4e2d\U0001f600\n"),
]


@pytest.mark.parametrize("msg", MSGS)
@pytest.mark.parametrize("cursor", [0, 1, 987654321012])
def test_with_cursor_equals_reencode(msg: frames.Msg, cursor: int) -> None:
    # The edge splices the cursor into the stored bytes instead of decoding and
    # re-encoding; the result must be exactly what a full re-encode gives.
    stored = frames.encode(msg)
    assert b'"cursor"' not in stored  # stored on the bus without a cursor
    spliced = frames.with_cursor(stored, cursor)
    reencoded = frames.encode(msgspec.structs.replace(frames.decode_server_frame(stored), cursor=cursor))
    assert msgspec.json.decode(spliced) == msgspec.json.decode(reencoded)
    assert frames.decode_server_frame(spliced) == msgspec.structs.replace(msg, cursor=cursor)
    assert spliced == reencoded


def test_msg_uses_wire_name_from() -> None:
    assert msgspec.json.decode(frames.encode(MSGS[0]))["from"] == "alice"
