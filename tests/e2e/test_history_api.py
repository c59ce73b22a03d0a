"""History over ``sb.api.history`` (micro service sb-archiver), end to end.

The interesting part is read-your-writes: seqs 1..60 are archived, 61..120
are only in MESSAGES (the archiver is stopped), and every page must still be
complete, ordered and free of duplicates across that boundary.
"""

from __future__ import annotations

import json

import msgspec
import pytest

from archiver.history import MAX_LIMIT
from switchboard.events import HistoryQuery, HistoryReply
from switchboard.store import Conversation
from tests.e2e.test_archiver import (  # noqa: F401
    backend,
    nats_srv,
    nc,
    new_conv,
    publish,
    running,
    settings,
    store,
    store_url,
    wait_lag_zero,
)

decode_reply = msgspec.json.Decoder(HistoryReply).decode


@pytest.fixture
async def world(nats_srv, nc, store):
    """conv with alice+bob: 1..60 archived, 61..120 only in the stream; big: 250 archived."""
    conv, big = new_conv(), new_conv()
    for c in (conv, big):
        await store.create_conversation(Conversation(id=c, members=("alice", "bob"), created_by="alice"))
    await publish(nc, conv, range(1, 61))
    await publish(nc, big, range(1, 251))
    async with running(nats_srv.url, store) as arch:
        await wait_lag_zero(arch)
    await publish(nc, conv, range(61, 121))
    # a history-only replica: serves queries, archives nothing, so 61..120 stay unarchived
    async with running(nats_srv.url, store, archive=False) as hist:
        assert await hist.lag() == 60
        yield conv, big


async def ask(nc, **q) -> HistoryReply:
    resp = await nc.request("sb.api.history", msgspec.json.encode(HistoryQuery(**q)), timeout=5)
    return decode_reply(resp.data)


async def test_pages_backwards_across_the_archive_boundary(nc, world):
    conv, _ = world
    seen, before, pages = [], None, 0
    while True:
        r = await ask(nc, conv=conv, user="alice", before=before, limit=25)
        assert r.error is None
        seen = [m.seq for m in r.messages] + seen
        pages += 1
        if not r.more:
            break
        before = r.messages[0].seq
    assert seen == list(range(1, 121))  # all, in order, no duplicates
    assert pages == 5
    assert r.messages[0].body == "hello 1"


async def test_pages_forwards_across_the_archive_boundary(nc, world):
    conv, _ = world
    seen, after = [], 0
    while True:
        r = await ask(nc, conv=conv, user="bob", after=after, limit=35)
        seen += [m.seq for m in r.messages]
        if not r.more:
            break
        after = r.messages[-1].seq
    assert seen == list(range(1, 121))


@pytest.mark.parametrize(
    "query,want,more",
    [
        ({}, list(range(71, 121)), True),  # newest page: default limit 50, all unarchived
        ({"before": 70, "limit": 20}, list(range(50, 70)), True),  # straddles 60|61
        ({"after": 55, "limit": 10}, list(range(56, 66)), True),
        ({"after": 55, "before": 63}, list(range(56, 63)), False),  # both bounds: nothing newer inside them
        ({"before": 3}, [1, 2], False),
        ({"after": 120}, [], False),
        ({"before": 1}, [], False),
        ({"after": 110, "limit": 50}, list(range(111, 121)), False),
        ({"limit": 0}, [120], True),  # clamped to 1
    ],
)
async def test_page_shapes(nc, world, query, want, more):
    conv, _ = world
    r = await ask(nc, conv=conv, user="alice", **query)
    assert [m.seq for m in r.messages] == want
    assert r.more is more
    assert all(m.conv == conv and m.from_ == "alice" for m in r.messages)


async def test_limit_is_capped(nc, world):
    _, big = world
    r = await ask(nc, conv=big, user="alice", limit=10_000)
    assert [m.seq for m in r.messages] == list(range(251 - MAX_LIMIT, 251))
    assert r.more is True


@pytest.mark.parametrize(
    "query,code",
    [
        ({"user": "carol"}, "not_member"),
        ({"conv": "no-such-conv", "user": "alice"}, "not_found"),
        ({"conv": "a.>", "user": "alice"}, "invalid_id"),  # never becomes a wildcard subject
        ({"user": "bad user"}, "invalid_id"),
    ],
)
async def test_refusals(nc, world, query, code):
    conv, _ = world
    r = await ask(nc, **{"conv": conv, **query})
    assert r.error is not None and r.error.code == code
    assert r.messages == []


async def test_services_skip_membership(nc, world):
    conv, _ = world
    r = await ask(nc, conv=conv, limit=5)  # no user: a trusted backend service
    assert [m.seq for m in r.messages] == [116, 117, 118, 119, 120]


async def test_malformed_query_is_an_error_reply(nc, world):
    # switchboard/rpc's one error answer: bad_request in the body and the micro headers.
    resp = await nc.request("sb.api.history", b'{"conv": 5}', timeout=5)
    r = decode_reply(resp.data)
    assert r.error is not None and r.error.code == "bad_request" and not r.error.retry
    assert resp.headers["Nats-Service-Error-Code"] == "bad_request"


async def test_registered_as_micro_service(nc, world):
    resp = await nc.request("$SRV.INFO.sb-archiver", b"", timeout=5)
    info = json.loads(resp.data)
    assert info["name"] == "sb-archiver"
    assert any(e["subject"] == "sb.api.history" for e in info["endpoints"])
