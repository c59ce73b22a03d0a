"""``bench receipts``: what receipts add to the cost of a 1:1 message.

The fabric runs in its own process (``switchboard up``, see
:mod:`sbctl.bench.fabric`); ``pairs`` sender/recipient pairs of raw
WebSocket clients run here. Two phases on the same fabric, fresh users each:

- ``plain``: senders send at ``rate`` msgs/s in total; recipients read the
  messages and send nothing back;
- ``receipts``: the same, and each recipient acks every message's cursor
  (a delivered receipt) and sends ``read`` for it (a read receipt); the phase
  ends when every sender has seen the read receipt of its last message.

Cost = CPU seconds of the fabric process and its nats-server per message
(sampled with psutil over each phase, minus what the idle fabric burns in the
same time, measured for 2 s before the phases). ``overhead_pct`` compares the two;
issue 4's target is at most 20 %.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field

import psutil
import websockets

from sbctl.bench.fabric import FabricProcess, raise_nofile

# The per-connection limits protect an edge from one abusive client; the bench
# sends many messages through few clients on purpose.
BENCH_ENV = {"SWITCHBOARD_RATE_PER_SEC": "1000000", "SWITCHBOARD_RATE_BURST": "1000000"}
DRAIN_TIMEOUT = 30.0  # seconds to wait for the last deliveries/receipts after sending stops


@dataclass
class _Pair:
    sender: str
    recipient: str
    a: object = None  # sender socket
    b: object = None  # recipient socket
    conv: str = ""
    sent: int = 0
    received: int = 0
    last_read: int = 0  # highest read watermark the sender saw
    receipts: int = 0  # receipt frames the sender got
    done: asyncio.Event = field(default_factory=asyncio.Event)


async def _open(url: str, token: str):
    ws = await websockets.connect(f"{url}?token={token}", max_size=None, compression=None, open_timeout=30)
    await ws.send(json.dumps({"type": "hello", "cursor": None, "epoch": None}))
    while json.loads(await ws.recv())["type"] != "synced":
        pass
    return ws


async def _sender_reader(p: _Pair, target: list[int]) -> None:
    async for data in p.a:
        f = json.loads(data)
        if f["type"] == "sent":
            p.conv = f["conv"]
        elif f["type"] == "receipt" and f["user"] == p.recipient:
            p.receipts += 1
            p.last_read = max(p.last_read, f["read"])
            if target[0] and p.last_read >= target[0]:
                p.done.set()


async def _recipient_reader(p: _Pair, with_receipts: bool, target: list[int]) -> None:
    async for data in p.b:
        f = json.loads(data)
        if f["type"] != "msg":
            continue
        p.received += 1
        if with_receipts:
            await p.b.send(json.dumps({"type": "ack", "cursor": f["cursor"]}))
            await p.b.send(json.dumps({"type": "read", "conv": f["conv"], "seq": f["seq"]}))
        elif target[0] and f["seq"] >= target[0]:
            p.done.set()


def _cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for pr in procs:
        t = pr.cpu_times()
        total += t.user + t.system
    return total


async def _idle_cpu_rate(fabric: FabricProcess, seconds: float) -> float:
    """CPU seconds per second the fabric burns with no traffic (heartbeats,
    timers, the archiver's polling): subtracted from each phase."""
    procs = list(fabric.processes().values())
    cpu0, t0 = _cpu(procs), time.monotonic()
    await asyncio.sleep(seconds)
    return (_cpu(procs) - cpu0) / (time.monotonic() - t0)


async def _phase(fabric: FabricProcess, *, pairs: int, rate: float, duration: float, with_receipts: bool,
                 idle_rate: float = 0.0) -> dict:
    tag = uuid.uuid4().hex[:6]
    ps = [_Pair(sender=f"rs{tag}{i}", recipient=f"rr{tag}{i}") for i in range(pairs)]
    for p in ps:
        p.a = await _open(fabric.ws_url, fabric.token(p.sender))
        p.b = await _open(fabric.ws_url, fabric.token(p.recipient))
    target = [0]  # the last seq of every conversation, once known
    tasks = [asyncio.create_task(_sender_reader(p, target)) for p in ps]
    tasks += [asyncio.create_task(_recipient_reader(p, with_receipts, target)) for p in ps]
    procs = list(fabric.processes().values())
    per_pair = max(1, int(rate * duration / pairs))
    total = per_pair * pairs
    cpu0, t0 = _cpu(procs), time.monotonic()
    for i in range(total):
        p = ps[i % pairs]
        p.sent += 1
        await p.a.send(json.dumps({"type": "send", "id": f"m{p.sent}", "to": p.recipient, "body": "x" * 40}))
        delay = t0 + (i + 1) / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    target[0] = per_pair
    for p in ps:  # a pair may have finished before the target was set
        if (with_receipts and p.last_read >= per_pair) or (not with_receipts and p.received >= per_pair):
            p.done.set()
    try:
        await asyncio.wait_for(asyncio.gather(*(p.done.wait() for p in ps)), DRAIN_TIMEOUT)
        complete = True
    except TimeoutError:
        complete = False
    wall = time.monotonic() - t0
    cpu = _cpu(procs) - cpu0
    for t in tasks:
        t.cancel()
    for p in ps:
        await p.a.close()
        await p.b.close()
    received = sum(p.received for p in ps)
    net = max(cpu - idle_rate * wall, 0.0)
    return {"messages": total, "received": received, "complete": complete, "seconds": round(wall, 2),
            "fabric_cpu_s": round(cpu, 3), "net_cpu_s": round(net, 3),
            "cpu_us_per_msg": round(net / max(received, 1) * 1e6, 1),
            "receipt_frames": sum(p.receipts for p in ps)}


async def run(*, pairs: int = 50, rate: float = 500.0, duration: float = 10.0, warmup: float = 2.0) -> dict:
    """Start a fabric, run a warm-up, then the plain and the receipts phase."""
    raise_nofile()
    with FabricProcess(env=BENCH_ENV) as fabric:
        if warmup > 0:
            await _phase(fabric, pairs=pairs, rate=rate, duration=warmup, with_receipts=True)
        idle = await _idle_cpu_rate(fabric, 2.0)
        plain = await _phase(fabric, pairs=pairs, rate=rate, duration=duration, with_receipts=False, idle_rate=idle)
        receipts = await _phase(fabric, pairs=pairs, rate=rate, duration=duration, with_receipts=True,
                                idle_rate=idle)
    overhead = (receipts["cpu_us_per_msg"] / plain["cpu_us_per_msg"] - 1) * 100 if plain["cpu_us_per_msg"] else None
    return {"params": {"pairs": pairs, "rate": rate, "duration": duration, "warmup": warmup},
            "idle_cpu_pct": round(idle * 100, 1), "plain": plain, "receipts": receipts,
            "overhead_pct": None if overhead is None else round(overhead, 1), "target_pct": 20}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="switchboard bench receipts",
                                 description="1:1 message cost with and without delivered+read receipts")
    ap.add_argument("--pairs", type=int, default=50, help="sender/recipient pairs (default 50)")
    ap.add_argument("--rate", type=float, default=500.0, help="total messages/s (default 500)")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of sending per phase (default 10)")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up traffic, not measured (default 2)")
    ap.add_argument("--json", action="store_true", help="print the report as JSON instead of lines")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result = asyncio.run(run(pairs=args.pairs, rate=args.rate, duration=args.duration, warmup=args.warmup))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for phase in ("plain", "receipts"):
            r = result[phase]
            print(f"{phase:9} msgs={r['messages']:>7} received={r['received']:>7} complete={r['complete']!s:5} "
                  f"fabric_cpu={r['fabric_cpu_s']:>7.2f}s net={r['net_cpu_s']:>7.2f}s "
                  f"{r['cpu_us_per_msg']:>8.1f} us/msg receipt_frames={r['receipt_frames']}")
        print(f"idle fabric CPU (subtracted): {result['idle_cpu_pct']} % of a core")
        print(f"receipts overhead: {result['overhead_pct']} % of the 1:1 message cost (target <= 20 %)")
    ok = result["plain"]["complete"] and result["receipts"]["complete"]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
