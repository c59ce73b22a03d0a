"""The request/reply layer (switchboard/rpc/) against a real nats-server.

What these protect: every service endpoint answers errors ONE way (stable
code + retry flag, in the micro error headers and the body), call() turns
any answer or failure into the typed error of switchboard/errors.py, and the
counts `nats micro stats` and Prometheus read are those of the real work
(not nats-py's, which time a hand-off and never count an error).
"""

from __future__ import annotations

import asyncio
import itertools
import json

import msgspec
import nats
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from switchboard.bus.conn import connect as bus_connect
from switchboard.bus.replies import Replies
from switchboard.errors import BadRequest, Internal, NotMember, RateLimited, SwitchboardError, Unavailable
from switchboard.events import ErrorBody
from switchboard.rpc import ERROR_CODE_HEADER, ERROR_HEADER, Endpoint, RpcCollector, RpcService, call
from switchboard.subjects import Subjects
from tests.e2e.helpers import until

_n = itertools.count()


class Ask(msgspec.Struct):
    what: str
    sleep: float = 0.0


class Answer(msgspec.Struct, omit_defaults=True):
    echo: str = ""
    subject: str = ""
    error: ErrorBody | None = None


ECHO = Endpoint("echo", "api.echo", Ask, Answer)
TOKEN = Endpoint("token", "api.tok.{conv}", Ask, Answer)
NOBODY = Endpoint("nobody", "api.nobody", Ask, Answer)


async def handle(req: Ask) -> Answer:
    if req.sleep:
        await asyncio.sleep(req.sleep)
    if req.what == "member":
        raise NotMember("not a member of c1")
    if req.what == "slow down":
        raise RateLimited("too fast")
    if req.what == "bug":
        raise ZeroDivisionError("division by zero")
    return Answer(echo=req.what)


@pytest.fixture
async def world(nats_server):
    """A service sb-rpc-<n> under its own prefix serving ECHO and TOKEN, and a client."""
    n = next(_n)
    subjects = Subjects(f"rpc{n}")
    server_nc = await nats.connect(nats_server.url)
    client_nc = await nats.connect(nats_server.url)
    svc = RpcService(server_nc, name=f"sb-rpc-{n}", version="0.1.0", description="test", subjects=subjects,
                     max_inflight=4)
    await svc.start()
    await svc.add(ECHO, handle)

    async def with_subject(req: Ask, subject: str) -> Answer:
        return Answer(echo=req.what, subject=subject)

    await svc.add(TOKEN, with_subject, with_subject=True)
    await server_nc.flush()
    await answering(client_nc, subjects)
    yield svc, client_nc, subjects
    await svc.stop()
    await server_nc.close()
    await client_nc.close()


async def answering(nc, subjects) -> None:
    """Wait until another connection sees the service's subscriptions.
    nats-server 2.15.1 answers "no responders" to ~4 % of requests sent
    within ~0.5 ms of a SUB it already confirmed by PONG (measured: a second
    request at once succeeds), so a flush on the service's side is not
    enough for the first request of a test."""
    for endpoint, params in ((ECHO, {}), (TOKEN, {"conv": "probe"})):

        async def answers(endpoint=endpoint, params=params) -> bool:
            await call(nc, endpoint, Ask(what="probe"), subjects=subjects, timeout=2, **params)
            return True

        await until(answers, 2, f"{endpoint} answering", every=0.005, ignore=(Unavailable,))


async def ask(nc, subjects, what: str, **kw) -> Answer:
    return await call(nc, ECHO, Ask(what=what, **kw), subjects=subjects, timeout=2)


async def test_a_reply_comes_back_typed(world):
    svc, nc, subjects = world
    assert await ask(nc, subjects, "hi") == Answer(echo="hi")
    got = await call(nc, TOKEN, Ask(what="x"), subjects=subjects, timeout=2, conv="c7")
    assert got.subject == f"{subjects.prefix}.api.tok.c7"  # the {conv} token was a wildcard on the server


async def test_undecodable_request_is_bad_request_with_micro_headers(world):
    svc, nc, subjects = world
    msg = await nc.request(f"{subjects.prefix}.api.echo", b'{"what": 5}', timeout=2)
    assert msg.headers[ERROR_CODE_HEADER] == "bad_request"  # what `nats req` shows and micro counts
    assert "Ask" in msg.headers[ERROR_HEADER]
    body = json.loads(msg.data)
    assert body["error"]["code"] == "bad_request" and body["error"]["retry"] is False
    # The same answer through call(): the typed error, not retryable.
    with pytest.raises(BadRequest) as e:
        await call(nc, ECHO, {"what": 5}, subjects=subjects, timeout=2)  # type: ignore[arg-type]
    assert e.value.code == "bad_request" and e.value.retry is False


@pytest.mark.parametrize("what, cls, code, retry", [
    ("member", NotMember, "not_member", False),
    ("slow down", RateLimited, "rate_limited", True),
])
async def test_a_switchboard_error_keeps_its_code_and_retry(world, what, cls, code, retry):
    svc, nc, subjects = world
    with pytest.raises(cls) as e:
        await ask(nc, subjects, what)
    assert (e.value.code, e.value.retry) == (code, retry)
    assert e.value.message in ("not a member of c1", "too fast")  # the server's message, not a docstring


async def test_an_unexpected_exception_is_internal_and_retryable(world):
    svc, nc, subjects = world
    with pytest.raises(Internal) as e:
        await ask(nc, subjects, "bug")
    assert e.value.code == "internal" and e.value.retry is True
    assert "ZeroDivisionError" in e.value.message
    assert "division by zero" not in e.value.message  # internals stay in the server's log


async def test_nobody_serving_and_no_answer_in_time_are_unavailable(world):
    svc, nc, subjects = world
    with pytest.raises(Unavailable) as e:
        await call(nc, NOBODY, Ask(what="x"), subjects=subjects, timeout=2)
    assert e.value.retry is True
    with pytest.raises(Unavailable):
        await call(nc, ECHO, Ask(what="late", sleep=0.5), subjects=subjects, timeout=0.1)


async def test_call_over_the_lean_bus_client(world, nats_server):
    # The edge calls through switchboard/bus/replies.py, not nats-py: same answers, same typed errors.
    svc, _, subjects = world
    conn = await bus_connect(servers=[nats_server.url], name="rpc-test")
    replies = Replies(conn)
    replies.start()
    try:
        assert (await call(replies, ECHO, Ask(what="lean"), subjects=subjects, timeout=2)).echo == "lean"
        with pytest.raises(NotMember):
            await call(replies, ECHO, Ask(what="member"), subjects=subjects, timeout=2)
        with pytest.raises(Unavailable):
            await call(replies, NOBODY, Ask(what="x"), subjects=subjects, timeout=2)
    finally:
        replies.stop()
        await conn.close()


async def test_a_slow_request_does_not_hold_up_the_next(world):
    # Each request runs in its own task: a micro callback alone would answer one at a time.
    svc, nc, subjects = world
    slow = asyncio.create_task(ask(nc, subjects, "slow", sleep=0.5))
    await asyncio.sleep(0.05)
    t0 = asyncio.get_running_loop().time()
    assert (await ask(nc, subjects, "fast")).echo == "fast"
    assert asyncio.get_running_loop().time() - t0 < 0.3
    assert (await slow).echo == "slow"


async def test_beyond_max_inflight_the_answer_is_unavailable_at_once(world):
    svc, nc, subjects = world  # max_inflight=4
    held = [asyncio.create_task(ask(nc, subjects, f"h{i}", sleep=0.5)) for i in range(4)]
    await asyncio.sleep(0.1)
    with pytest.raises(Unavailable) as e:
        await ask(nc, subjects, "one too many")
    assert "busy" in e.value.message
    assert [t.echo for t in await asyncio.gather(*held)] == ["h0", "h1", "h2", "h3"]
    assert svc.counts["echo"].by_code == {"unavailable": 1} and svc.busy == 1


async def test_counts_reach_micro_stats_and_prometheus(world):
    # Compared with a snapshot: the fixture's readiness probe made one request per endpoint.
    svc, nc, subjects = world
    registry = CollectorRegistry()
    registry.register(RpcCollector(svc))
    labels = {"service": svc.name, "endpoint": "echo"}

    def value(name: str, **extra: str) -> float:
        return registry.get_sample_value(name, {**labels, **extra}) or 0.0

    async def micro_stats(name: str) -> dict:
        stats = json.loads((await nc.request(f"$SRV.STATS.{svc.name}", b"", timeout=2)).data)
        return next(e for e in stats["endpoints"] if e["name"] == name)

    before, prom_before = await micro_stats("echo"), value("switchboard_rpc_requests_total")
    seconds_before = value("switchboard_rpc_seconds_sum")
    assert before["num_errors"] == 0

    await ask(nc, subjects, "ok", sleep=0.05)
    for what in ("member", "bug"):
        with pytest.raises(SwitchboardError):
            await ask(nc, subjects, what)
    await nc.request(f"{subjects.prefix}.api.echo", b"not json", timeout=2)

    c = svc.counts["echo"]
    assert c.errors == 3 and c.by_code == {"not_member": 1, "internal": 1, "bad_request": 1}
    # What `nats micro stats` reads: the layer's counts, and a processing time
    # that includes the handler's 50 ms (nats-py alone times the hand-off to the task).
    after = await micro_stats("echo")
    assert after["num_requests"] - before["num_requests"] == 4 and after["num_errors"] == 3
    assert after["processing_time"] - before["processing_time"] >= 50_000_000
    assert after["last_error"].startswith("bad_request: ")
    assert (await micro_stats("token"))["subject"] == f"{subjects.prefix}.api.tok.*"

    assert value("switchboard_rpc_requests_total") - prom_before == 4
    assert value("switchboard_rpc_errors_total", code="internal") == 1
    assert value("switchboard_rpc_seconds_count") == value("switchboard_rpc_requests_total")
    assert value("switchboard_rpc_seconds_bucket", le="+Inf") == value("switchboard_rpc_seconds_count")
    # The 50 ms request sits above the 50 ms bound: at most the others are below it.
    assert value("switchboard_rpc_seconds_bucket", le="0.05") <= value("switchboard_rpc_seconds_count") - 1
    assert value("switchboard_rpc_seconds_sum") - seconds_before >= 0.05
    assert "switchboard_rpc_requests_total" in generate_latest(registry).decode()  # it renders


def test_a_body_only_error_of_an_older_server_is_raised_too():
    # Before this layer some services answered errors in the body only (no
    # headers); call() must still raise them, typed.
    with pytest.raises(NotMember) as e:
        ECHO.reply_of(b'{"error":{"code":"not_member","message":"m","retry":false}}', None)
    assert e.value.message == "m"
    with pytest.raises(Internal) as e2:
        ECHO.reply_of(b"[]", None)
    assert e2.value.retry is False  # a reply of another shape: asking again will not help
