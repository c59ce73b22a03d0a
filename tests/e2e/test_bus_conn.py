"""switchboard.bus.conn + replies against a real nats-server (loopback, free
ports): pub/sub, queue groups, headers, request/reply, JetStream acks,
reconnect, auth, TLS and a 3-node cluster."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Callable

import nats
import pytest

from switchboard.bus.conn import BusConnection, BusError, BusMsg, BusUnavailable, connect, encode_headers
from switchboard.bus.replies import Replies

_ids = itertools.count()


def uniq(prefix: str) -> str:
    return f"{prefix}.{time.monotonic_ns()}.{next(_ids)}"


async def until(cond: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def collector(conn: BusConnection, subject: str, queue: str | None = None) -> tuple[int, list[BusMsg]]:
    got: list[BusMsg] = []
    return conn.subscribe(subject, got.append, queue=queue), got


@pytest.fixture
async def bus(nats_server):
    conns: list[BusConnection] = []

    async def make(**kw) -> BusConnection:
        c = await connect([nats_server.url], **kw)
        conns.append(c)
        return c

    yield make
    for c in conns:
        await c.close()


# --- pub/sub ----------------------------------------------------------------------

async def test_pub_sub_wildcards_unsubscribe(bus) -> None:
    a, b = await bus(name="a"), await bus(name="b")
    base = uniq("t.ps")
    sid_star, star = collector(b, f"{base}.*")
    _, gt = collector(b, f"{base}.>")
    _, exact = collector(b, f"{base}.x")
    await b.flush()
    a.publish(f"{base}.x", b"one")
    a.publish(f"{base}.y.z", b"two")
    a.publish(f"{base}.x", b"", reply="r.1")
    await until(lambda: len(gt) == 3)
    assert [(m.subject, m.data, m.reply) for m in star] == [(f"{base}.x", b"one", ""), (f"{base}.x", b"", "r.1")]
    assert [m.data for m in gt] == [b"one", b"two", b""]
    assert [m.data for m in exact] == [b"one", b""]
    b.unsubscribe(sid_star)
    b.unsubscribe(sid_star)  # twice is harmless
    await b.flush()
    a.publish(f"{base}.x", b"three")
    await until(lambda: len(exact) == 3)
    await a.flush()
    await b.flush()
    assert len(star) == 2
    assert a.stats.out_msgs == 4 and b.stats.in_msgs == 9  # 7 + "three" to > and x


async def test_queue_group_shares_messages(bus) -> None:
    pub, q1, q2, plain = await bus(), await bus(), await bus(), await bus()
    subject = uniq("t.q")
    _, g1 = collector(q1, subject, queue="workers")
    _, g2 = collector(q2, subject, queue="workers")
    _, all_ = collector(plain, subject)
    for c in (q1, q2, plain):
        await c.flush()
    for i in range(200):
        pub.publish(subject, str(i).encode())
    await until(lambda: len(g1) + len(g2) == 200 and len(all_) == 200)
    assert g1 and g2  # both members got some (random split; 2^-199 to fail)
    assert sorted(int(m.data) for m in g1 + g2) == list(range(200))


async def test_headers_big_payload_and_order(bus) -> None:
    a, b = await bus(), await bus()
    subject = uniq("t.h")
    _, got = collector(b, subject)
    await b.flush()
    hdr = encode_headers({"Nats-Msg-Id": "m-1", "X-Trace": "a b c"})
    big = bytes(range(256)) * 3500  # 896,000 bytes: under the 1 MiB max_payload
    a.publish(subject, b"with headers", headers=hdr, reply="some.reply")
    a.publish(subject, big)
    for i in range(1000):
        a.publish(subject, b"%d" % i)
    await until(lambda: len(got) == 1002)
    m = got[0]
    assert (m.data, m.reply, m.headers, m.status) == (
        b"with headers", "some.reply", {"Nats-Msg-Id": "m-1", "X-Trace": "a b c"}, None)
    assert got[1].data == big and got[1].headers is None
    assert [int(m.data) for m in got[2:]] == list(range(1000))
    with pytest.raises(BusError, match="max_payload"):
        a.publish(subject, b"x" * (2 * 1024 * 1024))


async def test_a_failing_handler_does_not_stop_delivery(bus) -> None:
    c = await bus()
    subject = uniq("t.err")
    ok: list[bytes] = []

    def bad(m: BusMsg) -> None:
        raise RuntimeError("handler bug")

    c.subscribe(subject, bad)
    c.subscribe(subject, lambda m: ok.append(m.data))
    await c.flush()
    for i in range(3):
        c.publish(subject, b"%d" % i)
    await until(lambda: len(ok) == 3)
    assert c.is_connected


async def test_close_flushes_then_refuses(bus) -> None:
    a, b = await bus(), await bus()
    subject = uniq("t.close")
    _, got = collector(b, subject)
    await b.flush()
    a.publish(subject, b"last words")
    await a.close()  # publish was only queued: close must write it
    await until(lambda: len(got) == 1)
    assert not a.is_connected and a.is_closed
    with pytest.raises(BusError):
        a.publish(subject, b"too late")
    with pytest.raises(BusError):
        a.subscribe(subject, got.append)
    await a.close()  # idempotent


async def test_connect_refused_everywhere_is_unavailable() -> None:
    from switchboard.bus.embedded import free_port
    with pytest.raises(BusUnavailable, match="could not connect"):
        await connect([f"nats://127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"], connect_timeout=0.5)


# --- request/reply ----------------------------------------------------------------

async def test_request_reply_no_responders_timeout(bus) -> None:
    server, client = await bus(name="svc"), await bus(name="cli")
    svc = uniq("t.svc")
    server.subscribe(svc, lambda m: server.publish(m.reply, b"echo:" + m.data, headers=m.hdr or None))
    silent = uniq("t.silent")
    server.subscribe(silent, lambda m: None)
    await server.flush()
    r = Replies(client, sweep_interval=0.02)
    r.start()
    await client.flush()

    msg = await r.call(svc, b"hi", timeout=2)
    assert msg.data == b"echo:hi"
    msg = await r.call(svc, b"h", headers=encode_headers({"K": "v"}), timeout=2)
    assert (msg.data, msg.headers) == (b"echo:h", {"K": "v"})

    # 300 callback requests in flight, each answered exactly once
    answers: list[tuple[bytes | None, BaseException | None]] = []
    for i in range(300):
        r.request(svc, b"%d" % i, lambda m, e: answers.append((m.data if m else None, e)), timeout=2)
    await until(lambda: len(answers) == 300)
    assert sorted(a for a, _ in answers) == sorted(b"echo:%d" % i for i in range(300))
    assert r.pending == 0

    t0 = time.monotonic()
    with pytest.raises(BusUnavailable, match="no responders"):
        await r.call(uniq("t.nobody"), b"x", timeout=2)
    assert time.monotonic() - t0 < 1.0  # failed at once, not at the timeout

    t0 = time.monotonic()
    with pytest.raises(BusUnavailable, match="in time"):
        await r.call(silent, b"x", timeout=0.2)
    assert 0.2 <= time.monotonic() - t0 < 1.0

    # mixed timeouts: the sweep must not stop at a long one before a short one
    outcome: dict[str, BaseException | None] = {}
    r.request(silent, b"", lambda m, e: outcome.__setitem__("long", e), timeout=30)
    r.request(silent, b"", lambda m, e: outcome.__setitem__("short", e), timeout=0.1)
    await until(lambda: "short" in outcome, timeout=2)
    assert isinstance(outcome["short"], BusUnavailable) and "long" not in outcome

    # a callback that raises is logged, the next reply still arrives
    r.request(svc, b"a", lambda m, e: 1 / 0, timeout=2)
    assert (await r.call(svc, b"b", timeout=2)).data == b"echo:b"

    r.stop()
    assert isinstance(outcome["long"], BusUnavailable)
    with pytest.raises(BusError):
        r.request(svc, b"", lambda m, e: None, timeout=1)


async def test_jetstream_publish_ack_via_replies(nats_server, bus) -> None:
    nc = await nats.connect(nats_server.url)
    stream = "T_BUS_" + uniq("s").replace(".", "_")
    subject = uniq("t.js")
    js = nc.jetstream()
    await js.add_stream(name=stream, subjects=[subject])
    try:
        c = await bus()
        r = Replies(c)
        r.start()
        await c.flush()
        acks: list[dict] = []
        for i in range(50):
            r.request(subject, b"m%d" % i, lambda m, e: acks.append(json.loads(m.data) if m else {"err": e}),
                      headers=encode_headers({"Nats-Msg-Id": f"id-{i}"}), timeout=5)
        await until(lambda: len(acks) == 50)
        assert sorted(a["seq"] for a in acks) == list(range(1, 51))
        assert {a["stream"] for a in acks} == {stream}
        dup = json.loads((await r.call(subject, b"again", headers=encode_headers({"Nats-Msg-Id": "id-7"}),
                                       timeout=5)).data)
        assert dup.get("duplicate") is True and dup["seq"] == 8
        info = await js.stream_info(stream)
        assert info.state.messages == 50
        r.stop()
    finally:
        await js.delete_stream(stream)
        await nc.close()


# --- reconnect --------------------------------------------------------------------

async def test_reconnect_after_restart_on_same_port(make_nats) -> None:
    server = make_nats()
    events: list[str] = []
    c = await connect([server.url], reconnect_wait=0.1, on_disconnected=lambda: events.append("down"),
                      on_reconnected=lambda: events.append("up"))
    other = await connect([server.url], reconnect_wait=0.1)
    try:
        subject = uniq("t.rc")
        _, mine = collector(c, subject)
        _, theirs = collector(other, subject)
        r = Replies(c)
        r.start()
        other.subscribe(subject + ".svc", lambda m: other.publish(m.reply, b"ok"))
        await c.flush()
        await other.flush()
        c.publish(subject, b"before")
        await until(lambda: len(mine) == 1 and len(theirs) == 1)

        server.kill()
        await until(lambda: not c.is_connected and not other.is_connected, what="disconnect")
        assert events == ["down"]
        for i in range(100):
            c.publish(subject, b"while-down-%d" % i)  # buffered
        with pytest.raises(BusUnavailable):
            await c.flush()
        server.start()
        await until(lambda: c.is_connected and other.is_connected, timeout=10, what="reconnect")
        assert events == ["down", "up"]
        # c re-subscribed before sending what it buffered, so it gets its own:
        await until(lambda: len(mine) == 101, what="buffered publishes")
        assert [m.data for m in mine[1:]] == [b"while-down-%d" % i for i in range(100)]
        await other.flush()
        c.publish(subject, b"after")
        await until(lambda: len(theirs) >= 2 and theirs[-1].data == b"after", what="restored subscription")
        assert (await r.call(subject + ".svc", b"", timeout=2)).data == b"ok"  # reply sub restored too
        assert c.stats.reconnects == 1
    finally:
        await c.close()
        await other.close()


async def test_pending_limit_while_disconnected(make_nats) -> None:
    server = make_nats()
    c = await connect([server.url], reconnect_wait=5, pending_limit=10_000)
    try:
        server.kill()
        await until(lambda: not c.is_connected)
        c.publish("t.pending", b"x" * 5000)
        with pytest.raises(BusUnavailable, match="reconnecting"):
            for _ in range(3):
                c.publish("t.pending", b"x" * 5000)
    finally:
        await c.close()


async def test_max_reconnect_attempts_closes(make_nats) -> None:
    server = make_nats()
    c = await connect([server.url], reconnect_wait=0.05, max_reconnect_attempts=2)
    server.kill()
    await until(lambda: c.is_closed, timeout=5, what="give up")
    with pytest.raises(BusError):
        c.publish("t.x", b"")
