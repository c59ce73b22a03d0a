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
   With ``--archivers N`` the archivers are N processes of their own
   (spawned, each with its own NATS connections and store session, the
   garbage collector tuned as a role process tunes it) on the one durable
   consumer, as a deployment scales out; the bench process only publishes
   and watches the consumer's ack floor. CPU per message is then the sum of
   the archiver processes'. ``--watch-pid PID`` adds the CPU of another
   process over the same window (the Cassandra JVM: where the rest of the
   machine went).
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
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from typing import Any

import nats

from archiver.consumer import DURABLE, ensure_consumer
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


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _archiver_proc(settings: Settings, ready: Any, go: Any, done: Any, out: Any) -> None:
    """One archiver process of ``--archivers N``: connects and opens its store,
    says ready, starts archiving on ``go``, reports its CPU seconds from
    ``go`` to ``done`` and keeps serving history until ``done`` is followed
    by the end of the queries (the parent terminates it)."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    from sbctl import procs

    async def main() -> None:
        nc = await nats.connect(settings.nats_url)
        store = open_store(settings.store_url)
        await store.open()
        arch = Archiver(settings=settings, nc=nc, store=store)
        procs.tune_gc()  # as `switchboard archiver` does once started
        loop = asyncio.get_running_loop()
        ready.put(os.getpid())
        await loop.run_in_executor(None, go.wait)
        cpu0 = time.process_time()
        await arch.start()
        await loop.run_in_executor(None, done.wait)
        out.put(time.process_time() - cpu0)
        await asyncio.Event().wait()  # history queries; terminated by the parent

    asyncio.run(main())


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
              queries: int = 2000, batch: int | None = None, rate: float = 0.0, archivers: int = 0,
              write_window: int | None = None, watch_pid: int | None = None) -> dict:
    tag = uuid.uuid4().hex[:6]
    st = Settings(nats_url=nats_url, store_url=store_url, subject_prefix=f"bench{tag}", stream_prefix=f"BENCH{tag}_")
    if batch is not None:
        st = st.replace(archive_batch=batch)
    if write_window is not None:
        st = st.replace(archive_write_window=write_window)
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

        ctx = multiprocessing.get_context("spawn")
        feeder = None
        if rate:
            feeder = ctx.Process(target=_feed, args=(nats_url, st.subject_prefix, conv_ids, messages, rate),
                                 daemon=True)
        arch: Archiver | None = None
        children: list[Any] = []
        if archivers:
            ready, out, go, done = ctx.Queue(), ctx.Queue(), ctx.Event(), ctx.Event()
            children = [ctx.Process(target=_archiver_proc, args=(st, ready, go, done, out), daemon=True)
                        for _ in range(archivers)]
            for c in children:
                c.start()
            loop = asyncio.get_running_loop()
            for _ in children:
                await loop.run_in_executor(None, lambda: ready.get(timeout=120))
        else:
            from sbctl import procs

            arch = Archiver(settings=st.replace(archive_lag_interval_sec=0.5), nc=nc, store=store)  # lag polled often
            procs.tune_gc()  # as `switchboard archiver` does once started (the store's objects included)
            if rate:
                await arch.start()
        stream = streams.names(st)[0]
        total = messages if rate else (await js.stream_info(stream)).state.last_seq
        watch0 = _proc_cpu(watch_pid) if watch_pid else 0.0
        t0 = time.perf_counter()
        cpu0, loop0 = time.process_time(), time.thread_time()  # this coroutine runs on the loop thread
        if feeder is not None:
            feeder.start()  # spawning costs this process a little CPU: counted, as a fixed cost
        if archivers:
            go.set()
            # Archived = the durable's ack floor reached the last message
            # (every message below it is acked, i.e. written).
            while True:
                info = await js.consumer_info(stream, DURABLE)
                if info.ack_floor and info.ack_floor.stream_seq >= total and not info.num_pending:
                    break
                await asyncio.sleep(0.02)
        else:
            assert arch is not None
            if not rate:
                await arch.start()
            archived = arch.metrics_.archived
            while _counter_value(archived) < messages:
                await asyncio.sleep(0.01)
        archive_s = time.perf_counter() - t0
        cpu_s, loop_s = time.process_time() - cpu0, time.thread_time() - loop0
        watch_s = _proc_cpu(watch_pid) - watch0 if watch_pid else 0.0
        if feeder is not None:
            publish_s = archive_s
            await asyncio.get_running_loop().run_in_executor(None, feeder.join)
        writes = 0
        if archivers:
            done.set()
            cpu_s = 0.0
            for _ in children:
                cpu_s += await asyncio.get_running_loop().run_in_executor(None, lambda: out.get(timeout=60))
            loop_s = float("nan")  # not measured across processes
            lag = (await js.consumer_info(stream, DURABLE)).num_ack_pending
        else:
            assert arch is not None
            writes = int(sum(s.value for m in arch.metrics_.batch_seconds.collect() for s in m.samples
                             if s.name.endswith("_count")))
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
        if arch is not None:
            await arch.stop()
        for c in children:
            c.terminate()
            c.join(10)
        lat.sort()
        if not lat:
            lat.append(float("nan"))
        return {
            "store": store_url.split("://", 1)[0],
            "messages": messages,
            "convs": convs,
            "batch": st.archive_batch,
            "rate": rate or None,
            "publish_msgs_per_s": round(messages / publish_s),
            "archive_msgs_per_s": round(messages / archive_s),
            "archive_seconds": round(archive_s, 3),
            "archive_cpu_us_per_msg": round(cpu_s / messages * 1e6, 1),
            "archive_loop_cpu_us_per_msg": round(loop_s / messages * 1e6, 1),
            "archivers": archivers or "1 (in the bench process)",
            "write_window": st.archive_write_window,
            "archive_cores": round(cpu_s / archive_s, 2),
            **({"watched_pid_cpu_us_per_msg": round(watch_s / messages * 1e6, 1),
                "watched_pid_cores": round(watch_s / archive_s, 2)} if watch_pid else {}),
            "loadavg_1m_after": round(os.getloadavg()[0], 1),
            "store_writes": writes or None,
            "msgs_per_write": round(messages / writes, 1) if writes else None,
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


def bare(store_url: str, *, rows: int = 200_000, convs: int = 100, per_request: int = 20, window: int = 64,
         watch_pid: int | None = None) -> dict:
    """The archiver's Cassandra writes without the archiver: ``rows`` rows of
    the bench's shape into the store's ``messages`` table, as single-partition
    UNLOGGED batches of ``per_request`` rows (``row_values``, token-aware,
    the store's session options), ``window`` requests in flight, each next
    one sent from the driver's I/O thread as the previous answers (no event
    loop, no NATS, no worker thread). What one Python process can push
    through the driver: the ceiling of any archiver design on this box."""
    import threading

    from cassandra.query import BatchStatement, BatchType

    from sbctl import procs
    from switchboard.db.cql import CqlSession, parse_url
    from switchboard.store.cassandra import _int64, _statements, _tables, bucket_of, row_values

    opts = parse_url(store_url)
    cql = CqlSession(opts)
    ks = opts.keyspace
    ps = asyncio.run(cql.open(tables=_tables(ks), statements={"ins": _statements(ks)["msg_insert"]}))
    ins, session = ps["ins"], cql.session
    tag = uuid.uuid4().hex[:6]
    conv_ids = [f"bare{tag}-{i}" for i in range(convs)]
    body = "x" * 100

    def requests():  # round-robin over the conversations, per_request rows each
        seqs = [0] * convs
        i = 0
        while i < rows:
            for k in range(convs):
                n = min(per_request, rows - i)
                if n <= 0:
                    return
                batch = BatchStatement(batch_type=BatchType.UNLOGGED)
                for j in range(n):
                    seqs[k] += 1
                    m = frames.Msg(conv=conv_ids[k], seq=seqs[k], id=f"m{i}", from_="alice", body=body,
                                   ts=1_700_000_000_000 + i)
                    if j == 0:
                        batch.add(ins, (m.conv, bucket_of(m.seq), m.seq, m.id, m.from_, m.body, m.ts, m.kind))
                    else:
                        batch._add_statement_and_params(True, ins.query_id,
                                                        row_values(m.conv.encode(), _int64(bucket_of(m.seq)), m))
                    i += 1
                batch.is_idempotent = True
                yield batch

    work, lock, finished = requests(), threading.Lock(), threading.Event()
    state = {"inflight": 0, "errors": 0}

    def send() -> None:
        with lock:
            try:
                stmt = next(work)
            except StopIteration:
                if state["inflight"] == 0:
                    finished.set()
                return
            state["inflight"] += 1
        session.execute_async(stmt).add_callbacks(done, failed)

    def done(_: Any) -> None:
        with lock:
            state["inflight"] -= 1
        send()

    def failed(_: BaseException) -> None:
        state["errors"] += 1
        done(None)

    procs.tune_gc()
    watch0 = _proc_cpu(watch_pid) if watch_pid else 0.0
    t0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(window):
        send()
    finished.wait()
    secs, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    watch_s = _proc_cpu(watch_pid) - watch0 if watch_pid else 0.0
    asyncio.run(cql.close())
    return {
        "mode": "bare driver loop", "rows": rows, "convs": convs, "rows_per_request": per_request, "window": window,
        "errors": state["errors"], "rows_per_s": round(rows / secs), "seconds": round(secs, 3),
        "client_cpu_us_per_row": round(cpu / rows * 1e6, 1), "client_cores": round(cpu / secs, 2),
        **({"watched_pid_cpu_us_per_row": round(watch_s / rows * 1e6, 1),
            "watched_pid_cores": round(watch_s / secs, 2)} if watch_pid else {}),
        "loadavg_1m_after": round(os.getloadavg()[0], 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="switchboard bench archiver", description=__doc__.split("\n\n")[0])
    p.add_argument("--nats", help="NATS URL (default: start an embedded nats-server)")
    p.add_argument("--store", help="store URL (default: a temporary SQLite file)")
    p.add_argument("--messages", type=int, default=100_000, help="messages to archive (default 100,000)")
    p.add_argument("--convs", type=int, default=100, help="conversations they are spread over (default 100)")
    p.add_argument("--queries", type=int, default=2000,
                   help="50-message history queries timed after archiving (default 2000)")
    p.add_argument("--batch", type=int, default=None,
                   help="the archiver's [archiver] batch: messages per store write at most (default: the setting's)")
    p.add_argument("--rate", type=float, default=0.0,
                   help="publish at this many msgs/s while archiving (default: archive a backlog)")
    p.add_argument("--archivers", type=int, default=0,
                   help="run N archiver processes on the one durable consumer (default: one archiver "
                        "inside the bench process)")
    p.add_argument("--write-window", type=int, default=None,
                   help="the archivers' [archiver] write_window: batches written at once (default: the setting's)")
    p.add_argument("--watch-pid", type=int, default=None,
                   help="also report this process's CPU while archiving (e.g. the Cassandra JVM)")
    p.add_argument("--bare", type=int, default=None, metavar="ROWS_PER_REQUEST",
                   help="no archiver: a bare driver loop writes --messages rows over --convs conversations into "
                        "the Cassandra --store, ROWS_PER_REQUEST rows per single-partition batch (the ceiling "
                        "of one Python process)")
    p.add_argument("--window", type=int, default=64, help="with --bare: requests in flight (default 64)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON line instead of a table")
    a = p.parse_args(argv)
    if a.bare is not None:
        if not (a.store or "").startswith("cassandra://"):
            p.error("--bare needs a cassandra:// --store")
        result = bare(a.store, rows=a.messages, convs=a.convs, per_request=a.bare, window=a.window,
                      watch_pid=a.watch_pid)
        print(json.dumps(result) if a.json else "\n".join(f"{k:>28}: {v}" for k, v in result.items()))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        store_url = a.store or f"sqlite:///{tmp}/bench.db"
        kw = dict(store_url=store_url, messages=a.messages, convs=a.convs, queries=a.queries, batch=a.batch,
                  rate=a.rate, archivers=a.archivers, write_window=a.write_window, watch_pid=a.watch_pid)
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
