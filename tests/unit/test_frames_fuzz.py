"""Property-based fuzzing of the frame decoder (switchboard/frames.py).

What it protects: a client frame reaches ``decode_client_frame`` (and, when
that fails, ``guess_ref`` and ``error_frame``) on the edge's read path, inline
in the socket's ``data_received``. Any exception there that is not a
:class:`SwitchboardError` fails the connection with close 1011 (an edge bug,
seen by the client as "internal error"); a slow decode stalls every socket of
the edge. So, for ANY bytes or text:

- the outcome is a frame, or a ``SwitchboardError`` with a stable code, and
  the error frame built from it (with the guessed ``ref``) encodes;
- it is decided within a bounded time (hypothesis' per-example deadline, and
  the worst inputs of the maximal frame size timed explicitly);
- valid frames with hostile fields (wildcard subject tokens ``*``/``>``/``.``
  in every id, huge, negative and float numbers, nested objects, unicode,
  truncated or invalid UTF-8) are refused with a stable code, never let
  through to a subject or a store.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings, strategies as st

from switchboard import frames, ids
from switchboard.errors import SwitchboardError

MAX_BODY = 16 * 1024  # the default max_body_bytes
MAX_FRAME = 64 * 1024  # the default max_frame_bytes (the session refuses longer frames before decoding)
# Every code decode_client_frame may answer (docs/protocol.md, "Errors").
DECODE_CODES = {"bad_json", "unknown_type", "bad_frame", "invalid_id", "limit_exceeded"}
# One decode of a frame of at most MAX_FRAME bytes: it runs inline on the
# edge's event loop, so anything near this would already stall every socket.
# Generous for a shared 2-core machine; a decode takes microseconds.
DEADLINE = timedelta(milliseconds=250)
WORST_CASE_SEC = 0.25
# The largest number the fabric stores or compares: JetStream sequences,
# conversation seqs and SQLite/Cassandra integers are 64-bit signed.
INT_MAX = 2**63 - 1

FUZZ = settings(max_examples=300, deadline=DEADLINE, suppress_health_check=[HealthCheck.too_slow],
                derandomize=True)  # derandomized: CI runs the same examples every time


def outcome(data: bytes | str) -> frames.ClientFrame | str:
    """Decode like the edge does; the frame, or the error code. Raises (fails
    the property) on anything else: an exception that is not a coded error,
    a ``ref`` that is not a short string, an error frame that does not encode,
    or a decode slower than :data:`WORST_CASE_SEC`."""
    t0 = time.perf_counter()
    try:
        frame = frames.decode_client_frame(data, max_body=MAX_BODY)
    except SwitchboardError as exc:
        assert exc.code in DECODE_CODES, f"unstable code {exc.code!r}"
        ref = frames.guess_ref(data)
        assert ref is None or (isinstance(ref, str) and len(ref) <= 128)
        wire = frames.encode(frames.error_frame(exc, ref))
        back = frames.decode_server_frame(wire)
        assert isinstance(back, frames.Error) and back.code == exc.code and back.ref == ref
        result: frames.ClientFrame | str = exc.code
    else:
        assert isinstance(frame, frames.ClientFrame.__args__)  # type: ignore[attr-defined]
        result = frame
    elapsed = time.perf_counter() - t0
    assert elapsed < WORST_CASE_SEC, f"decode took {elapsed * 1000:.0f} ms"
    return result


# ---------------------------------------------------------------- anything at all

@FUZZ
@given(st.binary(max_size=4096))
@example(b"")
@example(b"\xff\xfe\xfd")
@example(b'{"type":"send","id":"\xe2\x82')  # truncated inside a 3-byte UTF-8 sequence
@example(b'{"type":"send","id":"a","to":"b","body":"\xe2\x82"}')  # invalid UTF-8 inside a string
@example(b'{"type":"send","id":"a","to":"b","body":"\\ud800"}')  # a lone surrogate escape
def test_any_bytes_give_a_frame_or_a_coded_error(data: bytes) -> None:
    outcome(data)


def _utf8(s: str) -> bool:
    try:
        s.encode()
        return True
    except UnicodeEncodeError:
        return False


@FUZZ
@given(st.text(max_size=4096).filter(_utf8))
def test_any_text_gives_a_frame_or_a_coded_error(data: str) -> None:
    outcome(data)


@pytest.mark.parametrize("data", ["\ud800", '{"type":"hello","epoch":"\udfff"}'], ids=["alone", "in-a-field"])
def test_a_str_with_a_lone_surrogate_is_a_coded_error(data: str) -> None:
    outcome(data)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=25,
)
TYPES = ["hello", "send", "ack", "read", "typing", "history", "conv.create", "presence.watch", "push.register",
         "receipts", "error", "msg", "", "HELLO", "send ", None, 1]
FIELDS = ["type", "id", "conv", "to", "body", "cursor", "epoch", "seq", "before", "after", "limit", "members",
          "title", "users", "platform", "token", "from", "ref"]


@FUZZ
@given(st.sampled_from(TYPES), st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=6))
def test_json_objects_of_frame_shape(type_: Any, fields: dict) -> None:
    outcome(json.dumps({"type": type_, **fields}))


@FUZZ
@given(JSON)
def test_any_json_value(value: Any) -> None:
    outcome(json.dumps(value))


# ---------------------------------------------------------------- valid frames, mutated

def _valid_frames() -> list[dict]:
    return [
        {"type": "hello", "cursor": None, "epoch": None},
        {"type": "hello", "cursor": 17, "epoch": "k3J"},
        {"type": "send", "id": "m-1", "to": "bob", "body": "héllo ✓ 😀"},
        {"type": "send", "id": "m-2", "conv": "g-team", "body": "x"},
        {"type": "ack", "cursor": 1130},
        {"type": "read", "conv": "dm-1", "seq": 3, "id": "r1"},
        {"type": "typing", "conv": "dm-1"},
        {"type": "history", "conv": "g-team", "before": 10, "limit": 20, "id": "h1"},
        {"type": "history", "conv": "g-team", "after": 0, "id": "h2"},
        {"type": "conv.create", "members": ["a", "b"], "title": "t", "id": "c1"},
        {"type": "presence.watch", "users": ["a", "b"], "id": "p1"},
        {"type": "push.register", "platform": "fcm", "token": "tok", "id": "pr1"},
        {"type": "receipts", "conv": "dm-1", "id": "rc1"},
    ]


VALID = _valid_frames()


@pytest.mark.parametrize("frame", VALID, ids=lambda f: f["type"])
def test_the_valid_frames_are_valid(frame: dict) -> None:
    assert not isinstance(outcome(json.dumps(frame, ensure_ascii=False)), str)


@FUZZ
@given(st.sampled_from(VALID), st.data())
def test_mutated_bytes_of_valid_frames(frame: dict, data: st.DataObject) -> None:
    """Byte-level mutations: truncation (also inside a multi-byte UTF-8
    character), a byte replaced, a byte inserted, a slice duplicated."""
    raw = bytearray(json.dumps(frame, ensure_ascii=False).encode())
    op = data.draw(st.sampled_from(["truncate", "replace", "insert", "duplicate"]))
    i = data.draw(st.integers(0, len(raw) - 1))
    if op == "truncate":
        raw = raw[:i]
    elif op == "replace":
        raw[i] = data.draw(st.integers(0, 255))
    elif op == "insert":
        raw[i:i] = data.draw(st.binary(min_size=1, max_size=8))
    else:
        j = data.draw(st.integers(i, len(raw)))
        raw[j:j] = raw[i:j]
    outcome(bytes(raw))


@pytest.mark.parametrize("cut", range(1, 4))
@pytest.mark.parametrize("field", ["id", "to", "body"])
def test_truncated_utf8_in_a_field_is_bad_json(field: str, cut: int) -> None:
    """A frame cut inside a 4-byte UTF-8 character, then closed again:
    invalid UTF-8 (a binary WebSocket frame is not UTF-8-checked by the
    transport, so the decoder must refuse it)."""
    frame = {"type": "send", "id": "m1", "to": "bob", "body": "x"}
    frame[field] = "😀"
    raw = json.dumps(frame, ensure_ascii=False).encode()
    at = raw.index("😀".encode()) + cut
    assert outcome(raw[:at] + raw[at + (4 - cut):]) == "bad_json"


# ---------------------------------------------------------------- hostile fields

# Subject tokens: an id becomes part of a NATS subject, so a wildcard or a dot
# in any of them must never get through.
WILDCARDS = ["*", ">", ".", "a.b", "a.*", "a.>", "*.>", ">.a", ".a", "a.", "..", "a b", "\t", ""]
HOSTILE_STRINGS = WILDCARDS + ["x" * 65, "é", "ü" * 3, "😀", "\u202e", "\u0000", "a\x00", "a\n", "a/b", "a:b",
                               "%2A", "$SYS", "\\", '"']
HOSTILE_NUMBERS = [INT_MAX + 1, 2**64 - 1, 2**64, 2**64 + 1, 10**30, 10**300, -1, -(2**63), -(2**63) - 1,
                   -(10**30)]
FLOATS = [0.5, 1.0, -0.0, 1e308, -1e308, 1e-300]
NESTED = [{}, [], {"a": 1}, [1], {"$gt": 0}, [[[[[]]]]], {"a": {"b": {"c": {}}}}]

NON_STRINGS = HOSTILE_NUMBERS + FLOATS + NESTED + [True, False, 0, 1]
NOT_AN_ID = st.one_of(
    st.sampled_from(HOSTILE_STRINGS + NON_STRINGS),
    st.text(max_size=80).filter(lambda s: not ids.is_valid(s)),
    st.builds(lambda a, w, b: a + w + b, st.sampled_from(["", "a", "user"]), st.sampled_from(WILDCARDS),
              st.sampled_from(["", "b", "x"])).filter(lambda s: not ids.is_valid(s)),
)
NOT_AN_INT = st.sampled_from(FLOATS + NESTED + ["1", "", "1e3", True, False])
NOT_A_STRING = st.sampled_from(HOSTILE_NUMBERS + FLOATS + NESTED + [True, 0])

# (frame type, a valid frame, id fields, optional id fields, id-list fields, int fields, string fields)
SHAPES = [
    ("hello", {"type": "hello"}, [], [], [], ["cursor"], ["epoch"]),
    ("send-to", {"type": "send", "id": "m1", "to": "bob", "body": "x"}, ["id", "to"], [], [], [], ["body"]),
    ("send-conv", {"type": "send", "id": "m1", "conv": "c1", "body": "x"}, ["id", "conv"], [], [], [], ["body"]),
    ("ack", {"type": "ack", "cursor": 1}, [], [], [], ["cursor"], []),
    ("read", {"type": "read", "conv": "c1", "seq": 1}, ["conv"], ["id"], [], ["seq"], []),
    ("typing", {"type": "typing", "conv": "c1"}, ["conv"], [], [], [], []),
    ("history", {"type": "history", "conv": "c1"}, ["conv"], ["id"], [], ["before", "after", "limit"], []),
    ("conv.create", {"type": "conv.create", "members": ["a"]}, [], ["id"], ["members"], [], ["title"]),
    ("presence.watch", {"type": "presence.watch", "users": ["a"]}, [], ["id"], ["users"], [], []),
    ("push.register", {"type": "push.register", "platform": "fcm", "token": "t"}, [], ["id"], [], [],
     ["platform", "token"]),
    ("receipts", {"type": "receipts", "conv": "c1"}, ["conv"], ["id"], [], [], []),
]


def _refused(frame: dict) -> str:
    got = outcome(json.dumps(frame, ensure_ascii=False))
    assert isinstance(got, str), f"accepted a hostile frame: {frame!r} -> {got!r}"
    return got


WITH_IDS = [s for s in SHAPES if s[2] or s[3] or s[4]]


@pytest.mark.parametrize("shape", WITH_IDS, ids=[s[0] for s in WITH_IDS])
@FUZZ
@given(data=st.data())
def test_every_id_refuses_wildcards_and_non_ids(shape: tuple, data: st.DataObject) -> None:
    _, base, id_fields, opt_id_fields, list_fields, _, _ = shape
    targets = [(f, "id") for f in id_fields + opt_id_fields] + [(f, "list") for f in list_fields]
    field, kind = data.draw(st.sampled_from(targets))
    bad = data.draw(NOT_AN_ID)
    assume(not (bad is None and field in opt_id_fields))
    frame = dict(base)
    if kind == "list":
        good = list(frame[field]) * data.draw(st.integers(1, 3))
        good.insert(data.draw(st.integers(0, len(good))), bad)
        frame[field] = good
    else:
        frame[field] = bad
    assert _refused(frame) in ({"invalid_id", "bad_frame"} if isinstance(bad, str) else {"bad_frame"})


# The values each number may take. Cursors and seqs are stream/conversation
# positions (never negative); history bounds only compare, so any 64-bit
# signed value is harmless there; a page has at least one message.
RANGES = {"cursor": (0, INT_MAX), "seq": (0, INT_MAX), "before": (-(2**63), INT_MAX),
          "after": (-(2**63), INT_MAX), "limit": (1, INT_MAX)}


@pytest.mark.parametrize("shape", [s for s in SHAPES if s[5]], ids=[s[0] for s in SHAPES if s[5]])
@pytest.mark.parametrize("value", HOSTILE_NUMBERS, ids=repr)
def test_numbers_out_of_range_are_refused(shape: tuple, value: int) -> None:
    """A cursor, seq or bound outside its range (negative positions, beyond
    64-bit signed) would reach a JetStream request or a store query (and
    fail there, closing the socket 1011: a hello cursor of 2^64 did);
    refused at the edge with a stable code."""
    _, base, *_, int_fields, _ = shape
    for field in int_fields:
        lo, hi = RANGES[field]
        if lo <= value <= hi:
            continue
        assert _refused({**base, field: value}) in {"bad_frame", "limit_exceeded"}, field


@pytest.mark.parametrize("shape", [s for s in SHAPES if s[5]], ids=[s[0] for s in SHAPES if s[5]])
@FUZZ
@given(value=NOT_AN_INT, data=st.data())
def test_numbers_of_the_wrong_type_are_refused(shape: tuple, value: Any, data: st.DataObject) -> None:
    _, base, *_, int_fields, _ = shape
    field = data.draw(st.sampled_from(int_fields))
    assert _refused({**base, field: value}) == "bad_frame"


@pytest.mark.parametrize("shape", [s for s in SHAPES if s[6]], ids=[s[0] for s in SHAPES if s[6]])
@FUZZ
@given(value=NOT_A_STRING, data=st.data())
def test_strings_of_the_wrong_type_are_refused(shape: tuple, value: Any, data: st.DataObject) -> None:
    _, base, *_, str_fields = shape
    field = data.draw(st.sampled_from(str_fields))
    assert _refused({**base, field: value}) == "bad_frame"


@FUZZ
@given(body=st.text(min_size=1, max_size=64))
def test_oversized_bodies_are_refused_whatever_the_characters(body: str) -> None:
    n = MAX_BODY // len(body.encode()) + 1  # UTF-8 bytes count, not characters
    frame = {"type": "send", "id": "m1", "to": "bob", "body": body * n}
    assert _refused(frame) == "limit_exceeded"


@FUZZ
@given(st.sampled_from(VALID), st.sampled_from(FIELDS + ["x", "__proto__", "constructor"]), JSON)
def test_extra_or_replaced_fields_never_escape_validation(frame: dict, field: str, value: Any) -> None:
    """Whatever one field is replaced with, an accepted frame still has only
    valid ids in it (they become subject tokens)."""
    got = outcome(json.dumps({**frame, field: value}))
    if isinstance(got, str):
        return
    for name in ("id", "conv", "to"):
        v = getattr(got, name, None)
        assert v is None or ids.is_valid(v), (name, v)
    for name in ("members", "users"):
        for v in getattr(got, name, None) or []:
            assert ids.is_valid(v), (name, v)


# ---------------------------------------------------------------- nesting and worst cases

NESTINGS = [("array", "[", "]"), ("object", '{"a":', "}"), ("in-hello", '{"type":"hello","x":[', "]}"),
            ("in-id", '{"type":"send","id":[', "]}"), ("id-object", '{"id":{"id":', "}}")]


@pytest.mark.parametrize("depth", [10, 100, 1000, 10_000, MAX_FRAME // 2])
@pytest.mark.parametrize("name, open_, close", NESTINGS, ids=[n[0] for n in NESTINGS])
def test_deep_nesting_is_a_coded_error(name: str, open_: str, close: str, depth: int) -> None:
    """Deeply nested JSON (within the frame size limit) must not raise
    RecursionError from the decoder or from guess_ref (close 1011 on the
    edge); both closed and unclosed (truncated) nestings."""
    inner = max(1, depth // max(1, open_.count("[") + open_.count("{")))
    closed = open_ * inner + "1" + close * inner
    if len(closed) <= MAX_FRAME:
        outcome(closed)  # a frame (unknown fields are ignored) or a coded error
    assert isinstance(outcome((open_ * inner)[:MAX_FRAME]), str)


WORST = [
    ("whitespace", " " * (MAX_FRAME - 2) + "{}"),
    ("escapes", '{"type":"send","id":"m","to":"b","body":"' + "\\u00e9" * ((MAX_FRAME - 60) // 6) + '"}'),
    ("many-keys", "{" + ",".join(f'"k{i}":0' for i in range(MAX_FRAME // 10)) + "}"),
    ("long-number", '{"type":"ack","cursor":' + "9" * (MAX_FRAME - 30) + "}"),
    ("long-float", '{"type":"ack","cursor":0.' + "0" * (MAX_FRAME - 30) + "1}"),
    ("long-exponent", '{"type":"ack","cursor":1e' + "9" * (MAX_FRAME - 30) + "}"),
    ("many-members", '{"type":"conv.create","members":[' + ",".join(['"a"'] * (MAX_FRAME // 5)) + "]}"),
    ("many-ids", '{"type":"send",' + ",".join(['"id":"a"'] * (MAX_FRAME // 10)) + "}"),
]


@pytest.mark.parametrize("name, data", WORST, ids=[w[0] for w in WORST])
def test_worst_case_frames_decode_in_bounded_time(name: str, data: str) -> None:
    assert len(data.encode()) <= MAX_FRAME
    outcome(data)
    outcome(data.encode())
