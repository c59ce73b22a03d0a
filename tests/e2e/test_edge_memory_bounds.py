"""Issue 8 item 4: the memory an edge spends on clients that do not read is
bounded in bytes, per socket, per user and per edge.

Attack (as reproduced on main): one user opens 20 sockets, says hello, and
never reads, while a flood of 15 KB messages is addressed to them, either
already stored (the hello replay: 20 x 256-entry batches went straight to
the transports, 48 -> 304 MB) or arriving live. The edge runs as its own
process (``python -m sbctl edge``) so its RSS is what is measured.
"""

from __future__ import annotations

import asyncio

import psutil
import pytest

from tests.e2e.helpers import Raw, unique

SOCKETS = 20
SENDERS = 4
BODY = "x" * 15_000
# Enough that one socket's share (~6 MB backlog, more when live) is far above
# its 1 MiB send queue, and the 20 sockets' total far above the RSS budget.
PER_SENDER = 400
RSS_BUDGET = 64 * 1024 * 1024


async def flood(senders: list[Raw], victim: str) -> None:
    async def one(r: Raw, k: int) -> None:
        for j in range(PER_SENDER):
            await r.send({"type": "send", "id": f"f{k}-{j}", "to": victim, "body": BODY})
            if j % 32 == 31:
                await r.answer(f"f{k}-{j}", timeout=60)  # stay under the in-flight bound
        await r.answer(f"f{k}-{PER_SENDER - 1}", timeout=60)

    await asyncio.gather(*(one(r, k) for k, r in enumerate(senders)))


@pytest.mark.parametrize("when", ["backlog", "live"])
async def test_non_reading_sockets_of_one_user_bound_edge_rss(deploy, when):
    """Issue 8 item 4: 20 non-reading sockets of one user receiving a flood
    leave the edge's RSS within +64 MB. Per socket the bound is bytes
    (send_queue_bytes, the replay batch included), per user at most
    max_sockets_per_user (10) sockets: the 10 oldest were closed (4010)."""
    dep = await deploy(roles=("sequencer", "edge"), mode="processes")  # the edge's own RSS is measured
    s = dep.settings
    proc = psutil.Process(dep.unit("edge").pid)
    victim = unique("victim")
    senders = [await dep.raw(unique("s")) for _ in range(SENDERS)]
    if when == "backlog":
        await flood(senders, victim)  # stored in the victim's INBOX
    await asyncio.sleep(0.5)
    rss0 = proc.memory_info().rss
    peak = rss0
    socks = []
    for _ in range(SOCKETS):
        r = await dep.raw(victim, hello=False, read=False, max_queue=1)
        if when == "backlog":
            await r.send({"type": "hello", "cursor": 0, "epoch": None})  # replay it all, read nothing
        else:
            await r.hello_then_stop_reading()
        socks.append(r)

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, proc.memory_info().rss)
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    try:
        if when == "live":
            await flood(senders, victim)
        await asyncio.sleep(3.0)  # replays run, closes and cut-offs happen
    finally:
        sampler.cancel()
    m = await dep.metrics()
    growth = peak - rss0
    assert growth < RSS_BUDGET, f"edge RSS grew {growth >> 20} MB (from {rss0 >> 20} MB), metrics {m}"
    assert m["switchboard_edge_sockets_replaced_total"] == SOCKETS - s.max_sockets_per_user
    assert m["switchboard_edge_send_queue_bytes"] <= s.edge_send_queue_bytes
    # The flood's senders were never disturbed.
    for r in senders:
        assert not r.closed.is_set()
        assert not [f for f in r.frames if f["type"] == "error"]
    for r in socks:  # they read nothing: a closing handshake would wait for its timeout
        r.ws.transport.abort()
