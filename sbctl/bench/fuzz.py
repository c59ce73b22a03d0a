"""``bench fuzz``: a black-box fuzzer of a live edge.

Drives an edge with generated and mutated client frames over many
connections, while a control pair of well-behaved clients exchanges messages
through the same edge. Passes when:

- no connection is closed with **1011** (the edge's "internal error": an
  exception escaped the frame path) and no ``error`` frame says
  ``internal``;
- no fabric process crashed (every process seen at the start still runs);
- the control pair delivered every message, in order, without gaps, and
  kept delivering throughout (no silence longer than ``max_silence``).

What is sent (:class:`FrameGen`, seeded, so a run is reproducible with
``--seed``): valid frames of every type; valid frames with one hostile field
(wildcard subject tokens ``*``/``>``/``.`` in every id, huge/negative/float
numbers, nested objects, unicode, over-long strings, wrong types); frames
with fields missing, unknown, duplicated or of an unknown type; deep nesting;
byte mutations (truncation, also inside a UTF-8 character, replaced and
inserted bytes, splices), sent as binary frames when not valid UTF-8, and
rarely as text frames (the edge does not check a text frame's UTF-8, which
RFC 6455 would close with 1007: the decoder answers ``bad_json`` instead);
raw junk; over-size frames; fragmented messages and client pings.
Connections churn: each lives for a random number of frames, some start
with hostile hellos, some end abruptly (TCP abort).

A 1011 is reported with the frames its connection sent last, then
minimised: each of them is replayed alone on a fresh connection and the one
that reproduces the 1011 is the reproducer. The fabric is ``switchboard up``
started by the bench, or an existing edge (``--ws``; ``--pid`` names its
processes for the crash check).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import sys
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import msgspec
import psutil

from sbctl.bench.fabric import FabricProcess, fabric_processes, raise_nofile
from sbctl.bench.wsclient import OP_BINARY, OP_CONT, OP_PING, OP_TEXT, Flusher, HandshakeError, WsConn, apply_mask
from switchboard import auth, ids

# The edge's default per-connection limit is 50 frames/s with a burst of 200;
# the fuzzer stays under it by default so most frames reach the decoder and
# the handlers behind it rather than the rate limiter (which runs after the
# decoder anyway).
FRAMES_PER_CONN_SEC = 40.0
MIN_CONNECTIONS = 16
# A connection lives for this many frames on average (geometric), then closes
# (or is aborted) and a new one takes its slot: connection churn.
MEAN_LIFETIME = 400
# Stop writing to a socket whose transport holds this much (the edge paused
# reading it: sends in flight, or a hello replay); the pacer skips it.
MAX_WRITE_BUFFER = 256 * 1024
# The edge's defaults (switchboard/config.py); frames are sized around them.
MAX_FRAME = 64 * 1024
MAX_BODY = 16 * 1024
HARD_FRAME_FACTOR = 4  # edge/server.py: above 4 x max_frame_bytes the socket is closed 1009
# Frames a connection remembers for a 1011 report (and its minimisation).
REMEMBER = 64
# Replays tried to find the frame of a 1011, replays spent shrinking it, and
# how long one replay waits for the close (it ends sooner: the SENTINEL frame
# sent after the replayed one is answered unless the socket was closed).
MINIMISE_TRIES = 32
SHRINK_BUDGET = 60
MINIMISE_WAIT = 2.0
SENTINEL = b'{"type":"typing","conv":"sentinel.x"}'  # answered invalid_id, echoing "sentinel.x"
# A connection that was sent STALL_FRAMES frames and answered none of them
# for STALL_SEC is stalled (the edge stopped reading or answering it). Every
# frame but ack/typing/read/hello is answered, and a send at the latest after
# send_timeout (5 s) with `unavailable`: 10 s of silence is never legitimate.
STALL_FRAMES = 20
STALL_SEC = 10.0
# The control pair: one message each way per interval.
CONTROL_INTERVAL = 0.1
# A control send answered with a retryable error is sent again after this
# long (the SDK backs off similarly).
RETRY_AFTER = 0.2
# A control message not delivered after this long counts as lost.
CONTROL_DEADLINE = 15.0
# Users the fuzz connections authenticate as (their 1:1 conversations exist,
# so reads, history and receipts reach real conversations).
FUZZ_USERS = 24

_decode = msgspec.json.Decoder().decode


# ---------------------------------------------------------------- frame generation

WILDCARDS = ["*", ">", ".", "a.b", "a.*", "a.>", "*.>", ">.x", ".a", "a.", "..", "$SYS.>", "_INBOX.>", "a b", ""]
HUGE = [2**63 - 1, 2**63, 2**64 - 1, 2**64, 2**64 + 1, 10**30, 10**300]
NEGATIVE = [-1, -(2**31), -(2**63), -(2**63) - 1, -(10**30)]
FLOATS = [0.5, 1.0, -0.0, 1e308, -1e308, 1e-300, 3.14]
UNICODE = ["é", "😀", "\u202e", "\u0000", "a\u0301", "\ufeff", "\U0010ffff", "𝔘𝔫𝔦", "ß" * 40, "\u2028"]
CONFUSION = [True, False, None, [], {}, "", "1", [1, 2], {"a": 1}, {"$gt": 0}]
TEMPLATES = ["hello", "send_to", "send_conv", "ack", "read", "typing", "history", "conv.create", "presence.watch",
             "push.register", "receipts"]
# Deep nesting: the shallow ones are ordinary, the deep ones exceed Python's
# recursion limit if anything walks them recursively.
DEPTHS = [2, 20, 200, 2000, 20000]


def nested(depth: int, rng: random.Random) -> Any:
    v: Any = 1
    for _ in range(depth):
        v = [v] if rng.random() < 0.5 else {"a": v}
    return v


def nested_text(depth: int, rng: random.Random) -> str:
    """Deep nesting as text (json.dumps would recurse itself)."""
    opens = "".join("[" if rng.random() < 0.5 else '{"a":' for _ in range(depth))
    closes = "".join("]" if c == "[" else "}" for c in reversed(opens.replace('{"a":', "{")))
    return opens + "1" + closes


class FrameGen:
    """Seeded generator of (label, payload, opcode); labels say what kind of
    frame it is (for the report and the reproducer)."""

    def __init__(self, rng: random.Random, users: list[str], *, max_frame: int = MAX_FRAME,
                 max_body: int = MAX_BODY) -> None:
        self.rng = rng
        self.users = users
        self.max_frame = max_frame
        self.max_body = max_body
        self.convs = [ids.dm_conv(users[i], users[j]) for i in range(len(users)) for j in range(i + 1, len(users))]
        self._n = 0

    # -- valid frames ---------------------------------------------------------------------
    def _id(self) -> str:
        self._n += 1
        return f"f{self._n}"

    def valid(self, kind: str | None = None) -> dict:
        r = self.rng
        kind = kind or r.choice(TEMPLATES)
        user, conv = r.choice(self.users), r.choice(self.convs)
        if kind == "hello":
            return {"type": "hello", "cursor": r.choice([None, 0, 1, r.randrange(1, 10_000)]), "epoch": None}
        if kind == "send_to":
            return {"type": "send", "id": self._id(), "to": user, "body": r.choice(["hi", "x" * 100, "é😀"])}
        if kind == "send_conv":
            return {"type": "send", "id": self._id(), "conv": r.choice([conv, "g-" + self._id()]), "body": "hello"}
        if kind == "ack":
            return {"type": "ack", "cursor": r.randrange(0, 100_000)}
        if kind == "read":
            return {"type": "read", "conv": conv, "seq": r.randrange(0, 100), "id": self._id()}
        if kind == "typing":
            return {"type": "typing", "conv": conv}
        if kind == "history":
            f = {"type": "history", "conv": conv, "limit": r.randrange(1, 100), "id": self._id()}
            f[r.choice(["before", "after"])] = r.randrange(0, 100)
            return f
        if kind == "conv.create":
            return {"type": "conv.create", "members": r.sample(self.users, r.randrange(1, 4)), "title": "t",
                    "id": self._id()}
        if kind == "presence.watch":
            return {"type": "presence.watch", "users": r.sample(self.users, r.randrange(1, 4)), "id": self._id()}
        if kind == "push.register":
            return {"type": "push.register", "platform": r.choice(["apns", "fcm", "webpush"]),
                    "token": "t" + self._id(), "id": self._id()}
        return {"type": "receipts", "conv": conv, "id": self._id()}

    # -- hostile values -----------------------------------------------------------------------
    def hostile(self, field_name: str) -> tuple[str, Any]:
        """(what, value): a hostile value for ``field_name``."""
        r = self.rng
        what = r.choice(["wildcard", "huge", "negative", "float", "unicode", "long", "confusion", "nested",
                         "deep"])
        if what == "wildcard":
            w = r.choice(WILDCARDS)
            return what, r.choice([w, "u" + w, w + "x", "a" + w + "b"])
        if what == "huge":
            return what, r.choice(HUGE)
        if what == "negative":
            return what, r.choice(NEGATIVE)
        if what == "float":
            return what, r.choice(FLOATS)
        if what == "unicode":
            return what, r.choice(UNICODE) * r.choice([1, 2, 70])
        if what == "long":
            return what, "x" * r.choice([64, 65, 1000, self.max_body + 1])
        if what == "confusion":
            return what, r.choice(CONFUSION)
        if what == "nested":
            return what, nested(r.choice(DEPTHS[:3]), r)
        return what, "DEEP"  # placeholder: spliced in as text (see field_frame)

    def field_frame(self) -> tuple[str, str]:
        """A valid frame with one field (existing, or added) replaced by a hostile value."""
        r = self.rng
        frame = self.valid()
        name = r.choice(list(frame) + ["id", "conv", "to", "cursor", "seq", "before", "after", "limit", "members",
                                       "users", "epoch", "body"])
        if name in ("members", "users") and name in frame and r.random() < 0.7:
            what, value = self.hostile(name)
            frame[name] = list(frame[name]) + [value]  # one hostile member among valid ones
            name = f"{name}[]"
        else:
            what, value = self.hostile(name)
            frame[name.rstrip("[]")] = value
        text = json.dumps(frame, ensure_ascii=r.random() < 0.5)
        if value == "DEEP":
            text = text.replace('"DEEP"', nested_text(r.choice(DEPTHS), r))
        return f"field:{frame['type']}.{name}:{what}", text

    # -- structure --------------------------------------------------------------------------------
    def structural(self) -> tuple[str, str]:
        r = self.rng
        frame = self.valid()
        how = r.choice(["missing", "unknown-type", "no-type", "extra", "duplicate-key", "deep", "array", "scalar"])
        if how == "missing" and len(frame) > 1:
            del frame[r.choice([k for k in frame if k != "type"])]
        elif how == "unknown-type":
            frame["type"] = r.choice(["dance", "HELLO", "send ", "msg", "error", "sent", "", "welcome", "*", ">"])
        elif how == "no-type":
            del frame["type"]
        elif how == "extra":
            frame[r.choice(["x", "__proto__", "constructor", "from", "ref", "seq", "kind"])] = r.choice(
                CONFUSION + HUGE + WILDCARDS)
        elif how == "duplicate-key":
            text = json.dumps(frame)
            key = r.choice(list(frame))
            return "struct:duplicate-key", text[:-1] + f', "{key}": {json.dumps(r.choice(WILDCARDS + HUGE))}}}'
        elif how == "deep":
            return "struct:deep", nested_text(r.choice(DEPTHS), r)
        elif how == "array":
            return "struct:array", json.dumps([frame])
        elif how == "scalar":
            return "struct:scalar", r.choice(["null", "1", '"hello"', "true", "[]", "{}", "1e999", "-0"])
        return f"struct:{how}", json.dumps(frame)

    # -- bytes ------------------------------------------------------------------------------------
    def mutated(self) -> tuple[str, bytes]:
        r = self.rng
        source = json.dumps(self.valid(), ensure_ascii=False)
        if r.random() < 0.5:
            source = source.replace('"', '"' + r.choice(UNICODE), 1)  # multi-byte characters to cut through
        raw = bytearray(source.encode())
        how = r.choice(["truncate", "truncate-utf8", "replace", "insert", "splice", "swap"])
        i = r.randrange(len(raw))
        if how == "truncate":
            raw = raw[:i]
        elif how == "truncate-utf8":
            multi = [k for k, b in enumerate(raw) if b >= 0xC0]
            if multi:
                k = r.choice(multi)
                raw = raw[:k + 1] + raw[k + 2:] if r.random() < 0.5 else raw[:k + 1]
            else:
                raw = raw[:i]
        elif how == "replace":
            for _ in range(r.randrange(1, 4)):
                raw[r.randrange(len(raw))] = r.randrange(256)
        elif how == "insert":
            raw[i:i] = r.randbytes(r.randrange(1, 8))
        elif how == "splice":
            j = r.randrange(i, len(raw) + 1)
            raw[j:j] = raw[i:j] * r.randrange(1, 4)
        else:
            j = r.randrange(len(raw))
            raw[i], raw[j] = raw[j], raw[i]
        return f"bytes:{how}", bytes(raw)

    def junk(self) -> tuple[str, bytes]:
        r = self.rng
        how = r.choice(["random", "unicode", "empty", "whitespace", "nul", "bom"])
        if how == "random":
            return "junk:random", r.randbytes(r.randrange(1, 512))
        if how == "unicode":
            return "junk:unicode", "".join(chr(r.randrange(0x20, 0xD7FF)) for _ in range(r.randrange(1, 64))).encode()
        if how == "empty":
            return "junk:empty", b""
        if how == "whitespace":
            return "junk:whitespace", b" \t\r\n" * r.randrange(1, 1000)
        if how == "nul":
            return "junk:nul", b"\x00" * r.randrange(1, 64)
        return "junk:bom", b"\xef\xbb\xbf" + json.dumps(self.valid()).encode()

    def oversize(self) -> tuple[str, bytes]:
        """Above the frame limit (an error frame), rarely above the hard limit (close 1009)."""
        hard = self.rng.random() < 0.2
        n = self.max_frame * HARD_FRAME_FACTOR + 16 if hard else self.max_frame + 16
        f = {"type": "send", "id": self._id(), "to": self.users[0], "body": ""}
        body = "x" * (n - len(json.dumps(f)))
        f["body"] = body
        return ("oversize:hard" if hard else "oversize:frame"), json.dumps(f).encode()

    # -- one frame ------------------------------------------------------------------------------------
    def next(self) -> tuple[str, bytes, int]:
        """(label, payload, opcode). Invalid UTF-8 goes as a binary frame,
        rarely as a text frame (both reach the decoder)."""
        r = self.rng.random()
        if r < 0.12:
            f = self.valid()
            label, data = f"valid:{f['type']}", json.dumps(f).encode()
        elif r < 0.55:
            label, text = self.field_frame()
            data = text.encode("utf-8", "surrogatepass")
        elif r < 0.70:
            label, text = self.structural()
            data = text.encode()
        elif r < 0.92:
            label, data = self.mutated()
        elif r < 0.995:
            label, data = self.junk()
        else:
            label, data = self.oversize()
        try:
            data.decode()
            op = OP_TEXT
        except UnicodeDecodeError:
            op = OP_TEXT if self.rng.random() < 0.02 else OP_BINARY
            label += "+invalid-utf8" + ("(text)" if op == OP_TEXT else "")
        return label, data, op

    def hostile_hello(self) -> tuple[str, bytes, int]:
        r = self.rng
        f: dict[str, Any] = {"type": "hello"}
        field_name = r.choice(["cursor", "epoch"])
        what, value = self.hostile(field_name)
        f[field_name] = value
        text = json.dumps(f)
        if value == "DEEP":
            text = text.replace('"DEEP"', nested_text(r.choice(DEPTHS), r))
        return f"hello:{field_name}:{what}", text.encode(), OP_TEXT


def ws_frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """One masked client frame (fin or not)."""
    n = len(payload)
    b0 = (0x80 if fin else 0) | opcode
    mask = random.randbytes(4)
    if n < 126:
        head = bytes((b0, 0x80 | n))
    elif n < 65536:
        head = bytes((b0, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((b0, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + mask + apply_mask(payload, mask)


# ---------------------------------------------------------------- connections

class FuzzConn(WsConn):
    """One fuzz connection: counts what comes back, remembers what it sent last."""

    def __init__(self, run: FuzzRun) -> None:
        super().__init__(run.flusher)
        self.run = run
        self.sent: deque[tuple[str, bytes, int]] = deque(maxlen=REMEMBER)
        self.frames_sent = 0
        self.lifetime = 0
        self.ended_by: str | None = None  # "close" / "abort" when this side ended it
        self.sentinel = False  # the SENTINEL frame was answered (replays)
        self.last_rx = time.monotonic()  # when the edge last answered (or the connection opened)
        self.since_rx = 0  # frames sent since
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def send_raw(self, label: str, payload: bytes, op: int) -> None:
        if self.transport is None:
            return
        r = self.run.rng
        if len(payload) > 8 and r.random() < 0.02:  # fragmented: 2-3 pieces
            cuts = sorted(r.sample(range(1, len(payload)), min(2, len(payload) - 1)))
            pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)])]
            chunks = [ws_frame(op if k == 0 else OP_CONT, p, fin=k == len(pieces) - 1) for k, p in enumerate(pieces)]
            data = b"".join(chunks)
            label += "+fragmented"
        else:
            data = ws_frame(op, payload)
        if r.random() < 0.01:
            data += ws_frame(OP_PING, b"fz")
        if not self._out:
            self.flusher.mark(self)
        self._out.append(data)
        self.sent.append((label, payload, op))
        self.frames_sent += 1
        self.since_rx += 1
        self.run.count_sent(label)

    def on_text(self, payload: bytes) -> None:
        self.run.answers += 1
        self.since_rx = 0
        self.last_rx = time.monotonic()
        if b"sentinel.x" in payload:
            self.sentinel = True
        try:
            f = _decode(payload)
        except msgspec.DecodeError:
            self.run.bad_answers += 1
            return
        if isinstance(f, dict) and f.get("type") == "error":
            code = f.get("code")
            self.run.errors[str(code)] += 1
            if code == "internal":
                self.run.internal_errors.append({"error": f, "recent": self.recent(8)})

    def on_closed(self) -> None:
        code = self.close_code if self.close_code is not None else 1006
        if self.ended_by is None or code == 1011:  # not our own close or abort
            self.run.closes[str(code)] += 1
        if code == 1011:
            self.run.closes_1011.append(list(self.sent))
        if not self.done.done():
            self.done.set_result(None)

    def recent(self, n: int) -> list[dict]:
        return [shown(*sent) for sent in list(self.sent)[-n:]]


def shown(label: str, payload: bytes, op: int, limit: int = 600) -> dict:
    """A sent frame for the report: its kind, opcode and payload (as a Python
    bytes literal, exact up to ``limit`` characters)."""
    text = repr(payload)
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(payload)} bytes)"
    return {"label": label, "opcode": "text" if op == OP_TEXT else "binary", "payload": text}


class ControlConn(WsConn):
    """One side of the control pair: hello, then messages to the peer, acks what it gets."""

    def __init__(self, run: FuzzRun, user: str) -> None:
        super().__init__(run.flusher)
        self.run = run
        self.user = user
        self.synced: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sent_at: dict[str, float] = {}  # message id -> when sent
        self.seq_of: dict[str, int] = {}  # message id -> seq answered in `sent`
        self.received: list[tuple[int, str, str, float]] = []  # (seq, id, from, when) of the pair's conversation
        self.errors: list[dict] = []  # errors that are not retryable
        self.frames: dict[str, str] = {}  # message id -> the send frame (resent on a retryable error)
        self.retried = 0
        self.conv = ""
        self.last_rx = time.monotonic()

    def on_open(self) -> None:
        self.send_text('{"type":"hello","cursor":null,"epoch":null}')

    def on_text(self, payload: bytes) -> None:
        now = time.monotonic()
        f = _decode(payload)
        t = f.get("type")
        if t == "msg":
            if f.get("conv") == self.conv:
                self.received.append((f["seq"], f["id"], f["from"], now))
                self.last_rx = now
            if "cursor" in f:
                self.send_text('{"type":"ack","cursor":%d}' % f["cursor"])
        elif t == "sent":
            self.seq_of[f["id"]] = f["seq"]
        elif t == "synced":
            if not self.synced.done():
                self.synced.set_result(None)
        elif t == "error":
            frame = self.frames.get(f.get("ref"))
            if f.get("retry") and frame is not None:
                # What the SDK does: the same frame again (same id: stored
                # once), after a short pause. Counted, not a failure by itself:
                # loss and silence are judged on what finally arrives.
                self.retried += 1
                asyncio.get_running_loop().call_later(RETRY_AFTER, self.send_text, frame)
            else:
                self.errors.append(f)

    def on_closed(self) -> None:
        if not self.synced.done():
            self.synced.set_exception(ConnectionError(f"control connection closed ({self.close_code})"))


# ---------------------------------------------------------------- the run

@dataclass(kw_only=True)
class FuzzParams:
    frames: int = 1_000_000
    connections: int | None = None  # None: enough to stay under the per-connection limit at ``rate``
    rate: float = 2000.0  # frames/s offered in total
    seed: int | None = None
    ws_url: str | None = None  # an existing edge; default: start `switchboard up`
    data_dir: str | None = None  # with ws_url: where the dev secret is (tokens)
    secret: str | None = None  # with ws_url: the JWT secret
    pids: list[int] = field(default_factory=list)  # with ws_url: fabric processes for the crash check
    env: dict[str, str] = field(default_factory=dict)  # SWITCHBOARD_* of the fabric the bench starts
    max_frame: int = MAX_FRAME
    max_body: int = MAX_BODY
    max_silence: float = 5.0  # seconds the control pair may go without a delivery
    minimise: bool = True
    progress: bool = True


@dataclass(kw_only=True)
class ControlReport:
    sent: int = 0
    retried: int = 0  # sends answered with a retryable error and sent again
    answered: int = 0  # `sent` received
    delivered: int = 0  # messages of the pair's conversation received by the peer
    lost: list[str] = field(default_factory=list)
    out_of_order: int = 0
    duplicates: int = 0
    errors: list[dict] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    latency_ms_p50: float | None = None
    latency_ms_p99: float | None = None
    latency_ms_max: float | None = None
    longest_silence_s: float = 0.0


@dataclass(kw_only=True)
class FuzzReport:
    command: str
    seed: int
    ws_url: str
    frames: int
    seconds: float
    frames_per_sec: float
    connections: int
    connections_opened: int
    handshake_failures: dict[str, int]
    answers: int
    errors_by_code: dict[str, int]
    closes_by_code: dict[str, int]
    frames_by_kind: dict[str, int]
    closes_1011: list[list[dict]]
    stalls: list[list[dict]]
    internal_errors: list[dict]
    reproducers: list[dict]
    crashed: list[str]
    control: ControlReport
    problems: list[str]
    failures: list[str]

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "ok": self.ok}, indent=2, default=str)


class FuzzRun:
    def __init__(self, p: FuzzParams, *, ws_url: str, token: Callable[[str], str], seed: int) -> None:
        self.p = p
        self.ws_url = ws_url
        self.token = token
        self.seed = seed
        self.rng = random.Random(seed)
        self.flusher = Flusher(asyncio.get_running_loop())
        tag = uuid.uuid4().hex[:6]
        self.users = [f"fz{tag}{i}" for i in range(FUZZ_USERS)]
        self.gen = FrameGen(random.Random(seed + 1), self.users, max_frame=p.max_frame, max_body=p.max_body)
        self.connections = p.connections or max(MIN_CONNECTIONS, math.ceil(p.rate / FRAMES_PER_CONN_SEC))
        self.sent = 0
        self.by_kind: Counter[str] = Counter()
        self.answers = 0
        self.bad_answers = 0
        self.errors: Counter[str] = Counter()
        self.closes: Counter[str] = Counter()  # close code (or client-close/abort) -> connections
        self.closes_1011: list[list[tuple[str, bytes, int]]] = []  # each 1011 connection's last frames
        self.internal_errors: list[dict] = []
        self.stalls: list[list[tuple[str, bytes, int]]] = []  # stalled connections' last frames
        self.opened = 0
        self.handshake_failures: Counter[str] = Counter()
        self.live: list[FuzzConn] = []
        self.stop = False
        self.control: tuple[ControlConn, ControlConn] | None = None
        self.control_sent = 0

    def url(self, user: str) -> str:
        return f"{self.ws_url}?token={self.token(user)}"

    def count_sent(self, label: str) -> None:
        self.sent += 1
        head, _, rest = label.partition(":")
        self.by_kind[head + ":" + rest.rsplit(":", 1)[-1].split("+")[0] if head in ("field", "hello") else
                     label.split("+")[0]] += 1

    # -- fuzz connections -----------------------------------------------------------------------
    async def slot(self, i: int) -> None:
        rng = self.rng
        while not self.stop:
            conn = FuzzConn(self)
            try:
                await conn.connect(self.url(rng.choice(self.users)), timeout=10)
            except HandshakeError as exc:
                self.handshake_failures[str(exc.status)] += 1
                await asyncio.sleep(0.2)
                continue
            except (TimeoutError, OSError) as exc:
                self.handshake_failures[type(exc).__name__] += 1
                await asyncio.sleep(0.2)
                continue
            self.opened += 1
            if self.sent >= self.p.frames:  # the pacer is done: no hellos past the frame budget
                conn.close(1000)
                return
            if rng.random() < 0.15:
                for _ in range(rng.randrange(1, 3)):
                    conn.send_raw(*self.gen.hostile_hello())
            conn.send_raw("hello:valid", b'{"type":"hello","cursor":null,"epoch":null}', OP_TEXT)
            conn.lifetime = max(1, int(rng.expovariate(1 / MEAN_LIFETIME)))
            self.live.append(conn)
            await conn.done  # the pacer fills it; done when closed by either side
            if conn in self.live:
                self.live.remove(conn)

    def retire(self, conn: FuzzConn) -> None:
        """End a connection whose lifetime is over: a close, or an abrupt TCP abort."""
        if conn in self.live:
            self.live.remove(conn)
        t = conn.transport
        if t is not None:
            conn.ended_by = "abort" if self.rng.random() < 0.2 else "close"
            self.closes[f"client-{conn.ended_by}"] += 1
            if conn.ended_by == "abort":
                t.abort()
            else:
                conn.close(1000)
        if not conn.done.done():
            conn.done.set_result(None)

    def check_stalls(self) -> None:
        now = time.monotonic()
        for c in list(self.live):
            if c.since_rx >= STALL_FRAMES and now - c.last_rx > STALL_SEC:
                self.stalls.append(list(c.sent))
                self.retire(c)

    async def pacer(self) -> None:
        """Send ``rate`` frames/s spread over the open connections, in ticks."""
        p = self.p
        start = next_check = time.monotonic()
        k = 0
        while self.sent < p.frames:
            await asyncio.sleep(0.01)
            budget = min(int((time.monotonic() - start) * p.rate) - self.sent, p.frames - self.sent)
            conns = [c for c in self.live if c.is_open and c.transport is not None
                     and c.transport.get_write_buffer_size() < MAX_WRITE_BUFFER]
            if not conns:
                continue
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + 1.0
                self.check_stalls()
            budget = min(budget, len(conns) * 8)  # at most 8 per connection per tick: stays under its limit
            for _ in range(max(0, budget)):
                c = conns[k % len(conns)]
                k += 1
                if not c.is_open:
                    continue
                c.send_raw(*self.gen.next())
                if c.frames_sent >= c.lifetime:
                    self.retire(c)

    # -- control pair ----------------------------------------------------------------------------
    async def start_control(self) -> None:
        tag = uuid.uuid4().hex[:6]
        a, b = ControlConn(self, f"ctla{tag}"), ControlConn(self, f"ctlb{tag}")
        conv = ids.dm_conv(a.user, b.user)
        a.conv = b.conv = conv
        for c in (a, b):
            await c.connect(self.url(c.user), timeout=10)
        await asyncio.wait_for(asyncio.gather(a.synced, b.synced), 15)
        self.control = (a, b)

    async def control_loop(self) -> None:
        assert self.control is not None
        a, b = self.control
        n = 0
        while not self.stop:
            for src, dst in ((a, b), (b, a)):
                n += 1
                mid = f"c{n}"
                src.sent_at[mid] = time.monotonic()
                src.frames[mid] = json.dumps({"type": "send", "id": mid, "to": dst.user, "body": f"control {n}"})
                src.send_text(src.frames[mid])
            self.control_sent = n
            await asyncio.sleep(CONTROL_INTERVAL)

    async def control_settle(self) -> None:
        """Wait until every control message was delivered (or the deadline)."""
        assert self.control is not None
        a, b = self.control
        deadline = time.monotonic() + CONTROL_DEADLINE
        while time.monotonic() < deadline:
            got = {m[1] for c in (a, b) for m in c.received}
            if all(mid in got for c in (a, b) for mid in c.sent_at):
                return
            await asyncio.sleep(0.05)

    def control_report(self, run_start: float, run_end: float) -> ControlReport:
        assert self.control is not None
        a, b = self.control
        rep = ControlReport()
        lat: list[float] = []
        for src, dst in ((a, b), (b, a)):
            rep.sent += len(src.sent_at)
            rep.retried += src.retried
            rep.answered += sum(1 for m in src.sent_at if m in src.seq_of)
            got = {}
            for _seq, mid, frm, when in dst.received:
                if frm == src.user:
                    if mid in got:
                        rep.duplicates += 1
                    got[mid] = when
            rep.delivered += len(got)
            for mid, at in src.sent_at.items():
                if mid not in got:
                    rep.lost.append(f"{src.user}->{dst.user} {mid}")
                else:
                    lat.append(got[mid] - at)
            rep.errors += src.errors
            if not src.is_open:
                rep.closed.append(f"{src.user}: closed with {src.close_code}")
        for c in (a, b):  # each side sees the conversation's seqs in order (its own and the peer's)
            seqs = [m[0] for m in c.received]
            rep.out_of_order += sum(1 for x, y in zip(seqs, seqs[1:]) if y <= x)
            times = [run_start] + [m[3] for m in c.received if m[3] <= run_end] + [run_end]
            rep.longest_silence_s = round(max(rep.longest_silence_s, *(y - x for x, y in zip(times, times[1:]))), 3)
        if lat:
            lat.sort()
            rep.latency_ms_p50 = round(lat[len(lat) // 2] * 1000, 1)
            rep.latency_ms_p99 = round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000, 1)
            rep.latency_ms_max = round(lat[-1] * 1000, 1)
        rep.lost = rep.lost[:20]
        rep.errors = rep.errors[:20]
        return rep

    # -- minimisation -------------------------------------------------------------------------------------
    async def reproduce(self, recent: list[tuple[str, bytes, int]], tried: set[bytes]) -> dict | None:
        """Replay each recent frame alone (after a valid hello, unless it is a
        hello itself) on a fresh connection, newest first; the first that is
        closed 1011 is shrunk (:meth:`shrink`) and returned as the reproducer."""
        for label, payload, op in reversed(recent):
            if payload in tried or len(tried) >= MINIMISE_TRIES:
                continue
            tried.add(payload)
            hello_first = not label.startswith("hello:")
            if await self.replay_one(payload, op, hello_first=hello_first) == 1011:
                small = await self.shrink(payload, op, hello_first)
                return {**shown(label, small, op, limit=2000), "after_valid_hello": hello_first,
                        "original_bytes": len(payload)}
        return None

    async def shrink(self, payload: bytes, op: int, hello_first: bool) -> bytes:
        """Delta debugging over bytes: drop chunks while the 1011 stays, within
        SHRINK_BUDGET replays."""
        budget = SHRINK_BUDGET
        n = 2
        while len(payload) >= 2 and budget > 0:
            size = math.ceil(len(payload) / n)
            for k in range(n):
                candidate = payload[:k * size] + payload[(k + 1) * size:]
                budget -= 1
                if candidate and await self.replay_one(candidate, op, hello_first=hello_first) == 1011:
                    payload, n = candidate, max(n - 1, 2)
                    break
                if budget <= 0:
                    break
            else:
                if n >= len(payload):
                    break
                n = min(len(payload), n * 2)
        return payload

    async def replay_one(self, payload: bytes, op: int, *, hello_first: bool) -> int | None:
        """The close code one frame gets on a fresh connection (None: still
        open once a sentinel frame sent after it was answered)."""
        conn = FuzzConn(self)
        try:
            await conn.connect(self.url(self.users[0]), timeout=10)
        except (TimeoutError, HandshakeError, OSError):
            return None
        out = [ws_frame(op, payload)]
        hello = ws_frame(OP_TEXT, b'{"type":"hello","cursor":null,"epoch":null}')
        out = [hello, *out] if hello_first else [*out, hello]
        conn._out += [*out, ws_frame(OP_TEXT, SENTINEL)]
        self.flusher.mark(conn)
        deadline = time.monotonic() + MINIMISE_WAIT
        while not conn.done.done() and not conn.sentinel and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        code = conn.close_code if conn.done.done() else None
        conn.close(1000)
        return code


async def fuzz(p: FuzzParams, *, ws_url: str, token: Callable[[str], str], command: str,
               processes: Callable[[], dict[str, psutil.Process]] | None = None,
               problems: Callable[[], list[str]] | None = None) -> FuzzReport:
    """Run the fuzzer against ``ws_url`` (in the running event loop)."""
    seed = p.seed if p.seed is not None else random.randrange(2**32)
    run = FuzzRun(p, ws_url=ws_url, token=token, seed=seed)
    before = processes() if processes else {}
    await run.start_control()
    control = asyncio.create_task(run.control_loop())
    slots = [asyncio.create_task(run.slot(i)) for i in range(run.connections)]
    progress = asyncio.create_task(_progress(run)) if p.progress else None
    t0 = time.monotonic()
    # Bounded even if the edge stops reading: at a tenth of the offered rate, plus a minute.
    limit = p.frames / p.rate * 10 + 60
    try:
        await asyncio.wait_for(run.pacer(), limit)
        timed_out = False
    except TimeoutError:
        timed_out = True
    t1 = time.monotonic()
    run.stop = True
    await asyncio.sleep(0.5)  # the last answers, and closes in flight
    await run.control_settle()
    control.cancel()
    for t in slots:
        t.cancel()
    if progress is not None:
        progress.cancel()
    for c in list(run.live):
        if c.transport is not None:
            c.close(1000)
    crep = run.control_report(t0, t1)
    for c in run.control or ():
        c.close(1000)
    await asyncio.sleep(0.2)
    after = processes() if processes else {}

    reproducers: list[dict] = []
    if p.minimise and run.closes_1011:
        tried: set[bytes] = set()
        for recent in run.closes_1011[:5]:
            found = await run.reproduce(recent, tried)
            if found and found not in reproducers:
                reproducers.append(found)

    crashed = [f"{name} (pid {proc.pid})" for name, proc in before.items() if not _alive(proc)]
    crashed += [f"{name}: not running at the end" for name in before if name not in after]
    failures: list[str] = []
    if timed_out:
        failures.append(f"sent only {run.sent} of {p.frames} frames within {limit:.0f} s")
    if run.closes["1011"]:
        failures.append(f"{run.closes['1011']} connections closed with 1011")
    if run.stalls:
        failures.append(f"{len(run.stalls)} connections stalled (no answer for {STALL_SEC:g} s)")
    if run.internal_errors:
        failures.append(f"{len(run.internal_errors)} error frames with code 'internal'")
    if crashed:
        failures.append(f"crashed: {', '.join(crashed)}")
    if crep.lost:
        failures.append(f"control pair lost {len(crep.lost)} messages")
    if crep.out_of_order or crep.duplicates:
        failures.append(f"control pair: {crep.out_of_order} out of order, {crep.duplicates} duplicates")
    if crep.closed:
        failures.append(f"control pair disconnected: {crep.closed}")
    if crep.errors:
        failures.append(f"control pair got {len(crep.errors)} error frames that are not retryable")
    if crep.longest_silence_s > p.max_silence:
        failures.append(f"control pair silent for {crep.longest_silence_s} s (> {p.max_silence})")
    seconds = t1 - t0
    return FuzzReport(
        command=command, seed=seed, ws_url=ws_url, frames=run.sent, seconds=round(seconds, 2),
        frames_per_sec=round(run.sent / seconds, 1) if seconds else 0.0, connections=run.connections,
        connections_opened=run.opened, handshake_failures=dict(run.handshake_failures), answers=run.answers,
        errors_by_code=dict(run.errors.most_common()), closes_by_code=dict(run.closes.most_common()),
        frames_by_kind=dict(run.by_kind.most_common()),
        closes_1011=[[shown(*sent) for sent in recent[-8:]] for recent in run.closes_1011[:5]],
        stalls=[[shown(*sent) for sent in recent[-8:]] for recent in run.stalls[:5]],
        internal_errors=run.internal_errors[:5], reproducers=reproducers, crashed=crashed, control=crep,
        problems=(problems() if problems else [])[:10], failures=failures)


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


async def _progress(run: FuzzRun) -> None:
    t0 = time.monotonic()
    while True:
        await asyncio.sleep(1.0)
        ctl = run.control or ()
        delivered = sum(len(c.received) for c in ctl)
        errors, retried = sum(len(c.errors) for c in ctl), sum(c.retried for c in ctl)
        print(f"[{time.monotonic() - t0:6.1f}s] frames {run.sent:>9}  answers {run.answers:>9}  "
              f"conns {run.opened:>6}  1011 {run.closes['1011']}  control {delivered}/{2 * run.control_sent}"
              + (f"  ctl-resent {retried}" if retried else "") + (f"  ctl-errors {errors}" if errors else ""),
              file=sys.stderr, flush=True)


def run(p: FuzzParams, *, command: str) -> FuzzReport:
    """Start ``switchboard up`` (unless ``ws_url``) and fuzz it."""
    raise_nofile()
    if p.ws_url:
        secret = p.secret or (auth.dev_secret(p.data_dir) if p.data_dir else None)
        if not secret:
            raise ValueError("--ws needs --secret or --data (the JWT secret)")
        procs = (lambda: fabric_processes(p.pids)) if p.pids else None
        return asyncio.run(fuzz(p, ws_url=p.ws_url, token=lambda u: auth.issue(secret, u, ttl_sec=86400),
                                command=command, processes=procs))
    with FabricProcess(env=p.env) as fab:
        return asyncio.run(fuzz(p, ws_url=fab.ws_url, token=fab.token, command=command,
                                processes=fab.processes, problems=fab.problems))


def render(r: FuzzReport) -> str:
    lines = [f"fuzz {'PASS' if r.ok else 'FAIL'}: {r.frames} frames in {r.seconds} s ({r.frames_per_sec}/s) "
             f"over {r.connections_opened} connections ({r.connections} at a time), seed {r.seed}",
             f"answers {r.answers}; errors by code {r.errors_by_code}",
             f"closes by code {r.closes_by_code}; handshake failures {r.handshake_failures or 'none'}",
             f"frames by kind: {dict(list(r.frames_by_kind.items())[:12])}",
             f"control pair: {r.control.sent} sent ({r.control.retried} resent on a retryable error), "
             f"{r.control.delivered} delivered, lost {len(r.control.lost)}, "
             f"out of order {r.control.out_of_order}, latency p50/p99/max {r.control.latency_ms_p50}/"
             f"{r.control.latency_ms_p99}/{r.control.latency_ms_max} ms, longest silence "
             f"{r.control.longest_silence_s} s",
             f"crashed processes: {r.crashed or 'none'}"]
    for f in r.failures:
        lines.append(f"FAILURE: {f}")
    for e in r.control.errors[:3]:
        lines.append(f"control pair error: {e}")
    if r.control.lost:
        lines.append(f"control pair lost (first): {r.control.lost[:5]}")
    for rep in r.reproducers:
        lines.append(f"reproducer ({rep['label']}, {rep['opcode']} frame"
                     f"{' after a valid hello' if rep['after_valid_hello'] else ''}, shrunk from "
                     f"{rep['original_bytes']} bytes): {rep['payload']}")
    if r.closes_1011 and not r.reproducers:
        lines.append("a 1011 connection's last frames (no single frame reproduced it):")
        lines += [f"  {e['label']}: {e['payload'][:200]}" for e in r.closes_1011[0][-8:]]
    if r.stalls:
        lines.append("a stalled connection's last frames:")
        lines += [f"  {e['label']}: {e['payload'][:200]}" for e in r.stalls[0][-8:]]
    for e in r.internal_errors[:3]:
        lines.append(f"internal error {e['error']} after: {[x['label'] for x in e['recent']]}")
    for line in r.problems:
        lines.append(f"fabric log: {line[:300]}")
    cmd = r.command if "seed" in r.command.lower() else f"{r.command} --seed {r.seed}"
    lines.append(f"\nreproduce: {cmd}")
    return "\n".join(lines)
