"""Two cells: ``switchboard cluster up --cells 2`` (sbctl/cells.py), real nats-servers.

Cell 1 and cell 2 are two NATS clusters (one node each here; 3 in
production) joined by gateways. Alice's client is on cell 1's edge, Bob's on
cell 2's; the streams, the sequencer and the archiver are in cell 1. Each
user has an SDK client that sends (it resends the same id while the answer
says retry) and a raw socket that records every frame its edge writes (the
SDK would hide a duplicate). What it protects:

- the supercluster forms and JetStream places MESSAGES and INBOX in cell 1
  (a launcher whose admin step reached cell 2 would place them there, and a
  node without a gateway would never deliver across cells);
- a message crosses cells both ways: Bob's send goes from cell 2's edge to
  the sequencer in cell 1 and back (request/reply over the gateway), and
  INBOX's republish reaches Bob's edge in cell 2 by interest;
- cell 2's NATS is frozen (SIGSTOP, 3 s) then killed and restarted by the
  launcher while both keep sending: afterwards every send was answered
  ``sent``, MESSAGES and the archive hold each message exactly once with
  seqs 1..N, each user's INBOX holds exactly N entries, each sender's
  messages are in the order sent, and each raw socket received seqs 1..N
  exactly once and in order (entries published while cell 2 was down came
  from the edge's INBOX re-read after its bus reconnected, not the live path);
- SIGINT stops every process of both cells.

It prints the cross-cell latency before the fault and the time to heal
(docs/benchmarks.md, "Two cells").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import signal
import sqlite3
import statistics
import time
from pathlib import Path

import msgspec
import nats
import pytest

from sbctl.embedded import pid_alive
from switchboard import frames
from switchboard_client import Client
from tests.e2e.helpers import STEP, Proc, Raw, descendants, unique, until
from tests.e2e.test_cluster_up import port_is_free, token

READY = "Switchboard cluster is up"
RATE_GAP = 0.1  # seconds between a sender's messages while cell 2 is down


def edge_ports() -> int:
    """A port P with P + 1 free (the edges of cell 1 and cell 2), below the
    kernel's ephemeral range: the launcher takes its NATS, gateway and
    metrics ports from that range (bind to port 0), and one of those landing
    on P + 1 would keep cell 2's edge from listening."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(200):
        p = random.randrange(10_000, low - 2)
        if port_is_free(p) and port_is_free(p + 1):
            return p
    raise AssertionError("no two adjacent free ports below the ephemeral range")


class _Noting(list):
    """The frames list of a :class:`TimedRaw`: notes when each ``msg`` arrived (by id)."""

    def __init__(self, arrived: dict[str, float]) -> None:
        super().__init__()
        self.arrived = arrived

    def append(self, f: dict) -> None:
        if f.get("type") == "msg":
            self.arrived.setdefault(f["id"], time.monotonic())
        super().append(f)


class TimedRaw(Raw):
    """A Raw socket that also notes when each ``msg`` frame arrived."""

    def __init__(self, ws) -> None:
        super().__init__(ws)
        self.arrived: dict[str, float] = {}
        self.frames = _Noting(self.arrived)


async def subject_msgs(nc: nats.NATS, stream: str, subject: str) -> list[frames.Msg]:
    """Every entry ``stream`` holds on ``subject``, in stream order (direct gets:
    the admin user may not answer an ordered consumer's flow control)."""
    out: list[frames.Msg] = []
    seq = 1
    while True:
        r = await nc.request(f"$JS.API.DIRECT.GET.{stream}", json.dumps({"seq": seq, "next_by_subj": subject}).encode(),
                             timeout=STEP)
        if (r.headers or {}).get("Status") == "404":
            return out
        assert r.headers and "Nats-Sequence" in r.headers, (r.headers, r.data)
        out.append(msgspec.json.decode(r.data, type=frames.Msg))
        seq = int(r.headers["Nats-Sequence"]) + 1


class Sender:
    """One user's sends in one conversation, one at a time (so seq order is send order)."""

    def __init__(self, client: Client, conv: str, name: str) -> None:
        self.client, self.conv, self.name = client, conv, name
        self.ids: list[str] = []
        self.sent_at: dict[str, float] = {}

    async def send(self, n: int, gap: float) -> None:
        for _ in range(n):
            mid = unique(f"{self.name}-")
            self.ids.append(mid)
            self.sent_at[mid] = time.monotonic()
            await self.client.send(conv=self.conv, body=f"{self.name} {len(self.ids)}", id=mid)
            await asyncio.sleep(gap)

    async def until_stopped(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.send(1, RATE_GAP)


@pytest.mark.timeout(180)
async def test_two_cells_deliver_once_in_order_across_a_cell_restart(tmp_path: Path):
    data = tmp_path / "cells"
    port = edge_ports()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")} | {"PYTHONUNBUFFERED": "1"}
    up = Proc(["cluster", "up", "--cells", "2", "--nats", "1", "--edges", "1", "--sequencers", "1",
               "--archivers", "1", "--data", str(data), "--port", str(port)], env=env, log=tmp_path / "cells.log")
    clients: list[Client] = []
    raws: list[Raw] = []
    try:
        out = await up.wait_output(READY, timeout=90)
        tree = descendants(up.pid)
        assert len(tree) == 2 + 5 + 1, (tree, out)  # 2 nats-servers, 5 roles in cell 1, 1 edge in cell 2
        cell = {int(m[1]): m for m in re.finditer(r"^cell (\d) \((\S+?)[,)].*?NATS (\S+) .*?monitoring (\S+) .*?"
                                                  r"edges (\S+)$", out, re.M)}
        assert set(cell) == {1, 2}, out
        procs = dict(re.findall(r"(\S+) (\d+)(?:,|$)", next(x for x in out.splitlines() if x.startswith("processes:"))
                                .removeprefix("processes: ")))
        creds = json.loads((data / "cluster" / "credentials.json").read_text())
        admin_urls = [u.replace("nats://", f"nats://admin:{creds['admin']}@") for u in (cell[1][3], cell[2][3])]

        nc = await nats.connect(servers=admin_urls[1:])  # from cell 2: the streams answer across the gateway
        try:
            for stream in ("MESSAGES", "INBOX"):
                info = await nc.jetstream().stream_info(stream)
                assert info.cluster is not None and info.cluster.name == cell[1][2], (stream, info.cluster)
        finally:
            await nc.close()

        ws1, ws2 = cell[1][5], cell[2][5]
        alice, bob = unique("alice"), unique("bob")
        tok = {u: token(u, data, env) for u in (alice, bob)}
        send_a = Client(url=ws1, token=tok[alice], fill_gaps=False)
        send_b = Client(url=ws2, token=tok[bob], fill_gaps=False)
        clients += [send_a, send_b]
        for c in clients:
            await c.connect(timeout=STEP)
        raw_a, raw_b = await TimedRaw.open(ws1, tok[alice]), await TimedRaw.open(ws2, tok[bob])
        raws += [raw_a, raw_b]
        for r in raws:
            await r.hello()

        # 1. Both ways, before any fault: cell 1 -> cell 2 and cell 2 -> cell 1.
        first = await send_a.send(to=bob, body="hello from cell 1", id=unique("alice-"))
        conv = first.conv
        a, b = Sender(send_a, conv, "alice"), Sender(send_b, conv, "bob")
        a.ids.append(first.id)
        await asyncio.gather(a.send(15, 0.05), b.send(15, 0.05))
        await raw_b.wait_msgs(31, conv, timeout=STEP)
        await raw_a.wait_msgs(31, conv, timeout=STEP)
        lat_ab = [raw_b.arrived[i] - a.sent_at[i] for i in a.ids[1:]]
        lat_ba = [raw_a.arrived[i] - b.sent_at[i] for i in b.ids]

        # 2. Cell 2's NATS frozen for 3 s, then killed (the launcher restarts it), while both keep sending.
        stop = asyncio.Event()
        senders = [asyncio.create_task(s.until_stopped(stop)) for s in (a, b)]
        await asyncio.sleep(1.0)
        c2 = int(procs["sb-c2-n1"])
        os.kill(c2, signal.SIGSTOP)
        await asyncio.sleep(3.0)
        os.kill(c2, signal.SIGKILL)
        t_kill = time.monotonic()
        await until(lambda: len({i for i in a.ids if raw_b.arrived.get(i, 0) > t_kill}) > 0, 30,
                    "an alice message reaching bob's socket in cell 2 after the restart")
        heal = min(t for i, t in raw_b.arrived.items() if t > t_kill) - t_kill
        await asyncio.sleep(2.0)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*senders), 60)  # every send answered `sent` (the SDK resends)

        # 3. Stored once, in order.
        ids = a.ids + b.ids
        n = len(ids)
        nc = await nats.connect(servers=admin_urls[:1])
        try:
            stored = await subject_msgs(nc, "MESSAGES", f"sb.msg.{conv}")
            assert [m.seq for m in stored] == list(range(1, n + 1)), [m.seq for m in stored]
            assert sorted(m.id for m in stored) == sorted(ids)  # each once, none lost
            by_seq = {m.id: m.seq for m in stored}
            for s in (a, b):  # a sender's messages in the order it sent them
                assert [by_seq[i] for i in s.ids] == sorted(by_seq[i] for i in s.ids), s.name
            for u in (alice, bob):
                box = await subject_msgs(nc, "INBOX", f"sb.user.{u}.inbox")
                assert [(m.conv, m.seq) for m in box] == [(conv, q) for q in range(1, n + 1)], u
        finally:
            await nc.close()

        def archived() -> list[tuple[int, str]] | None:
            with contextlib.closing(sqlite3.connect(data / "switchboard.db", timeout=5)) as db:
                rows = db.execute("SELECT seq, id FROM messages WHERE conv = ? ORDER BY seq", (conv,)).fetchall()
            return rows if len(rows) >= n else None

        rows = await until(archived, 30, "the archive to hold every message")
        assert rows == [(by_seq[i], i) for i in sorted(ids, key=by_seq.__getitem__)]

        # 4. Delivered once, in order, to each user's raw socket in its own cell.
        for who, r in (("alice", raw_a), ("bob", raw_b)):
            got = await r.wait_msgs(n, conv, timeout=30)
            assert [m["seq"] for m in got] == list(range(1, n + 1)), (who, [m["seq"] for m in got])
            assert not r.closed.is_set(), who

        print(f"\ncells: {n} messages; cross-cell latency cell 1 -> 2 median "
              f"{statistics.median(lat_ab) * 1000:.1f} ms max {max(lat_ab) * 1000:.1f} ms, cell 2 -> 1 median "
              f"{statistics.median(lat_ba) * 1000:.1f} ms max {max(lat_ba) * 1000:.1f} ms (send to the peer's "
              f"socket); heal after cell 2's NATS was killed: {heal:.2f} s to the first delivery in cell 2; "
              f"sent while the fault ran: {n - 31}")

        tree = descendants(up.pid)  # cell 2's node has a new pid
        up.p.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(up.p.wait, 60) == 0, up.output()[-3000:]
        left = [p for p in tree if pid_alive(p)]
        assert not left, (left, up.output()[-3000:])
    finally:
        for r in raws:
            await r.close()
        for c in clients:
            with contextlib.suppress(Exception):
                await c.close()
        up.close_tree()
