"""Small helpers shared by the ``scripts/measure-*`` prototypes.

Those scripts play one traffic pattern against a bare nats-server and report
its CPU per message; these are the two things each of them needs besides its
pattern.
"""

from __future__ import annotations

import json

import nats
import psutil

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
