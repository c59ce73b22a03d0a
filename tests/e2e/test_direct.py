"""Batch direct gets against a real nats-server: switchboard.bus.direct.direct_batch
(nats-py: history, traces) and switchboard.bus.directread.DirectReader (the lean
bus client: the edge's INBOX replay), the same table for both.

Protects the read-your-writes path of history and the edge's INBOX replay:
only the asked subject, from the asked stream sequence, paged with
last_seq/num_pending, and an empty answer (not an error) when nothing matches.
"""

from __future__ import annotations

import nats
import pytest

from sbctl.embedded import EmbeddedNats
from switchboard.bus.conn import connect as bus_connect
from switchboard.bus.direct import DirectGetError, direct_batch
from switchboard.bus.directread import DirectReader
from switchboard.bus.streams import ensure_streams
from switchboard.config import Settings


@pytest.fixture(scope="module")
async def js_conn(tmp_path_factory):
    srv = EmbeddedNats(store_dir=str(tmp_path_factory.mktemp("nats-direct"))).start()
    nc = await nats.connect(srv.url)
    js = nc.jetstream()
    await ensure_streams(js, Settings())
    # interleave two conversations: a at stream seqs 1,3,5,7,9 and b at 2,4,6,8,10
    for i in range(5):
        await js.publish("sb.msg.a", b"a%d" % i)
        await js.publish("sb.msg.b", b"b%d" % i)
    yield nc, srv.url
    await nc.close()
    srv.stop()


@pytest.fixture(params=["nats-py", "bus"])
async def read(request, js_conn):
    """``read(stream=, subject=, start_seq=, batch=, timeout=)`` by one of the two clients."""
    nc, url = js_conn
    if request.param == "nats-py":
        async def by_natspy(**kw):
            return await direct_batch(nc, **kw)
        yield by_natspy
        return
    bus = await bus_connect([url])
    reader = DirectReader(bus)
    reader.start()

    async def by_bus(*, timeout: float = 2.0, **kw):
        return await reader.batch(timeout=timeout, **kw)
    yield by_bus
    assert reader.pending == 0  # every read ended and was forgotten
    reader.stop()
    await bus.close()


@pytest.mark.parametrize(
    "subject,start,batch,want_data,want_seqs,want_pending,want_last",
    [
        ("sb.msg.a", 1, 10, [b"a0", b"a1", b"a2", b"a3", b"a4"], [1, 3, 5, 7, 9], 0, 9),
        ("sb.msg.a", 4, 2, [b"a2", b"a3"], [5, 7], 1, 7),  # starts between entries; one left over
        ("sb.msg.b", 10, 5, [b"b4"], [10], 0, 10),
        ("sb.msg.a", 10, 5, [], [], 0, 9),  # nothing at or after 10: empty, last_seq = start - 1
        ("sb.msg.nobody", 1, 5, [], [], 0, 0),
        ("sb.msg.*", 9, 5, [b"a4", b"b4"], [9, 10], 0, 10),
    ],
)
async def test_direct_batch(read, subject, start, batch, want_data, want_seqs, want_pending, want_last):
    got = await read(stream="MESSAGES", subject=subject, start_seq=start, batch=batch)
    assert [e.data for e in got.entries] == want_data
    assert [e.stream_seq for e in got.entries] == want_seqs
    assert all(h["Nats-Subject"].startswith("sb.msg.") for _, h, _ in got.entries)
    assert got.num_pending == want_pending
    assert got.last_seq == want_last


async def test_paging_reads_everything_once(read):
    seen, start = [], 1
    while True:
        got = await read(stream="MESSAGES", subject="sb.msg.b", start_seq=start, batch=2)
        seen += [e.data for e in got.entries]
        if not got.num_pending:
            break
        start = got.last_seq + 1
    assert seen == [b"b%d" % i for i in range(5)]


async def test_unknown_stream_is_an_error(read):
    with pytest.raises(DirectGetError):
        await read(stream="NOPE", subject="sb.msg.a", start_seq=1, batch=1, timeout=1.0)


async def test_bus_reads_at_once_each_get_their_own_answer(js_conn):
    """Many reads in flight on one reply subscription (a storm's hellos):
    each answer goes to its own read, and max_bytes ends a batch early."""
    import asyncio

    _, url = js_conn
    bus = await bus_connect([url])
    reader = DirectReader(bus)
    reader.start()
    try:
        subjects = ["sb.msg.a", "sb.msg.b"] * 20
        got = await asyncio.gather(*(reader.batch(stream="MESSAGES", subject=s, start_seq=1, batch=10, timeout=2.0)
                                     for s in subjects))
        for s, g in zip(subjects, got):
            assert [e.data for e in g.entries] == [b"%s%d" % (s[-1].encode(), i) for i in range(5)]
        small = await reader.batch(stream="MESSAGES", subject="sb.msg.a", start_seq=1, batch=10, max_bytes=1,
                                   timeout=2.0)
        assert [e.data for e in small.entries] == [b"a0"] and small.num_pending == 4  # at least one message
    finally:
        reader.stop()
        await bus.close()


async def test_bus_read_times_out_as_unavailable(js_conn):
    """No answer in time (here: a responder that never answers) is
    Unavailable (retry), and the read is forgotten."""
    from switchboard.errors import Unavailable

    _, url = js_conn
    bus = await bus_connect([url])
    asked = []
    bus.subscribe("$SILENT.API.DIRECT.GET.MESSAGES", asked.append)
    reader = DirectReader(bus, api_prefix="$SILENT.API")
    reader.start()
    try:
        with pytest.raises(Unavailable, match="timed out"):
            await reader.batch(stream="MESSAGES", subject="sb.msg.a", start_seq=1, batch=1, timeout=0.3)
        assert len(asked) == 1 and reader.pending == 0
    finally:
        reader.stop()
        await bus.close()
