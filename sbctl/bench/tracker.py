"""Presence benchmark: N users on one edge, heartbeats running.

Starts a tracker as its own process (``switchboard presence``)
so its CPU can be measured alone, connects ``users`` users on one
PresenceReporter, waits until the tracker has them all online, then lets
heartbeats run for ``seconds`` and reports heartbeat messages per second
and the tracker's CPU (percent of one core). Used by the CLI benchmark
command; run alone with ``python -m sbctl.bench.tracker --nats-url URL``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid

import nats
import psutil

from switchboard import api, log, rpc
from switchboard.errors import Unavailable
from switchboard.presence.messages import QueryRequest
from switchboard.presence.reporter import PresenceReporter
from switchboard.subjects import Subjects


async def run(nats_url: str, users: int, seconds: float, *, interval_sec: float = 10.0,
              presence_url: str = "memory://") -> dict:
    subjects = Subjects(f"bench{uuid.uuid4().hex[:8]}")
    # The tracker as operators run it (`switchboard presence`), on a prefix of its own.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env["SWITCHBOARD_SUBJECT_PREFIX"] = subjects.prefix
    tracker = subprocess.Popen([sys.executable, "-m", "sbctl", "presence", "--nats", nats_url,
                                "--presence", presence_url, "--log-level", "warning"], env=env,
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    nc = await nats.connect(nats_url)
    reporter = PresenceReporter(nc=nc, subjects=subjects, edge_id="bench-edge", interval_sec=interval_sec)
    wire = {"msgs": 0, "bytes": 0}

    async def count(msg) -> None:
        wire["msgs"] += 1
        wire["bytes"] += len(msg.data)

    try:
        proc = psutil.Process(tracker.pid)
        await _wait_service(nc, subjects)
        await nc.subscribe(subjects.presence_hb_all, cb=count)
        names = [f"user{i}" for i in range(users)]
        t0 = time.perf_counter()
        await reporter.start()
        for u in names:
            reporter.connected(u)
        await _wait_online(nc, subjects, names[-1])
        connect_sec = time.perf_counter() - t0

        await asyncio.sleep(min(1.0, interval_sec))  # let the connect burst settle
        wire["msgs"] = wire["bytes"] = 0
        hb0 = reporter.heartbeats_sent
        cpu0 = _cpu(proc)
        t1 = time.perf_counter()
        await asyncio.sleep(seconds)
        elapsed = time.perf_counter() - t1
        cpu = _cpu(proc) - cpu0
        hbs = reporter.heartbeats_sent - hb0
        return {
            "users": users,
            "interval_sec": interval_sec,
            "seconds": round(elapsed, 2),
            "connect_all_sec": round(connect_sec, 3),
            "hb_msgs_per_sec": round(wire["msgs"] / elapsed, 3),
            "hb_msgs_sent": hbs,
            "hb_bytes_per_sec": round(wire["bytes"] / elapsed),
            "user_refreshes_per_sec": round(hbs and users * hbs / elapsed),
            "tracker_cpu_pct_of_core": round(100 * cpu / elapsed, 2),
            "tracker_rss_mb": round(proc.memory_info().rss / 2**20, 1),
        }
    finally:
        await reporter.stop()
        await nc.close()
        tracker.terminate()
        tracker.wait(10)


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


async def _wait_service(nc: nats.NATS, subjects: Subjects, timeout: float = 20.0) -> None:
    """Until the tracker answers a query (Unavailable: not started yet, or still subscribing)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await rpc.call(nc, api.PRESENCE_QUERY, QueryRequest(users=[]), subjects=subjects, timeout=0.5)
            return
        except Unavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def _wait_online(nc: nats.NATS, subjects: Subjects, user: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        reply = await rpc.call(nc, api.PRESENCE_QUERY, QueryRequest(users=[user]), subjects=subjects, timeout=5)
        if reply.users[0].online:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{user} not online after {timeout}s")
        await asyncio.sleep(0.05)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m sbctl.bench.tracker", description=__doc__.split("\n\n")[0])
    ap.add_argument("--nats-url", default=None, help="NATS URL (default: start an embedded nats-server)")
    ap.add_argument("--users", type=int, default=20_000, help="users online on one reporting edge (default 20,000)")
    ap.add_argument("--seconds", type=float, default=30.0, help="measured seconds of heartbeats (default 30)")
    ap.add_argument("--interval-sec", type=float, default=10.0,
                    help="the edge's heartbeat interval in seconds (default 10)")
    ap.add_argument("--presence-url", default="memory://",
                    help="the tracker's presence backend: memory:// or redis://host:port/db (default memory://)")
    args = ap.parse_args(argv)
    log.configure()  # logs to stderr: stdout is the JSON result

    result = run_on(args.nats_url, args.users, args.seconds, interval_sec=args.interval_sec,
                    presence_url=args.presence_url)
    print(json.dumps(result, indent=2))


def run_on(nats_url: str | None, users: int, seconds: float, *, interval_sec: float,
           presence_url: str) -> dict:
    """:func:`run` against ``nats_url``, or against an embedded nats-server of
    its own (a temporary JetStream dir) when it is None."""

    async def go(url: str) -> dict:
        return await run(url, users, seconds, interval_sec=interval_sec, presence_url=presence_url)

    if nats_url:
        return asyncio.run(go(nats_url))
    import tempfile

    from sbctl.embedded import EmbeddedNats

    with tempfile.TemporaryDirectory() as tmp, EmbeddedNats(store_dir=tmp, http_port=-1) as server:
        return asyncio.run(go(server.url))


if __name__ == "__main__":
    main()
