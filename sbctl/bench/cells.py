"""Two-cell benchmark: cross-cell latency and the time to heal after a cell's NATS restarts.

    python -m sbctl.bench.cells [--nats 1] [--rate 50] [--seconds 10] [--outage 3]

Starts ``switchboard cluster up --cells 2 --nats N --edges 2`` (sbctl/cells.py)
in a temporary data dir and three SDK clients: alice on cell 1's first edge
(the sender), carol on cell 1's second edge (same cell, another edge) and
bob on cell 2's first edge (the other cell). Then:

1. steady: alice sends ``rate`` messages/s for ``seconds``, alternately to
   bob and to carol; each message's latency is from just before ``send`` to
   its arrival at the recipient's client. Same-cell and cross-cell latency
   differ by what the cross-cell path adds: the gateway hop both ways (the
   recipient's INBOX republish crosses it; the streams are in cell 1).
2. fault: alice keeps sending to bob at ``rate``; every nats-server of
   cell 2 is frozen (SIGSTOP) for ``outage`` seconds, then SIGKILLed (the
   launcher restarts them). *Heal* is the time from the kill to the first
   message bob receives afterwards; *caught up* the time until bob has every
   message sent before the kill.
3. accounting: ``lost`` counts messages alice had answered ``sent`` that
   never reached the recipient's client (the SDK drops duplicates and holds
   order, so duplicates and order are checked on the raw sockets of
   tests/e2e/test_cells.py, not here).

Prints one table; the cluster is stopped (SIGINT) at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sbctl.supervisor import port_free
from switchboard import auth
from switchboard.tasks import stop_task
from switchboard_client import Client

READY = "Switchboard cluster is up"


def _free_run(n: int) -> int:
    """A port P with P .. P + n - 1 free (the 4 edges of 2 cells listen on
    consecutive ports), below the kernel's ephemeral range, from which the
    launcher takes its NATS, gateway and metrics ports (bind to port 0)."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(200):
        p = random.randrange(10_000, low - n)
        if all(port_free("127.0.0.1", p + i) for i in range(n)):
            return p
    raise SystemExit(f"no {n} consecutive free ports below {low}")


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000 if xs else float("nan")


class Inbox:
    """A recipient's client and when each message id arrived."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.arrived: dict[str, float] = {}
        self.seqs: dict[str, list[int]] = {}
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            m = await self.client.next_message()
            self.arrived.setdefault(m.id, time.monotonic())
            self.seqs.setdefault(m.conv, []).append(m.seq)

    async def close(self) -> None:
        await stop_task(self._task)
        await self.client.close()


async def _start(data: Path, nats: int, port: int) -> tuple[subprocess.Popen[bytes], str]:
    log = open(data / "cluster-up.log", "wb")  # noqa: SIM115 - closed with the process
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")} | {"PYTHONUNBUFFERED": "1"}
    up = subprocess.Popen([sys.executable, "-m", "sbctl", "cluster", "up", "--cells", "2", "--nats", str(nats),
                           "--edges", "2", "--sequencers", "1", "--archivers", "1", "--data", str(data),
                           "--port", str(port), "--log-level", "warning"],
                          env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                          start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        out = (data / "cluster-up.log").read_text(errors="replace")
        if READY in out:
            return up, out
        if up.poll() is not None:
            raise SystemExit(f"cluster up exited with {up.returncode}: {out[-2000:]}")
        await asyncio.sleep(0.2)
    up.kill()
    raise SystemExit("cluster up was not ready within 120 s")


async def run(nats: int, rate: float, seconds: float, outage: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="sb-cells-") as tmp:
        data = Path(tmp)
        port = _free_run(4)
        up, out = await _start(data, nats, port)
        inboxes: list[Inbox] = []
        alice: Client | None = None
        try:
            edges = {int(m[1]): m[2].split() for m in re.finditer(r"^cell (\d) .*? edges (.+)$", out, re.M)}
            procs = dict(re.findall(r"(\S+) (\d+)(?:,|$)", next(x for x in out.splitlines()
                                                                 if x.startswith("processes:"))[11:]))
            cell2 = [int(pid) for name, pid in procs.items() if name.startswith("sb-c2-")]
            secret = auth.existing_dev_secret(data)
            assert secret
            tag = uuid.uuid4().hex[:6]
            names = {k: f"{k}{tag}" for k in ("alice", "bob", "carol")}

            def client(who: str, url: str) -> Client:
                return Client(url=url, token=auth.issue(secret, names[who]), fill_gaps=False)

            alice = client("alice", edges[1][0])
            bob, carol = Inbox(client("bob", edges[2][0])), Inbox(client("carol", edges[1][1]))
            inboxes += [bob, carol]
            for c in (alice, bob.client, carol.client):
                await c.connect(timeout=30)
            sent_at: dict[str, float] = {}
            count = {"bob": 0, "carol": 0}
            convs: dict[str, str] = {}

            async def send(to: str) -> None:
                mid = f"m{uuid.uuid4().hex[:12]}"
                sent_at[mid] = time.monotonic()
                assert alice is not None
                r = await alice.send(to=names[to], body="x", id=mid)
                convs[to] = r.conv
                count[to] += 1

            # 1. steady
            gap = 1 / rate
            steady: dict[str, list[str]] = {"bob": [], "carol": []}
            t_end = time.monotonic() + seconds
            i = 0
            while time.monotonic() < t_end:
                to = ("bob", "carol")[i % 2]
                i += 1
                await send(to)
                steady[to].append(next(reversed(sent_at)))
                await asyncio.sleep(gap)
            await asyncio.sleep(1.0)
            lat = {to: [box.arrived[m] - sent_at[m] for m in steady[to] if m in box.arrived]
                   for to, box in (("bob", bob), ("carol", carol))}

            # 2. fault: cell 2's NATS frozen, then killed; alice keeps sending to bob.
            stop = asyncio.Event()

            async def keep_sending() -> None:
                while not stop.is_set():
                    await send("bob")
                    await asyncio.sleep(gap)

            sender = asyncio.create_task(keep_sending())
            await asyncio.sleep(1.0)
            for pid in cell2:
                os.kill(pid, signal.SIGSTOP)
            await asyncio.sleep(outage)
            before_kill = set(sent_at)
            for pid in cell2:
                os.kill(pid, signal.SIGKILL)
            t_kill = time.monotonic()
            deadline = t_kill + 60
            while not any(t > t_kill for t in bob.arrived.values()) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            heal = min((t for t in bob.arrived.values() if t > t_kill), default=float("nan")) - t_kill
            while not before_kill <= set(bob.arrived) | set(carol.arrived) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            caught_up = max(bob.arrived.get(m, carol.arrived.get(m, float("nan"))) for m in before_kill) - t_kill
            await asyncio.sleep(2.0)
            stop.set()
            await sender
            await asyncio.sleep(2.0)

            # 3. accounting
            lost = sum(count[to] - len(set(box.seqs.get(convs[to], [])))
                       for to, box in (("bob", bob), ("carol", carol)))
            return {"same_p50": _pct(lat["carol"], 0.5), "same_p99": _pct(lat["carol"], 0.99),
                    "cross_p50": _pct(lat["bob"], 0.5), "cross_p99": _pct(lat["bob"], 0.99),
                    "steady_msgs": len(lat["bob"]) + len(lat["carol"]), "heal_sec": heal, "caught_up_sec": caught_up,
                    "fault_msgs": count["bob"] - len(steady["bob"]), "lost": lost}
        finally:
            for box in inboxes:
                await box.close()
            if alice is not None:
                await alice.close()
            up.send_signal(signal.SIGINT)
            try:
                up.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(up.pid, signal.SIGKILL)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m sbctl.bench.cells", description=__doc__.split("\n")[0])
    p.add_argument("--nats", type=int, default=1, help="nats-servers per cell (default 1; production: 3)")
    p.add_argument("--rate", type=float, default=50.0, help="messages/s alice sends (default 50)")
    p.add_argument("--seconds", type=float, default=10.0, help="steady phase (default 10)")
    p.add_argument("--outage", type=float, default=3.0, help="seconds cell 2's NATS is frozen before the kill")
    a = p.parse_args()
    r = asyncio.run(run(a.nats, a.rate, a.seconds, a.outage))
    print(f"two cells, {a.nats} nats-server(s) per cell, {a.rate:g} msgs/s")
    print(f"  latency send -> recipient's client, same cell (other edge): p50 {r['same_p50']:.1f} ms, "
          f"p99 {r['same_p99']:.1f} ms")
    print(f"  latency send -> recipient's client, other cell:             p50 {r['cross_p50']:.1f} ms, "
          f"p99 {r['cross_p99']:.1f} ms  ({r['steady_msgs']:.0f} messages)")
    print(f"  cell 2 NATS frozen {a.outage:g} s then killed: first delivery in cell 2 {r['heal_sec']:.2f} s after "
          f"the kill, every earlier message there after {r['caught_up_sec']:.2f} s")
    print(f"  {r['fault_msgs']:.0f} messages sent to cell 2 in the fault phase; lost {r['lost']:.0f}")


if __name__ == "__main__":
    main()
