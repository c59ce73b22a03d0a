"""Archiver benchmark: sustained archiving rate and history page latency.

``switchboard bench archiver [--store URL] [--nats URL] [--messages N] [--convs C] [--rate R]``

1. Publishes ``messages`` Msg frames over ``convs`` conversations into a
   private MESSAGES stream (own stream and subject prefix, deleted after), as
   the sequencer does; not timed.
2. Starts an archiver on that backlog and times it until everything is
   written and acked: msgs/s archived (store write + ack included), and the
   CPU it took per message: the whole process (event loop + the store's
   thread; the embedded nats-server is another process, not counted) and the
   event loop thread alone (the rest is the store's thread).

   With ``--rate R`` the archiver starts on an empty stream and another
   process publishes the messages at R msgs/s, the shape of live traffic
   (batches are what arrives while the previous one is written, not full
   ones); CPU per message is then taken from the first publish until the last
   message is archived, and ``store_writes`` says how many batches that took.
3. Sends 50-message history queries over ``sb.api.history`` (NATS round trip,
   membership check, store read, unarchived-tail read): p50/p99.
Without ``--nats`` an embedded nats-server is started; without ``--store``, a
temporary SQLite file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import statistics
import sys
import tempfile
import time
import uuid

import nats

from archiver.consumer import ensure_consumer
from archiver.service import Archiver
from switchboard import api, frames, rpc
from switchboard.bus import streams
from switchboard.config import Settings
from switchboard.events import HistoryQuery
from switchboard.store import Conversation, open_store


def _counter_value(counter) -> float:
    """A prometheus_client Counter's value through its public collect()
    (a few µs: cheap enough to poll every 10 ms without moving the CPU figures)."""
    return next(s.value for m in counter.collect() for s in m.samples if s.name.endswith("_total"))


def _feed(nats_url: str, subject_prefix: str, conv_ids: list[str], messages: int, rate: float) -> None:
    """The publisher process of ``--rate``: ``messages`` at ``rate`` msgs/s."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    async def feed() -> None:
        nc = await nats.connect(nats_url)
        js = nc.jetstream(publish_async_max_pending=4000)
        subjects = Settings(subject_prefix=subject_prefix).subjects
        convs = len(conv_ids)
        per_conv = [0] * convs
        body = "x" * 100
        t0 = time.perf_counter()
        i = 0
        while i < messages:
            due = min(messages, int((time.perf_counter() - t0) * rate) + 1)
            while i < due:
                k = i % convs
                per_conv[k] += 1
                m = frames.Msg(conv=conv_ids[k], seq=per_conv[k], id=f"m{i}", from_="alice", body=body,
                               ts=1_700_000_000_000 + i)
                await js.publish_async(subjects.msg(conv_ids[k]), frames.encode(m))
                i += 1
            await asyncio.sleep(0.002)  # a 2 ms tick: steady, not bursts
        await js.publish_async_completed()
        await nc.close()

    asyncio.run(feed())


async def run(*, nats_url: str, store_url: str, messages: int = 100_000, convs: int = 100,
              queries: int = 2000, batch: int = 500, rate: float = 0.0) -> dict:
    tag = uuid.uuid4().hex[:6]
    st = Settings(nats_url=nats_url, store_url=store_url, subject_prefix=f"bench{tag}",
                  stream_prefix=f"BENCH{tag}_", archive_batch=batch)
    nc = await nats.connect(nats_url)
    js = nc.jetstream(publish_async_max_pending=4000)
    store = open_store(store_url)
    await store.open()
    conv_ids = [f"bench{tag}-{i}" for i in range(convs)]
    try:
        await streams.ensure_streams(js, st)  # the admin step's job (switchboard init) ...
        await ensure_consumer(js, streams.names(st)[0], st)  # ... and the archiver's durable
        for c in conv_ids:
            await store.create_conversation(Conversation(id=c, members=("alice", "bob"), created_by="alice"))
        per_conv = [0] * convs
        body = "x" * 100
        t0 = time.perf_counter()
        for i in range(messages):
            k = i % convs
            per_conv[k] += 1
            if rate:
                continue  # published by the feeder process; only the counts are needed here
            m = frames.Msg(conv=conv_ids[k], seq=per_conv[k], id=f"m{i}", from_="alice", body=body,
                           ts=1_700_000_000_000 + i)
            await js.publish_async(st.subjects.msg(conv_ids[k]), frames.encode(m))
        await js.publish_async_completed()
        publish_s = time.perf_counter() - t0

        arch = Archiver(settings=st.replace(archive_lag_interval_sec=0.5), nc=nc, store=store)  # lag polled often
        feeder = None
        if rate:
            await arch.start()
            feeder = multiprocessing.get_context("spawn").Process(
                target=_feed, args=(nats_url, st.subject_prefix, conv_ids, messages, rate), daemon=True)
        t0 = time.perf_counter()
        cpu0, loop0 = time.process_time(), time.thread_time()  # this coroutine runs on the loop thread
        if feeder is not None:
            feeder.start()  # spawning costs this process a little CPU: counted, as a fixed cost
        else:
            await arch.start()
        archived = arch.metrics_.archived
        while _counter_value(archived) < messages:
            await asyncio.sleep(0.01)
        archive_s = time.perf_counter() - t0
        cpu_s, loop_s = time.process_time() - cpu0, time.thread_time() - loop0
        if feeder is not None:
            publish_s = archive_s
            await asyncio.get_running_loop().run_in_executor(None, feeder.join)
        writes = sum(s.value for m in arch.metrics_.batch_seconds.collect() for s in m.samples
                     if s.name.endswith("_count"))
        await arch.flush()  # the last acks are buffered publishes
        lag = await arch.lag()

        rng = random.Random(1)
        lat = []
        for _ in range(queries):
            k = rng.randrange(convs)
            before = rng.randint(51, per_conv[k] + 1) if per_conv[k] > 50 else None
            q = HistoryQuery(conv=conv_ids[k], user="alice", before=before, limit=50)
            t1 = time.perf_counter()  # encode + round trip + decode, as a service calling history pays
            r = await rpc.call(nc, api.HISTORY, q, subjects=st.subjects, timeout=5)  # an error raises
            lat.append(time.perf_counter() - t1)
            assert len(r.messages) == min(50, (before or per_conv[k] + 1) - 1), len(r.messages)
        await arch.stop()
        lat.sort()
        return {
            "store": store_url.split("://", 1)[0],
            "messages": messages,
            "convs": convs,
            "batch": batch,
            "rate": rate or None,
            "publish_msgs_per_s": round(messages / publish_s),
            "archive_msgs_per_s": round(messages / archive_s),
            "archive_seconds": round(archive_s, 3),
            "archive_cpu_us_per_msg": round(cpu_s / messages * 1e6, 1),
            "archive_loop_cpu_us_per_msg": round(loop_s / messages * 1e6, 1),
            "store_writes": int(writes),
            "msgs_per_write": round(messages / max(writes, 1), 1),
            "lag_after": lag,
            "history_queries": queries,
            "history_page": 50,
            "history_p50_ms": round(statistics.median(lat) * 1000, 3),
            "history_p99_ms": round(lat[int(len(lat) * 0.99) - 1] * 1000, 3),
            "history_max_ms": round(lat[-1] * 1000, 3),
        }
    finally:
        for name in (*streams.names(st), streams.deadletter_name(st)):
            try:
                await js.delete_stream(name)
            except Exception:  # noqa: BLE001 - best effort clean-up
                pass
        await store.close()
        await nc.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="switchboard bench archiver", description=__doc__.split("\n\n")[0])
    p.add_argument("--nats", help="NATS URL (default: start an embedded nats-server)")
    p.add_argument("--store", help="store URL (default: a temporary SQLite file)")
    p.add_argument("--messages", type=int, default=100_000, help="messages to archive (default 100,000)")
    p.add_argument("--convs", type=int, default=100, help="conversations they are spread over (default 100)")
    p.add_argument("--queries", type=int, default=2000,
                   help="50-message history queries timed after archiving (default 2000)")
    p.add_argument("--batch", type=int, default=500,
                   help="the archiver's archive_batch: messages per store write at most (default 500)")
    p.add_argument("--rate", type=float, default=0.0,
                   help="publish at this many msgs/s while archiving (default: archive a backlog)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON line instead of a table")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        store_url = a.store or f"sqlite:///{tmp}/bench.db"
        kw = dict(store_url=store_url, messages=a.messages, convs=a.convs, queries=a.queries, batch=a.batch,
                  rate=a.rate)
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        if a.nats:
            result = asyncio.run(run(nats_url=a.nats, **kw))
        else:
            from sbctl.embedded import EmbeddedNats

            with EmbeddedNats(store_dir=f"{tmp}/nats", http_port=-1) as srv:
                result = asyncio.run(run(nats_url=srv.url, **kw))
    if a.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>22}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
