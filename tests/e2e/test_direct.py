"""switchboard.bus.direct.direct_batch against a real nats-server.

Protects the read-your-writes path of history and the edge's INBOX replay:
only the asked subject, from the asked stream sequence, paged with
last_seq/num_pending, and an empty answer (not an error) when nothing matches.
"""

from __future__ import annotations

import nats
import pytest

from sbctl.embedded import EmbeddedNats
from switchboard.bus.direct import DirectGetError, direct_batch
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
    yield nc
    await nc.close()
    srv.stop()


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
async def test_direct_batch(js_conn, subject, start, batch, want_data, want_seqs, want_pending, want_last):
    got = await direct_batch(js_conn, stream="MESSAGES", subject=subject, start_seq=start, batch=batch)
    assert [e.data for e in got.entries] == want_data
    assert [e.stream_seq for e in got.entries] == want_seqs
    assert all(h["Nats-Subject"].startswith("sb.msg.") for _, h, _ in got.entries)
    assert got.num_pending == want_pending
    assert got.last_seq == want_last


async def test_paging_reads_everything_once(js_conn):
    seen, start = [], 1
    while True:
        got = await direct_batch(js_conn, stream="MESSAGES", subject="sb.msg.b", start_seq=start, batch=2)
        seen += [e.data for e in got.entries]
        if not got.num_pending:
            break
        start = got.last_seq + 1
    assert seen == [b"b%d" % i for i in range(5)]


async def test_unknown_stream_is_an_error(js_conn):
    with pytest.raises(DirectGetError):
        await direct_batch(js_conn, stream="NOPE", subject="sb.msg.a", start_seq=1, batch=1, timeout=1.0)
