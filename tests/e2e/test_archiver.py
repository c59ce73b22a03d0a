"""Archiver end to end: real nats-server, real store (SQLite; Cassandra when the
test command provides one).

Traffic is produced the way the sequencer does it: a ``frames.Msg`` encoded
without cursor on ``sb.msg.<conv>`` with ``Nats-Msg-Id``, contiguous seq per
conversation.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence

import nats
import pytest
from prometheus_client.parser import text_string_to_metric_families

from archiver.consumer import ensure_consumer
from archiver.service import Archiver
from archiver.writer import Backoff
from sbctl.embedded import EmbeddedNats
from switchboard import frames
from switchboard.bus.streams import ensure_streams
from switchboard.config import Settings
from switchboard.frames import Msg
from switchboard.store import open_store
from tests.e2e.helpers import CuttableProxy, until

# -- shared helpers (test_history_api imports these) --------------------------------


# The first Cassandra test also waits for the node to start (1-4 min on a
# loaded 2-core box), which the default 120 s test timeout does not cover.
@pytest.fixture(params=["sqlite", pytest.param("cassandra", marks=[pytest.mark.cassandra, pytest.mark.timeout(420)])])
def backend(request) -> str:
    return request.param


@pytest.fixture
def store_url(backend, request, tmp_path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path}/archive.db"
    try:
        return request.getfixturevalue("cassandra_url")
    except pytest.FixtureLookupError:
        pytest.skip("no cassandra_url fixture: run with the test command that starts Cassandra")


@pytest.fixture
async def store(store_url):
    s = open_store(store_url)
    await s.open()
    yield s
    await s.close()


@pytest.fixture
async def nats_srv(tmp_path):
    srv = EmbeddedNats(store_dir=str(tmp_path / "nats")).start()
    yield srv
    srv.stop()


@pytest.fixture
async def nc(nats_srv):
    c = await nats.connect(nats_srv.url)
    await ensure_streams(c.jetstream(), Settings())  # the admin step's job in production (switchboard init)
    yield c
    await c.close()


def new_conv() -> str:
    return "c" + uuid.uuid4().hex[:12]  # unique per test: a Cassandra keyspace is shared


def settings(**kw) -> Settings:
    return Settings(**kw)


async def publish(nc, conv: str, seqs: Sequence[int], *, body: str = "hello") -> None:
    js = nc.jetstream()
    futs = []
    for seq in seqs:
        m = Msg(conv=conv, seq=seq, id=f"m{seq}", from_="alice", body=f"{body} {seq}", ts=1_700_000_000_000 + seq)
        futs.append(js.publish(f"sb.msg.{conv}", frames.encode(m), headers={"Nats-Msg-Id": f"alice:{conv}:{seq}"}))
        if len(futs) >= 200:
            await asyncio.gather(*futs)
            futs = []
    await asyncio.gather(*futs)


async def wait_lag_zero(arch: Archiver, timeout: float = 30.0) -> None:
    async def done():
        return await arch.lag() == 0
    await until(done, timeout, "archiver lag 0")


def sample(exposition: bytes, name: str) -> float:
    """The value of the unlabelled series ``name`` in a Prometheus text page."""
    for family in text_string_to_metric_families(exposition.decode()):
        for s in family.samples:
            if s.name == name and not s.labels:
                return s.value
    raise AssertionError(f"{name} not in the page")


async def assert_archived_once(store, conv: str, n: int) -> None:
    """Every seq 1..n stored exactly once (the store keys by (conv, seq),
    so 'exactly once' = no gap, no extra and the right content)."""
    got: list[Msg] = []
    after = 0
    while True:
        page = await store.messages(conv, after=after, limit=500)
        if not page:
            break
        got += page
        after = page[-1].seq
    assert [m.seq for m in got] == list(range(1, n + 1))
    assert all(m.body == f"hello {m.seq}" and m.id == f"m{m.seq}" for m in got)
    assert await store.last_seq(conv) == n


@contextlib.asynccontextmanager
async def running(nats_url: str, store, st: Settings | None = None, **kw):
    c = await nats.connect(nats_url)
    st = (st or settings()).replace(nats_url=nats_url)
    # The admin step's job (switchboard init): the durable as this test's settings define it.
    await ensure_consumer(c.jetstream(), "MESSAGES", st)
    # nats_url: the archiver opens its own lean connection for fetch and acks
    a = Archiver(settings=st, nc=c, store=store, **kw)
    await a.start()
    try:
        yield a
    finally:
        await a.stop()
        await c.close()


@contextlib.asynccontextmanager
async def doomed(nats_srv, store, st: Settings, **kw):
    """An archiver that is killed: its NATS connections go through a proxy
    that ``kill()`` cuts (reconnects refused) while its store writes fail, so
    from the server's side it vanished mid-batch: nothing it had in hand is
    acked. Yields ``(archiver, kill)``."""
    proxy = CuttableProxy(nats_srv.port)
    await proxy.start()
    st = st.replace(nats_url=f"nats://127.0.0.1:{proxy.port}")
    c = await nats.connect(st.nats_url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    await ensure_consumer(c.jetstream(), "MESSAGES", st)  # the admin step's job
    a = Archiver(settings=st, nc=c, store=store, serve_history=False, **kw)
    await a.start()

    def kill() -> None:
        proxy.cut()
        store.fail_now()

    try:
        yield a, kill
    finally:
        await a.stop()  # only what is left in this process: nothing reaches the server
        await c.close()
        await proxy.close()


class FlakyStore:
    """Wraps a real store; while ``down`` every call fails like a lost
    connection; ``reject`` makes writes containing that body fail while the
    store otherwise works (a message that can never be written)."""

    def __init__(self, inner, *, reject: str | None = None, write_delay: float = 0.0) -> None:
        self.inner = inner
        self.down = False
        self.reject = reject
        self.write_delay = write_delay  # a slow store: batches stay unacked longer
        self.write_calls = 0
        self._wake = asyncio.Event()

    def fail_now(self) -> None:
        """Down from now on, and the writes in progress fail too (a process
        that dies mid-write never finishes it)."""
        self.down = True
        self._wake.set()

    def _check(self) -> None:
        if self.down:
            raise ConnectionError("store unreachable (test)")

    async def append_messages(self, msgs):
        self.write_calls += 1
        self._check()
        if self.reject is not None and any(m.body == self.reject for m in msgs):
            raise ValueError("value rejected by the store (test)")
        if self.write_delay:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.write_delay)
            self._check()
        await self.inner.append_messages(msgs)

    async def last_seq(self, conv):
        self._check()
        return await self.inner.last_seq(conv)

    async def messages(self, conv, **kw):
        self._check()
        return await self.inner.messages(conv, **kw)

    async def get_conversation(self, conv):
        self._check()
        return await self.inner.get_conversation(conv)


# -- tests ------------------------------------------------------------------------


async def test_archives_every_message_once(nats_srv, nc, store):
    convs = [new_conv() for _ in range(4)]
    for i, conv in enumerate(convs):
        await publish(nc, conv, range(1, 201 + i))
    async with running(nats_srv.url, store, settings(archive_batch=100)) as arch:
        await wait_lag_zero(arch)
        for i, conv in enumerate(convs):
            await assert_archived_once(store, conv, 200 + i)
        info = await nc.jetstream().consumer_info("MESSAGES", "archiver")
        assert info.num_ack_pending == 0 and info.num_pending == 0
        assert b"switchboard_archiver_lag 0.0" in arch.metrics()
        assert b"switchboard_archiver_messages_total 806.0" in arch.metrics()


async def test_killed_mid_stream_then_restarted_loses_nothing(nats_srv, nc, store):
    # Protects: acks only after the write. A batch fetched (or written but not
    # acked) when the process dies is redelivered; redelivery is idempotent.
    convs = [new_conv() for _ in range(3)]
    # ack wait 1 s: the restarted archiver gets the killed one's batch soon
    st = settings(archive_batch=50, nats_url=nats_srv.url, archive_ack_wait_sec=1.0)
    # A slow store keeps each fetched batch unacked for a while, so the kill
    # below lands mid-batch (checked by the assertion after it).
    producer = asyncio.gather(*(publish(nc, c, range(1, 1001)) for c in convs))
    async with doomed(nats_srv, FlakyStore(store, write_delay=0.3), st) as (_, kill):
        await until(lambda: _stored_at_least(store, convs[0], 100), 20, "some archived")

        async def in_flight() -> bool:
            return (await nc.jetstream().consumer_info("MESSAGES", "archiver")).num_ack_pending > 0

        await until(in_flight, 20, "a batch delivered and not yet acked")
        kill()  # no clean shutdown, no final acks
    info = await nc.jetstream().consumer_info("MESSAGES", "archiver")
    # the kill left delivered-but-unacked messages: the restart must get them again
    assert info.num_ack_pending > 0
    await producer
    async with running(nats_srv.url, store, st, serve_history=False) as second:
        await wait_lag_zero(second)
    for c in convs:
        await assert_archived_once(store, c, 1000)


async def _stored_at_least(store, conv, n):
    return await store.last_seq(conv) >= n


async def test_store_outage_pauses_and_loses_nothing(nats_srv, nc, store, backend, request):
    conv = new_conv()
    if backend == "sqlite":
        flaky = FlakyStore(store)
        stop_store, start_store = (lambda: setattr(flaky, "down", True)), (lambda: setattr(flaky, "down", False))
        use = flaky
    else:
        try:
            node = request.getfixturevalue("cassandra_node")
        except pytest.FixtureLookupError:
            pytest.skip("no cassandra_node fixture with stop()/start()")
        stop_store, start_store, use = node.stop, node.start, store
    async with running(nats_srv.url, use, settings(archive_batch=100, archive_max_deliver=2,
                                                   archive_lag_interval_sec=0.2),
                       backoff=Backoff(initial=0.05, cap=0.5)) as arch:
        await publish(nc, conv, range(1, 101))
        await wait_lag_zero(arch)
        await _maybe_await(stop_store())
        await publish(nc, conv, range(101, 601))
        await asyncio.sleep(1.5)  # several failed tries, more than archive_max_deliver
        assert await arch.lag() == 500  # paused: nothing acked while the store is down
        await _maybe_await(start_store())
        await wait_lag_zero(arch, timeout=120)
        await assert_archived_once(store, conv, 600)
        dlq = await nc.jetstream().stream_info("DEADLETTER")
        assert dlq.state.messages == 0  # an outage is never mistaken for poison
        assert sample(arch.metrics(), "switchboard_archiver_store_errors_total") >= 2  # it tried, and failed


async def _maybe_await(x):
    if asyncio.iscoroutine(x):
        await x
    elif x is not None and hasattr(x, "__await__"):
        await x


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_poison_messages_go_to_dead_letter(nats_srv, nc, store):
    conv = new_conv()
    flaky = FlakyStore(store, reject="hello 7")
    js = nc.jetstream()
    await publish(nc, conv, range(1, 11))
    await js.publish(f"sb.msg.{conv}", b"not json at all")
    wrong = Msg(conv="someone-else", seq=1, id="x", from_="mallory", body="hi")
    await js.publish(f"sb.msg.{conv}", frames.encode(wrong))
    async with running(nats_srv.url, flaky, settings(archive_batch=100, archive_max_deliver=3)) as arch:
        await wait_lag_zero(arch)
        dead = await js.pull_subscribe("sb.dlq.archive", durable="t", stream="DEADLETTER")
        got = await dead.fetch(10, timeout=2)
        by_reason = sorted((m.headers["Sb-Dlq-Reason"], m.headers["Sb-Dlq-Detail"], m.data) for m in got)
        assert len(by_reason) == 3
        assert by_reason[0][0] == "rejected" and "value rejected" in by_reason[0][1]
        assert b'"seq":7' in by_reason[0][2]
        assert [r[0] for r in by_reason[1:]] == ["undecodable", "undecodable"]
        assert any(r[2] == b"not json at all" for r in by_reason)
        assert any("does not match subject" in r[1] for r in by_reason)
        assert all(m.headers["Sb-Dlq-Subject"] == f"sb.msg.{conv}" for m in got)
        # stream seq and delivery count come from each message's ack subject:
        # 7 = "hello 7", 11 and 12 the undecodable ones; none was redelivered
        assert sorted(int(m.headers["Sb-Dlq-Stream-Seq"]) for m in got) == [7, 11, 12]
        assert all(m.headers["Sb-Dlq-Deliveries"] == "1" for m in got)
        assert sorted(m.headers["Nats-Msg-Id"] for m in got) == [f"archive-MESSAGES-{n}" for n in (11, 12, 7)]
        # every other message archived, the poison one not
        stored = [m.seq for m in await store.messages(conv, limit=100)]
        assert stored == [1, 2, 3, 4, 5, 6, 8, 9, 10]
        assert b'switchboard_archiver_dead_letters_total{reason="undecodable"} 2.0' in arch.metrics()
        # terminated, not pending: the consumer is clean
        info = await js.consumer_info("MESSAGES", "archiver")
        assert info.num_ack_pending == 0


async def test_clean_stop_finishes_the_batch_in_hand(nats_srv, nc, store):
    conv = new_conv()
    await publish(nc, conv, range(1, 301))
    async with running(nats_srv.url, store, settings(archive_batch=300), serve_history=False):
        await until(lambda: _stored_at_least(store, conv, 1), 20, "first batch")
    info = await nc.jetstream().consumer_info("MESSAGES", "archiver")
    assert info.num_ack_pending == 0  # nothing left unacked for the ack wait to redeliver
    await assert_archived_once(store, conv, 300)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_failing_on_its_last_delivery_is_dead_lettered_at_once(nats_srv, nc, store):
    # Protects: the delivery count read from the ack subject. A message that
    # JetStream delivers for the last time (max_deliver) and that the store
    # rejects is dead-lettered on that first failure, not retried until the
    # server gives up on it silently.
    conv = new_conv()
    st = settings(archive_batch=10, archive_max_deliver=2, nats_url=nats_srv.url, archive_ack_wait_sec=1.0)
    await publish(nc, conv, [1])
    # delivery 1: taken by an archiver that dies in the middle of the write
    async with doomed(nats_srv, FlakyStore(store, write_delay=30), st) as (_, kill):

        async def delivered() -> bool:
            return (await nc.jetstream().consumer_info("MESSAGES", "archiver")).num_ack_pending == 1

        await until(delivered, 20, "the message delivered to the first archiver")
        kill()
    # delivery 2 (the last one) after the ack wait: the store rejects it
    flaky = FlakyStore(store, reject="hello 1")
    async with running(nats_srv.url, flaky, st, serve_history=False) as second:
        await wait_lag_zero(second)
        dead = await nc.jetstream().pull_subscribe("sb.dlq.archive", durable="t", stream="DEADLETTER")
        [m] = await dead.fetch(1, timeout=2)
        assert m.headers["Sb-Dlq-Reason"] == "rejected"
        assert m.headers["Sb-Dlq-Deliveries"] == "2"
        assert m.headers["Sb-Dlq-Stream-Seq"] == "1"
        assert flaky.write_calls == 1  # no retry: it was the last delivery
        info = await nc.jetstream().consumer_info("MESSAGES", "archiver")
        assert info.num_ack_pending == 0 and info.num_redelivered == 0  # terminated


async def test_pull_error_status_backs_off_then_resumes(nats_srv, nc, store):
    # Protects: a pull request ended by an error status (409 consumer deleted,
    # then 503 no responders) fails the fetch and the loop backs off, rather
    # than asking again in a tight loop; archiving resumes once the consumer
    # is back.
    conv = new_conv()
    st = settings(archive_batch=100, nats_url=nats_srv.url)
    async with running(nats_srv.url, store, st, serve_history=False) as arch:
        await publish(nc, conv, range(1, 11))
        await wait_lag_zero(arch)
        await nc.jetstream().delete_consumer("MESSAGES", "archiver")
        before = arch.bus_stats.out_msgs
        await asyncio.sleep(1.5)
        # backoff 0.1, 0.2, 0.4, 0.8 s: a handful of requests (a tight loop makes thousands)
        assert arch.bus_stats.out_msgs - before < 30
        await ensure_consumer(nc.jetstream(), "MESSAGES", st)
        await publish(nc, conv, range(11, 21))
        await wait_lag_zero(arch)
        await assert_archived_once(store, conv, 20)


async def test_nats_server_restart_archiving_resumes(nats_srv, nc, store):
    # Protects: the lean fetch/ack connection across a reconnect. A pull
    # request lost with the old connection times out and is asked again, the
    # inbox subscription is re-sent, acks queued meanwhile go out after it.
    conv = new_conv()
    async with running(nats_srv.url, store, settings(archive_batch=20), serve_history=False) as arch:
        await publish(nc, conv, range(1, 51))
        await wait_lag_zero(arch)
        nats_srv.stop()
        await asyncio.sleep(0.5)
        nats_srv.start()  # same port, same JetStream store

        async def published() -> bool:
            try:
                await publish(nc, conv, range(51, 101))
                return True
            except Exception:  # noqa: BLE001 - nats-py still reconnecting
                return False

        await until(published, 20, "publishing after the restart")
        await wait_lag_zero(arch)
        assert arch.bus_stats.reconnects == 1
    await assert_archived_once(store, conv, 100)


class OverlapProbe:
    """Wraps a real store: each write is held ``delay`` seconds, and the most
    writes seen in progress at once is kept in ``most``."""

    def __init__(self, inner, delay: float) -> None:
        self.inner, self.delay = inner, delay
        self.now = self.most = 0

    async def append_messages(self, msgs):
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            await asyncio.sleep(self.delay)
            await self.inner.append_messages(msgs)
        finally:
            self.now -= 1

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.mark.parametrize("window", [1, 3])
async def test_write_window_overlaps_writes_and_loses_nothing(nats_srv, nc, store, window):
    # Protects the write window ([archiver] write_window): up to that many
    # batches are written at once (not more: each holds a batch unacked), and
    # batches acked out of order still archive every message exactly once.
    convs = [new_conv() for _ in range(3)]
    for conv in convs:
        await publish(nc, conv, range(1, 301))
    probe = OverlapProbe(store, delay=0.1)
    async with running(nats_srv.url, probe, settings(archive_batch=30, archive_write_window=window),
                       serve_history=False) as arch:
        await wait_lag_zero(arch)
    assert probe.most == window
    for conv in convs:
        await assert_archived_once(store, conv, 300)
