"""Delivery across real processes: `python -m sbctl sequencer|edge` as
children on a dedicated nats-server (so `$SRV` stats see only this test's
services). No mocks.
"""

from __future__ import annotations

import asyncio
import json

import nats
import pytest

from sbctl.embedded import free_port
from tests.e2e.helpers import (
    Proc,
    Raw,
    admin_init,
    deployment,
    fabric,
    make_settings,
    procs,
    role_env,
    sdk,
    seqs,
    stream_msgs,
    token,
    unique,
    ws_url,
)


async def service_stats(nats_url: str, name: str, wait: float = 0.5) -> list[dict]:
    """Every instance's answer to ``$SRV.STATS.<name>``."""
    nc = await nats.connect(nats_url)
    try:
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        await nc.publish(f"$SRV.STATS.{name}", b"", reply=inbox)
        out = []
        try:
            while True:
                m = await sub.next_msg(timeout=wait)
                out.append(json.loads(m.data))
        except nats.errors.TimeoutError:
            pass
        return out
    finally:
        await nc.close()


async def partition_owners(nats_url: str, settings) -> dict[int, str]:
    """Partition -> owning sequencer instance, as the lease bucket says."""
    from sequencer.partitions import bucket_name
    nc = await nats.connect(nats_url)
    try:
        kv = await nc.jetstream().key_value(bucket_name(settings))
        out = {}
        for key in await kv.keys():
            if key.startswith("p."):
                try:
                    out[int(key[2:])] = (await kv.get(key)).value.decode()
                except nats.js.errors.KeyNotFoundError:
                    pass  # released between keys() and get() (a rebalance): unowned right now
        return out
    finally:
        await nc.close()


@pytest.mark.parametrize("senders,per_sender", [(4, 40)])
async def test_two_sequencer_processes_contiguous_seq(make_nats, tmp_path, senders, per_sender):
    """Two sequencer processes share the partitions; concurrent senders in one
    conversation: its partition's owner keeps seq 1..N, no gap, no duplicate,
    and every reader gets them in order."""
    srv = make_nats()
    settings = make_settings(tmp_path, srv.url)
    shared_db = tmp_path / "shared.db"
    await admin_init(settings)  # role processes only check what they use exists
    with procs() as made:
        for i in range(2):
            made.append(Proc(["sequencer", "--nats", srv.url, "--store", f"sqlite:///{shared_db}",
                              "--data", str(tmp_path / f"seq{i}")],
                             env=role_env(settings), log=tmp_path / f"seq{i}.log"))
        for p in made:
            await p.wait_output("fabric up")
        # Rebalancing after the second one joined: a round or two.
        deadline = asyncio.get_running_loop().time() + 10
        while len(set((await partition_owners(srv.url, settings)).values())) < 2:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.2)
        async with fabric(settings, ("edge",)):
            users = [unique("s") for _ in range(senders)]
            reader_u = unique("r")
            clients = [await sdk(settings, u) for u in users]
            try:
                conv = (await clients[0].create_conversation(users[1:] + [reader_u])).conv
                reader = await Raw.open(ws_url(settings), token(settings, reader_u))
                await reader.hello()
                sdk_reader = await sdk(settings, reader_u, gap_wait=10.0)
                clients.append(sdk_reader)

                # Raw senders, every frame pipelined: the edge sees all of them at once.
                raws = [await Raw.open(ws_url(settings), token(settings, u)) for u in users]
                for r in raws:
                    await r.hello()
                errors: list[dict] = []

                async def burst(r: Raw, k: int) -> list[dict]:
                    refs = [f"{k}-{j}" for j in range(per_sender)]
                    for ref in refs:
                        await r.send({"type": "send", "id": ref, "conv": conv, "body": ref})
                    out = []
                    for ref in refs:
                        nth = 0
                        while (f := await r.reply(ref, timeout=30, nth=nth))["type"] == "error":
                            errors.append(f)  # resend the same id, as a client must on retry: true
                            assert f["retry"], f
                            await r.send({"type": "send", "id": ref, "conv": conv, "body": ref})
                            nth += 1
                        out.append(f)
                    return out

                results = await asyncio.gather(*(burst(r, k) for k, r in enumerate(raws)))
                total = senders * per_sender
                answered = sorted(f["seq"] for r in results for f in r)
                assert answered == list(range(1, total + 1))

                got = await reader.wait_msgs(total, timeout=20)
                await asyncio.sleep(0.2)
                # Each seq reaches the raw socket exactly once and in order: one
                # owner writes the conversation and fans out in seq order.
                assert seqs(reader.msgs()) == list(range(1, total + 1))
                assert len({m["id"] for m in got}) == total
                ordered = [(await sdk_reader.next_message(10)).seq for _ in range(total)]
                assert ordered == list(range(1, total + 1))

                stored = await stream_msgs(settings, conv)
                assert [m.seq for m in stored] == list(range(1, total + 1))
                assert sorted(m.body for m in stored) == sorted(f"{k}-{j}" for k in range(senders)
                                                                for j in range(per_sender))
                # Both processes run and split the partitions between them.
                stats = await service_stats(srv.url, "sb-sequencer")
                assert len(stats) == 2
                owned = await partition_owners(srv.url, settings)
                assert len(set(owned.values())) == 2 and len(owned) == settings.partitions, owned
                assert errors == [], f"{len(errors)} sends answered with an error, first: {errors[0]}"
                for r in (reader, *raws):
                    await r.close()
            finally:
                for c in clients:
                    await c.close()


async def test_edge_process_killed_client_moves_to_another_edge(make_nats, tmp_path):
    """An edge process dies (SIGKILL) mid-stream; sender and receiver (SDK)
    reconnect to another edge process. Nothing is lost, nothing stored twice."""
    srv = make_nats()
    n_total = 300
    async with deployment(tmp_path, srv.url, roles=("sequencer",)) as dep:
        settings = dep.settings
        ports = [free_port(), free_port()]
        with procs() as made:
            for i, port in enumerate(ports):
                made.append(Proc(["edge", "--nats", srv.url, "--port", str(port), "--edge-id", f"e{i}",
                                  "--data", str(tmp_path / f"edge{i}")],
                                 env=role_env(settings), log=tmp_path / f"edge{i}.log"))
            for p in made:
                await p.wait_output("fabric up")
            url_b = ws_url(settings, ports[1])
            alice, bob = unique("alice"), unique("bob")
            sender = await sdk(settings, alice, port=ports[0])
            receiver = await sdk(settings, bob, port=ports[0])
            try:
                received: list = []

                async def receive():
                    while len({m.seq for m in received}) < n_total:
                        received.append(await receiver.next_message(30))

                rx = asyncio.create_task(receive())

                async def send_all():
                    for i in range(n_total):
                        await sender.send(to=bob, body=f"n{i}", id=f"n{i}")

                tx = asyncio.create_task(send_all())
                while len(received) < 60:
                    assert not tx.done() or tx.exception() is None
                    await asyncio.sleep(0.005)
                # Both clients will reconnect to edge B (as a balancer would send them).
                sender.url = receiver.url = url_b
                made[0].kill()
                await asyncio.wait_for(tx, 60)
                await asyncio.wait_for(rx, 60)
                assert receiver.reconnects >= 1 and sender.reconnects >= 1
                got = seqs(received)
                assert sorted(set(got)) == list(range(1, n_total + 1))
                assert got == list(range(1, n_total + 1)), "out of order or duplicated after dedup"
                assert [m.body for m in received] == [f"n{i}" for i in range(n_total)]
                stored = await stream_msgs(settings, received[0].conv)
                # resends after the kill landed once each
                assert [m.seq for m in stored] == list(range(1, n_total + 1))
                assert [m.id for m in stored] == [f"n{i}" for i in range(n_total)]
            finally:
                await sender.close()
                await receiver.close()
