"""Small helpers shared by the ``scripts/measure-*`` prototypes.

Those scripts play one traffic pattern against a bare nats-server and report
its CPU per message; these are what several of them need besides their
pattern: the server's CPU, its streams, a fill of stored messages, and the
direct-get requests the edge does not make (yet).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable

import nats
import psutil

from switchboard.bus.conn import BusMsg, connect
from switchboard.bus.direct import DirectBatch
from switchboard.bus.directread import DirectReader
from switchboard.bus.jsack import decode_ack
from switchboard.bus.replies import Replies

# What bus/streams.py gives MESSAGES and INBOX ([streams] dedup_window_sec's default).
DEDUP_WINDOW_NS = 120 * 10**9


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


async def create_streams(url: str, *configs: dict[str, object]) -> None:
    """Create each stream through the JetStream API, as R1 file streams with
    direct gets and the hot path's dedup window unless a config says
    otherwise; RuntimeError naming the stream if the server refuses one."""
    nc = await nats.connect(url)
    try:
        for given in configs:
            cfg = {"storage": "file", "num_replicas": 1, "allow_direct": True,
                   "duplicate_window": DEDUP_WINDOW_NS, **given}
            answer = await nc.request(f"$JS.API.STREAM.CREATE.{cfg['name']}", json.dumps(cfg).encode(), timeout=5)
            error = json.loads(answer.data).get("error")
            if error:
                raise RuntimeError(f"stream {cfg['name']} refused: {error}")
    finally:
        await nc.close()


async def store_all(url: str, subjects: Iterable[str], body: bytes, *, window: int = 3_000) -> int:
    """Store ``body`` once on each of ``subjects``, in that order, over one
    connection, ``window`` stores in flight, each acknowledged (a publish
    without a reply may be dropped by a busy stream); returns how many were
    refused or unanswered."""
    bus = await connect([url], name="fill")
    replies = Replies(bus)
    replies.start()
    state = {"out": 0, "errors": 0}
    room = asyncio.Event()

    def acked(m: BusMsg | None, e: BaseException | None) -> None:
        state["out"] -= 1
        if e is not None or m is None or decode_ack(m.data).error is not None:
            state["errors"] += 1
        if state["out"] < window // 2:
            room.set()

    try:
        for subject in subjects:
            replies.request(subject, body, acked, timeout=60)
            state["out"] += 1
            if state["out"] >= window:
                room.clear()
                await room.wait()
        while state["out"]:
            await asyncio.sleep(0.05)
    finally:
        replies.stop()
        await bus.close()
    return state["errors"]


class BenchReader(DirectReader):
    """The edge's :class:`DirectReader` plus two batch requests it does not
    make: the last entry of each of several subjects, and entries by stream
    sequence over every subject."""

    async def last(self, *, stream: str, subjects: list[str], timeout: float) -> DirectBatch:
        """``multi_last``: at most 1,024 subjects (the server answers 413 above)."""
        req: dict[str, object] = {"multi_last": subjects, "batch": len(subjects)}
        return await self._request(stream, req, 0, f"{stream} (last of {len(subjects)} subjects)", timeout)

    async def by_seq(self, *, stream: str, start_seq: int, batch: int, timeout: float) -> DirectBatch:
        return await self._request(stream, {"seq": start_seq, "batch": batch}, start_seq - 1,
                                   f"{stream} (from {start_seq})", timeout)
