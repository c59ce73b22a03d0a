"""Partition leases on a real nats-server: every partition has exactly one
owner, ownership rebalances when sequencers join and leave, and an owner that
stops renewing stops owning before anyone else can take over."""

from __future__ import annotations

import asyncio
import contextlib
import time

import nats
import pytest

from sequencer.partitions import TRUST, PartitionLeases, bucket_name, ensure_bucket, preferred
from tests.e2e.helpers import CuttableProxy, make_settings, until

N = 12


class Recorder:
    """Plays the pipeline: records what the leases hand over."""

    def __init__(self) -> None:
        self.acquired: list[int] = []
        self.released: list[int] = []
        self.busy: dict[int, int] = {}

    def on_acquire(self, p: int) -> None:
        self.acquired.append(p)

    def on_release(self, p: int) -> None:
        self.released.append(p)


async def _leases(nc, settings, name: str) -> tuple[PartitionLeases, Recorder]:
    rec = Recorder()
    await ensure_bucket(nc, settings)  # switchboard init's job
    lease = PartitionLeases(nc=nc, settings=settings, instance=name, on_acquire=rec.on_acquire,
                            on_release=rec.on_release, inflight=lambda p: rec.busy.get(p, 0))
    await lease.start()
    return lease, rec


def test_rendezvous_moves_only_a_share_when_a_member_joins() -> None:
    before = {p: preferred(["a", "b"], p) for p in range(256)}
    after = {p: preferred(["a", "b", "c"], p) for p in range(256)}
    moved = [p for p in range(256) if before[p] != after[p]]
    # Every moved partition moved to the newcomer, and about a third moved.
    assert all(after[p] == "c" for p in moved)
    assert 50 < len(moved) < 120
    assert preferred([], 3) is None


async def test_two_owners_split_the_partitions_and_one_takes_all_when_the_other_leaves(nats_server, tmp_path):
    settings = make_settings(tmp_path, nats_server.url, partitions=N, lease_ttl=1.0)
    nc = await nats.connect(nats_server.url)
    try:
        a, ra = await _leases(nc, settings, "seq-a")
        assert a.owned == list(range(N))  # alone: owns everything at once
        b, rb = await _leases(nc, settings, "seq-b")
        # Rebalance: disjoint, complete, both hold a share (rendezvous).
        await until(lambda: set(a.owned).isdisjoint(b.owned) and len(a.owned) + len(b.owned) == N
                    and a.owned and b.owned, 10, "a and b splitting the partitions")
        assert sorted(rb.acquired) == b.owned
        assert set(ra.released) == set(b.owned)
        # What operators see in the bucket (`nats kv get … p.<n>`).
        kv = await nc.jetstream().key_value(bucket_name(settings))
        for p in range(N):
            owner = (await kv.get(f"p.{p}")).value.decode()
            assert owner == ("seq-a" if p in a.owned else "seq-b")
        # b leaves cleanly: its partitions are deleted at once and a takes them.
        await b.stop()
        await until(lambda: a.owned == list(range(N)), 5.0, "a owning every partition")
        await a.stop()
    finally:
        await nc.close()


async def test_an_owner_that_cannot_renew_stops_owning_before_its_keys_expire(nats_server, tmp_path):
    """What a cut-off (or SIGSTOPped) owner does: its renewals no longer reach
    the server. ``owns`` must turn false by itself (TRUST × TTL after the last
    renewal), which is before the server expires the keys and anyone else can
    take them. The cut is real: a's connection goes through a TCP proxy that
    is cut (and refuses reconnects)."""
    ttl = 1.5
    settings = make_settings(tmp_path, nats_server.url, partitions=4, lease_ttl=ttl)
    proxy = CuttableProxy(int(nats_server.url.rsplit(":", 1)[1]))
    await proxy.start()
    nc = await nats.connect(nats_server.url)
    cut_nc = await nats.connect(f"nats://127.0.0.1:{proxy.port}", max_reconnect_attempts=-1,
                                reconnect_time_wait=0.2)
    a = None
    try:
        a, _ = await _leases(cut_nc, settings, "seq-cut-off")  # start() renews at once; the next round is ttl/3 away
        renewed = time.monotonic()
        proxy.cut()
        assert a.owned == [0, 1, 2, 3]
        b, _ = await _leases(nc, settings, "seq-other")
        assert b.owned == []  # a's keys still stand
        await until(lambda: not a.owned, ttl * 2, "a to stop owning", every=0.01)
        stopped_owning = time.monotonic()
        assert stopped_owning - renewed <= ttl * TRUST + 0.3
        # b gets them only after the keys expired on the server.
        await until(lambda: b.owned == [0, 1, 2, 3], ttl * 4, "b owning a's partitions")
        assert time.monotonic() - renewed >= ttl * TRUST
        await b.stop()
    finally:
        if a is not None:  # its rounds would run (and fail, and log) for the rest of the session
            with contextlib.suppress(Exception):
                await asyncio.wait_for(a.stop(), 5)
        await nc.close()
        await cut_nc.close()
        await proxy.close()


@pytest.mark.parametrize("members", [1, 3])
async def test_every_partition_is_owned_exactly_once(nats_server, tmp_path, members):
    settings = make_settings(tmp_path, nats_server.url, partitions=N, lease_ttl=1.0)
    nc = await nats.connect(nats_server.url)
    try:
        owners = [(await _leases(nc, settings, f"seq-{i}"))[0] for i in range(members)]

        def settled() -> bool:
            held = [p for o in owners for p in o.owned]
            return sorted(held) == list(range(N))

        await until(settled, 10, "every partition owned once")
        for o in owners:
            await o.stop()
    finally:
        await nc.close()
