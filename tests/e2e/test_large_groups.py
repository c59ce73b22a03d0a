"""Large groups (pull mode): above `fanout_max_members` a message gets no
INBOX copies; members' edges read the conversation's republished MESSAGES
subject. Online members get it live, a member who was away learns from
`synced` how far the group is and the SDK fetches the rest from history,
and receipts are stored but not broadcast."""

from __future__ import annotations

import asyncio

import pytest

from switchboard import frames
from switchboard.bus import streams
from tests.e2e.helpers import STEP, Events, kind, unique

LARGE = 3  # fanout_max_members in these tests: a 5-member group is "large"


async def inbox_entries(dep, user: str) -> int:
    js = (await dep.nats()).jetstream()
    info = await js.stream_info(streams.names(dep.settings)[1], subjects_filter=dep.settings.subjects.inbox(user))
    return sum((info.state.subjects or {}).values())


async def test_large_group_pull_mode(deploy):
    dep = await deploy(roles=("sequencer", "edge", "archiver"), fanout_max_members=LARGE)
    users = [unique(f"g{i}") for i in range(5)]
    online = [await dep.sdk(u, fill_gaps=True) for u in users[:4]]
    conv = (await online[0].create_conversation(users[1:], "big")).conv
    await asyncio.sleep(0.3)  # members' edges subscribe on the conv notice

    sent = await online[0].send(conv=conv, body="hello all")
    for c in online[1:]:
        m = await c.next_message(STEP)
        assert (m.conv, m.seq, m.body, m.cursor) == (conv, sent.seq, "hello all", None)  # not an INBOX entry
    assert all([await inbox_entries(dep, u) == 0 for u in users])  # pull mode: no per-member copies

    # The fifth member was never online: `synced` lists the group, and it
    # then gets live messages; what it missed comes from history on request.
    late = await dep.sdk(users[4], fill_gaps=True)
    await online[0].send(conv=conv, body="second")
    m = await late.next_message(STEP)
    assert (m.seq, m.body) == (2, "second")

    # A member away while two messages were sent: back with its watermark,
    # it gets both, in order, from history (no INBOX copies exist).
    away = online[3]
    saved = away.conv_seqs
    assert saved[conv] == 2
    await away.close()
    for body in ("third", "fourth"):
        await online[0].send(conv=conv, body=body)
    back = await dep.sdk(users[3], fill_gaps=True, conv_seqs=saved)
    got = [(await back.next_message(STEP)).body for _ in range(2)]
    assert got == ["third", "fourth"]


# A 5-member group above either limit stores receipts without broadcasting
# them: above fanout_max_members (pull mode), and, with INBOX copies, above
# receipt_broadcast_max_members (a broadcast costs members² frames in an
# active group). test_receipts.py's group of five (under both defaults)
# protects the other side: there every member hears every watermark.
QUIET_RECEIPTS = {
    "pull_mode": {"fanout_max_members": LARGE},
    "inbox_mode_above_broadcast_limit": {"receipt_broadcast_max_members": LARGE},
}


@pytest.mark.parametrize("limits", QUIET_RECEIPTS.values(), ids=QUIET_RECEIPTS.keys())
async def test_large_group_receipts_stored_not_broadcast(deploy, limits):
    # Receipts coalesce at the edge, then at the sequencer: short known ticks,
    # so "not broadcast" below waits a time derived from them.
    tick = 0.02
    dep = await deploy(roles=("sequencer", "edge"), edge_receipt_flush_sec=tick, sequencer_receipt_flush_sec=tick,
                       **limits)
    users = [unique(f"r{i}") for i in range(5)]
    clients = [await dep.sdk(u) for u in users]
    evs = [Events(c) for c in clients]
    conv = (await clients[0].create_conversation(users[1:], "big")).conv
    await asyncio.sleep(0.3)
    await clients[0].send(conv=conv, body="x")
    await clients[1].next_message(STEP)
    await clients[1].send_frame(frames.Read(conv=conv, seq=1))
    await asyncio.sleep(5 * 2 * tick)  # well past both coalescing ticks: stored by now
    await evs[0].nothing(kind("receipt", conv=conv, user=users[1]), wait=0.3)
    await clients[0].send_frame(frames.ReceiptsRequest(conv=conv))
    r = await evs[0].expect(kind("receipt", conv=conv, user=users[1]))
    assert r.read == 1
