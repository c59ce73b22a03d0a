"""sbctl/bench/fuzz.py without sockets: the generator is reproducible
and covers every kind of frame it promises, deep nesting is what it says,
client frames are well-formed WebSocket frames, and the control pair's
verdict catches loss, reordering, duplicates and silence.

What it protects: a fuzz run that reports PASS must have sent what its
docstring says (a generator that silently stopped producing, e.g., deep
nesting or invalid UTF-8 would make the e2e fuzz test vacuous), and a
failure must be reproducible from its seed."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter

import pytest

from sbctl.bench import fuzz
from sbctl.bench.wsclient import OP_BINARY, OP_TEXT, apply_mask

USERS = [f"u{i}" for i in range(6)]


def frames_of(seed: int, n: int) -> list[tuple[str, bytes, int]]:
    gen = fuzz.FrameGen(random.Random(seed), USERS)
    return [gen.next() for _ in range(n)]


def test_the_same_seed_gives_the_same_frames() -> None:
    assert frames_of(7, 500) == frames_of(7, 500)
    assert frames_of(7, 500) != frames_of(8, 500)


def test_every_kind_of_frame_is_generated() -> None:
    got = frames_of(1, 6000)
    heads = Counter(label.split(":", 1)[0] for label, _, _ in got)
    assert set(heads) == {"valid", "field", "struct", "bytes", "junk", "oversize"}, heads
    labels = " ".join(label for label, _, _ in got)
    for what in ("wildcard", "huge", "negative", "float", "unicode", "nested", "deep", "confusion", "long",
                 "truncate-utf8", "invalid-utf8", "oversize:hard", "struct:deep", "duplicate-key"):
        assert what in labels, what
    # Invalid UTF-8 mostly as binary frames (the decoder sees them), some as text.
    invalid = [op for label, _, op in got if "invalid-utf8" in label]
    assert OP_BINARY in invalid and OP_TEXT in invalid
    for label, payload, op in got:
        if op == OP_TEXT and "invalid-utf8" not in label:
            payload.decode()  # text frames are UTF-8 unless labelled otherwise


@pytest.mark.parametrize("depth", [1, 2, 50, 5000])
def test_nested_text_is_as_deep_as_asked(depth: int) -> None:
    text = fuzz.nested_text(depth, random.Random(depth))
    opened = text.count("[") + text.count("{")
    assert opened == depth
    if depth < 500:  # json recurses itself
        value = json.loads(text)
        for _ in range(depth):
            value = value[0] if isinstance(value, list) else value["a"]
        assert value == 1


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 70000])
@pytest.mark.parametrize("fin", [True, False])
def test_ws_frame_is_a_masked_client_frame(size: int, fin: bool) -> None:
    payload = bytes(random.Random(size).randbytes(size))
    data = fuzz.ws_frame(OP_BINARY, payload, fin=fin)
    assert data[0] == (0x80 if fin else 0) | OP_BINARY
    assert data[1] & 0x80  # masked
    n = data[1] & 0x7F
    pos = 2
    if n == 126:
        n, pos = int.from_bytes(data[2:4], "big"), 4
    elif n == 127:
        n, pos = int.from_bytes(data[2:10], "big"), 10
    assert n == size
    mask = data[pos:pos + 4]
    assert apply_mask(data[pos + 4:], mask) == payload


def _run() -> fuzz.FuzzRun:
    return fuzz.FuzzRun(fuzz.FuzzParams(frames=1, progress=False), ws_url="ws://127.0.0.1:1/ws",
                        token=lambda u: "t", seed=1)


# (case, messages a->b as (seq, id) received by b, failures expected)
CONTROL = [
    ("clean", [(1, "c1"), (2, "c3")], set()),
    ("lost", [(1, "c1")], {"lost"}),
    ("reordered", [(2, "c3"), (1, "c1")], {"out_of_order"}),
    ("duplicated", [(1, "c1"), (1, "c1"), (2, "c3")], {"out_of_order", "duplicates"}),
]


@pytest.mark.parametrize("case, received, expected", CONTROL, ids=[c[0] for c in CONTROL])
async def test_control_report_catches_loss_order_and_duplicates(case: str, received: list, expected: set) -> None:
    run = _run()
    a, b = fuzz.ControlConn(run, "a"), fuzz.ControlConn(run, "b")
    run.control = (a, b)
    a.sent_at = {"c1": 10.0, "c3": 10.1}
    for seq, mid in received:
        b.received.append((seq, mid, "a", 10.2))
    rep = run.control_report(10.0, 10.3)
    found = {name for name in ("lost", "out_of_order", "duplicates") if getattr(rep, name)}
    assert found == expected, rep
    assert rep.latency_ms_max is None or rep.latency_ms_max == pytest.approx(200.0, abs=1)


async def test_control_report_measures_the_longest_silence() -> None:
    run = _run()
    a, b = fuzz.ControlConn(run, "a"), fuzz.ControlConn(run, "b")
    run.control = (a, b)
    a.sent_at = {"c1": 1.0, "c3": 2.0}
    for side in (a, b):  # each side receives the conversation's messages, its own included
        side.received += [(1, "c1", "a", 1.1), (2, "c3", "a", 9.1)]
    assert run.control_report(0.0, 10.0).longest_silence_s == pytest.approx(8.0)


async def test_control_pair_resends_on_a_retryable_error_only() -> None:
    """Like the SDK: `retry: true` -> the same frame again (counted, not a
    failure); any other error is a failure of the run."""
    run = _run()
    a = fuzz.ControlConn(run, "a")
    sent: list[str] = []
    a.send_text = sent.append  # type: ignore[method-assign]
    a.frames = {"c1": '{"type":"send","id":"c1"}', "c3": '{"type":"send","id":"c3"}'}
    a.on_text(b'{"type":"error","ref":"c1","code":"unavailable","message":"m","retry":true}')
    a.on_text(b'{"type":"error","ref":"c3","code":"not_member","message":"m","retry":false}')
    await asyncio.sleep(fuzz.RETRY_AFTER + 0.05)
    assert sent == ['{"type":"send","id":"c1"}'] and a.retried == 1
    assert [e["ref"] for e in a.errors] == ["c3"]
