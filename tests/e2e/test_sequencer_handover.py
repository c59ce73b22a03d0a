"""Partition ownership under faults, on a real nats-server.

- Split brain: two sequencers that both write one partition (forced, no
  leases) never fork a conversation: the stream fence makes one of them
  reload and retry, and the retried write is a duplicate of the original.
- kill -9 of an owner: its partitions are owned again within the lease TTL
  plus a round; a client that keeps sending loses nothing and sees no
  duplicate.
- SIGSTOP/SIGCONT of an owner: the woken owner must not write once its lease
  is gone (it refuses what was waiting in its socket), and nothing forks.
"""

from __future__ import annotations

import asyncio
import re
import time

import msgspec
import nats
import pytest

from sequencer.partitions import bucket_name
from sequencer.service import Sequencer
from switchboard import events, frames, ids
from switchboard.bus import streams
from switchboard.store import Conversation, open_store
from switchboard.subjects import partition_of
from tests.e2e.helpers import make_settings, stream_msgs, unique, until

LEASE_TTL = 1.5  # short leases: handovers within seconds in tests
PARTITIONS = 8


async def _send_until_answered(nc, subject: str, req: events.SendRequest, timeout: float = 20.0) -> events.SendReply:
    """Send as a client must: the same id again on ``retry: true``."""
    last: list = []

    async def answered() -> events.SendReply | None:
        msg = await nc.request(subject, events.encode(req), timeout=10)
        reply = msgspec.json.decode(msg.data, type=events.SendReply)
        if reply.error is None:
            return reply
        assert reply.error.retry, reply.error
        last[:] = [reply.error]
        return None

    return await until(answered, timeout, lambda: f"{req.id} stored; still refused: {last}", every=0.05)


async def test_forced_split_brain_never_forks_a_conversation(nats_server, tmp_path):
    settings = make_settings(tmp_path, nats_server.url, partitions=PARTITIONS)
    ncs = [await nats.connect(nats_server.url) for _ in range(3)]
    stores = [open_store(settings.store_url) for _ in range(2)]
    seqs: list[Sequencer] = []
    try:
        await streams.ensure_streams(ncs[0].jetstream(), settings)
        members = ("ua", "ub", "uc")
        conv = "g-splitbrain"
        for st in stores:
            await st.open()
        await stores[0].create_conversation(Conversation(id=conv, members=members, kind="group", created_by="ua",
                                                         created_ts=0))
        everything = frozenset(range(PARTITIONS))
        for nc, st in zip(ncs, stores):
            s = Sequencer(settings=settings, nc=nc, store=st)
            await s.start(static_partitions=everything)  # both believe they own every partition
            seqs.append(s)
        subject = settings.subjects.send_part(partition_of(conv, PARTITIONS), conv)
        n = 120
        sem = asyncio.Semaphore(16)

        async def one(i: int) -> events.SendReply:
            async with sem:
                return await _send_until_answered(ncs[2], subject, events.SendRequest(
                    sender=members[i % 3], id=f"m{i}", conv=conv, body=f"b{i}"))

        replies = await asyncio.gather(*(one(i) for i in range(n)))
        assert sorted(r.seq for r in replies) == list(range(1, n + 1))
        stored = await stream_msgs(settings, conv)
        assert [m.seq for m in stored] == list(range(1, n + 1))  # no fork, no gap
        assert sorted(m.id for m in stored) == sorted(f"m{i}" for i in range(n))  # each once
        a, b = (s.pipeline.stats for s in seqs)
        # Both really wrote, and collided: otherwise this proves nothing.
        assert a["writes"] > 0 and b["writes"] > 0, (a, b)
        assert a["fence_retries"] + b["fence_retries"] > 0, (a, b)
    finally:
        for s in seqs:
            await s.stop()
        for st in stores:
            await st.close()
        for nc in ncs:
            await nc.close()


async def _last_stream_seq(nc, settings, conv: str) -> int:
    """The stream sequence of the conversation's last message in MESSAGES (the fence a writer sends)."""
    raw = await nc.jetstream().get_last_msg(streams.names(settings)[0], settings.subjects.msg(conv))
    return raw.seq


def _instance(unit) -> str:
    m = re.search(r"instance=(seq-[0-9a-f]+)", unit.output())
    assert m, unit.output()[-2000:]
    return m.group(1)


async def _owners(nc, settings) -> dict[int, str]:
    kv = await nc.jetstream().key_value(bucket_name(settings))
    out = {}
    for p in range(PARTITIONS):
        try:
            out[p] = (await kv.get(f"p.{p}")).value.decode()
        except Exception:  # noqa: BLE001 - not owned right now
            pass
    return out


async def _stats(nc, settings, instance: str) -> dict:
    msg = await nc.request(settings.subjects.api("sequencer", instance, "stats"), b"", timeout=5)
    return msgspec.json.decode(msg.data)


async def _shared_out(nc, settings) -> bool:
    """Whether both sequencers own some partitions."""
    return len(set((await _owners(nc, settings)).values())) >= 2


@pytest.mark.parametrize("fault", ["kill", "stop"])
async def test_owner_fault_hands_partitions_over_and_loses_nothing(make_nats, deploy, fault):
    srv = make_nats()
    d = await deploy(roles=("sequencer", "sequencer"), mode="processes", nats_url=srv.url, partitions=PARTITIONS,
                     lease_ttl=LEASE_TTL)
    victim, survivor = d.units
    settings = d.settings
    nc = await d.nats()
    await d.start("edge", mode="inprocess")
    await until(lambda: _shared_out(nc, settings), 10, "both sequencers owning partitions")
    victim_id, survivor_id = _instance(victim), _instance(survivor)
    # Conversations in the victim's partitions and in the other's.
    users = [unique("h") for _ in range(8)]
    clients = [await d.sdk(u) for u in users]
    pairs = [(clients[i], users[i + 1]) for i in range(0, 8, 2)]
    convs = [ids.dm_conv(users[i], users[i + 1]) for i in range(0, 8, 2)]
    n_per = 60
    sent: list = []

    go = asyncio.Event()
    go.set()
    idle = [asyncio.Event() for _ in pairs]

    async def sender(k: int, c, to: str, tag: str) -> None:
        for j in range(n_per):
            if not go.is_set():  # paused: say so, wait
                idle[k].set()
                await go.wait()
                idle[k].clear()
            sent.append(await c.send(to=to, body=f"{tag}-{j}"))
            await asyncio.sleep(0.01)
        idle[k].set()

    tasks = [asyncio.create_task(sender(k, c, to, f"p{k}")) for k, (c, to) in enumerate(pairs)]
    await asyncio.sleep(0.3)
    # Pause the senders so the victim's write count is exact at the fault.
    go.clear()
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in idle)), 10)
    before = await _stats(nc, settings, victim_id)
    t_fault = time.monotonic()
    if fault == "kill":
        victim.kill()
    else:
        victim.pause()
    go.set()

    async def all_owned_by_survivor() -> bool:
        now = await _owners(nc, settings)
        return len(now) == PARTITIONS and set(now.values()) == {survivor_id}

    # Every partition owned again, by the survivor, within 5 s.
    await until(all_owned_by_survivor, 5.0, "every partition owned by the survivor", every=0.05)
    handover = time.monotonic() - t_fault
    if fault == "stop":
        await asyncio.sleep(0.5)  # sends for its partitions wait in its socket meanwhile
        victim.resume()
        # Right after waking, before rebalancing can hand it partitions
        # back (that takes a round of each), it must not have written:
        # its leases lapsed while it was frozen.
        await asyncio.sleep(0.2)
        after = await _stats(nc, settings, victim_id)
        assert after["writes"] == before["writes"], (before, after)
        assert after["fence_retries"] == before["fence_retries"], (before, after)
    await asyncio.wait_for(asyncio.gather(*tasks), 60)
    assert len(sent) == n_per * len(pairs)
    for conv in convs:
        stored = await stream_msgs(settings, conv)
        assert [m.seq for m in stored] == list(range(1, n_per + 1)), conv
        assert len({m.id for m in stored}) == n_per
    # Each receiver got its conversation once, in order.
    for k in range(0, 8, 2):
        rc = clients[k + 1]
        got = [(await rc.next_message(10)) for _ in range(n_per)]
        assert [m.seq for m in got] == list(range(1, n_per + 1))
    print(f"{fault}: partitions owned again after {handover:.2f}s")


async def test_new_owner_repairs_the_fanout_a_dead_owner_left_undone(nats_server, tmp_path):
    """An owner dies between storing message N in MESSAGES and publishing its
    INBOX copies. The next owner, before writing N+1, publishes N's copies
    again: every mailbox gets N, then N+1 (and copies that did arrive are not
    stored twice, by their Msg-Id)."""
    settings = make_settings(tmp_path, nats_server.url, partitions=PARTITIONS)
    nc = await nats.connect(nats_server.url)
    store = open_store(settings.store_url)
    await store.open()
    seqs: list[Sequencer] = []
    try:
        await streams.ensure_streams(nc.jetstream(), settings)
        conv, members = "g-repair", ("ra", "rb")
        await store.create_conversation(Conversation(id=conv, members=members, kind="group", created_by="ra",
                                                     created_ts=0))
        everything = frozenset(range(PARTITIONS))
        subject = settings.subjects.send_part(partition_of(conv, PARTITIONS), conv)
        first = Sequencer(settings=settings, nc=nc, store=store)
        await first.start(static_partitions=everything)
        seqs.append(first)
        await _send_until_answered(nc, subject, events.SendRequest(sender="ra", id="m1", conv=conv, body="1"))
        await first.stop()
        seqs.clear()
        # What an owner that dies right after the MESSAGES ack of m2 leaves
        # behind: m2 stored exactly as the sequencer writes it (same Msg-Id,
        # same fence), and no INBOX copy of it anywhere.
        m2 = frames.Msg(conv=conv, seq=2, id="m2", from_="ra", body="2", ts=int(time.time() * 1000))
        ack = await nc.jetstream().publish(settings.subjects.msg(conv), frames.encode(m2), headers={
            "Nats-Msg-Id": f"{conv}:ra:m2", "Nats-Expected-Last-Subject-Sequence": str(await _last_stream_seq(
                nc, settings, conv))})
        assert not ack.duplicate
        second = Sequencer(settings=settings, nc=nc, store=store)
        await second.start(static_partitions=everything)
        seqs.append(second)
        r3 = await _send_until_answered(nc, subject, events.SendRequest(sender="rb", id="m3", conv=conv, body="3"))
        assert r3.seq == 3
        assert second.pipeline.stats["repairs"] == 1
        # rb's mailbox: 1, 2, 3 in this order, each once.
        _, inbox_stream, _ = streams.names(settings)
        sub = await nc.jetstream().subscribe(settings.subjects.inbox("rb"), ordered_consumer=True)
        got = []
        for _ in range(3):
            got.append(msgspec.json.decode((await sub.next_msg(timeout=5)).data)["seq"])
        assert got == [1, 2, 3]
        with pytest.raises(nats.errors.TimeoutError):
            await sub.next_msg(timeout=0.3)
        await sub.unsubscribe()
    finally:
        for s in seqs:
            await s.stop()
        await store.close()
        await nc.close()
