"""The archiver service: fetch loop, lag metric and the ``sb-archiver`` micro service.

``Archiver(settings=..., nc=..., store=...)`` then ``await start()`` /
``await stop()``; :func:`run_archiver` does both around a stop event. The
caller owns ``nc`` and ``store`` (opens and closes them), so ``switchboard up``
can share one connection and one store between services. ``nc`` (nats-py)
serves the cold paths: the consumer, the lag gauge, history (micro service)
and dead letters. The hot path, fetching batches and acking each message,
runs on the archiver's own lean connection
(:class:`switchboard.bus.conn.BusConnection`, opened in ``start()`` and closed
in ``stop()``): nats-py's per-message parse, subscription task and ack
coroutine cost more CPU than the store write.

Batches are written ``archive_write_window`` at a time (one task each, acked
when its own write returns): a store round trip overlaps the decoding of the
next batches.

Shutdown: stop fetching, finish (write + ack) the batches in hand, stop the
micro service (switchboard/rpc/) after answering the queries in hand. A
batch fetched but not written (the process died) is redelivered by
JetStream after the consumer's ack wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS

import switchboard
from archiver.consumer import DURABLE
from archiver.history import FloorCache, History
from archiver.metrics import ArchiverMetrics
from archiver.puller import Puller
from archiver.writer import BatchWriter, store_backoff
from switchboard import api, log, rpc, tls
from switchboard.backoff import Backoff
from switchboard.bus import streams
from switchboard.bus.conn import BusConnection, BusMsg, BusStats, connect as bus_connect
from switchboard.config import Settings
from switchboard.events import HistoryQuery, HistoryReply
from switchboard.store import Store
from switchboard.trace import Tracer, default_instance

SERVICE_NAME = "sb-archiver"
VERSION = switchboard.__version__  # the package's (pyproject.toml), shown by `nats micro ls`


class Archiver:
    def __init__(self, *, settings: Settings, nc: NATS, store: Store,
                 backoff: Backoff | None = None, serve_history: bool = True, archive: bool = True) -> None:
        self.settings = settings
        self._nc = nc
        self._js = nc.jetstream()
        self._store = store
        # [archiver] timings, read once: an idle fetch's wait, a short batch's
        # linger, the lag gauge's period.
        self._fetch_wait = settings.archive_fetch_wait_sec
        self._linger = settings.archive_linger_sec
        self._lag_interval = settings.archive_lag_interval_sec
        self._write_window = settings.archive_write_window  # batches written at once
        self._serve_history = serve_history
        self._archive = archive  # False: a history-only replica (reads the durable's ack floor, fetches nothing)
        self.stream = streams.names(settings)[0]
        self.metrics_ = ArchiverMetrics()
        self._backoff = backoff
        self._bus: BusConnection | None = None  # the hot path's connection (archive=True), from start()
        self._puller: Puller | None = None
        self._writer: BatchWriter | None = None
        self._floor = FloorCache(read=self._read_ack_floor)
        self.history = History(nc=nc, store=store, stream=self.stream, subject_prefix=settings.subject_prefix,
                               ack_floor=self._floor.get)
        self._log = log.get("archiver", stream=self.stream)
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # sb-archiver: the history endpoint (switchboard/rpc/), counted for
        # `nats micro stats` and rpc.RpcCollector.
        self.rpc = rpc.RpcService(nc, name=SERVICE_NAME, version=VERSION, subjects=settings.subjects,
                                  description="Archives MESSAGES into the store; serves history")

    # -- lifecycle -------------------------------------------------------------
    async def start(self) -> None:
        # MESSAGES and the durable are created by the admin step (switchboard
        # init / up, with archiver.consumer.ensure_consumer): the archiver's
        # NATS user may only use them.
        await streams.require_streams(self._js, [self.stream])
        try:
            await self._js.consumer_info(self.stream, DURABLE)
        except nats.js.errors.NotFoundError:
            raise streams.NotInitialized(f"JetStream consumer {self.stream}/{DURABLE}") from None
        self._tasks = [asyncio.create_task(self._lag_loop(), name="archiver-lag")]
        if self._archive:
            self._bus = await bus_connect(servers=self.settings.nats_servers, name="sb-archiver",
                                          tls=tls.nats_client_context(self.settings))
            self._puller = Puller(conn=self._bus, stream=self.stream, durable=DURABLE)
            self._puller.start()
            tracer = Tracer(publish=self._bus.publish, prefix=self.settings.subject_prefix, role="archiver",
                            instance=self.settings.instance or default_instance("archiver"))
            self._writer = BatchWriter(settings=self.settings, conn=self._bus, js=self._js, store=self._store,
                                       stream=self.stream, metrics=self.metrics_, backoff=self._backoff,
                                       tracer=tracer)
            self._tasks.append(asyncio.create_task(self._fetch_loop(), name="archiver-fetch"))
        if self._serve_history:
            await self.rpc.start()
            await self.rpc.add(api.HISTORY, self._history)
            await self._nc.flush()  # started means answering: the SUB is in effect on the server
        self._log.info("archiver started", store=type(self._store).__name__, batch=self.settings.archive_batch,
                       archive=self._archive, history=self._serve_history)

    async def stop(self) -> None:
        """Stop fetching, finish the batch in hand, stop serving."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        lag, fetch = (self._tasks + [None, None])[:2]
        if lag is not None:
            lag.cancel()
        if fetch is not None and self._writer is not None:
            # Outage retries give up (the batch stays unacked and is redelivered).
            self._writer.stopping = True
            with contextlib.suppress(asyncio.CancelledError):
                await fetch
        await self.rpc.stop()  # the queries in hand are answered first
        if self._puller is not None:
            self._puller.stop()
        if self._bus is not None:
            await self._bus.close()  # writes the last acks and waits for the server to take them
        self._log.info("archiver stopped")

    def metrics(self) -> bytes:
        """Prometheus text exposition (``switchboard_archiver_lag`` and friends)."""
        return self.metrics_.render()

    @property
    def bus_stats(self) -> BusStats | None:
        """Counters of the fetch/ack connection (messages out, reconnects...),
        read-only; None before start or in a history-only replica. For tests
        and benchmarks that check how hard the archiver asks the server."""
        return self._bus.stats if self._bus is not None else None

    # -- archiving -------------------------------------------------------------
    async def flush(self) -> None:
        """Wait until the server has taken every ack sent so far (tests, the bench)."""
        if self._bus is not None:
            await self._bus.flush()

    async def _fetch(self) -> list[BusMsg]:
        assert self._puller is not None
        return await self._puller.fetch(self.settings.archive_batch, self._fetch_wait, self._linger)

    async def _fetch_loop(self) -> None:
        """Fetch, hand each batch to a write task, fetch the next.

        Up to ``archive_write_window`` batches are written at once, each acked
        when its own write returns (acks are per message, so the order in
        which writes finish does not matter; the consumer's ack floor only
        passes a message once it and everything below it are acked). With
        every slot taken the loop holds one fetched batch until a write ends:
        the prefetch of the one-batch-at-a-time loop this replaced.
        """
        backoff = store_backoff(self.settings)
        slots = asyncio.Semaphore(self._write_window)
        writes: set[asyncio.Task[None]] = set()
        try:
            while not self._stopping.is_set():
                try:
                    batch = await self._fetch()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - NATS down or reconnecting: wait and fetch again
                    self._log.warning("fetch failed, retrying", error=f"{type(exc).__name__}: {exc}")
                    await asyncio.sleep(backoff.delay())
                    continue
                backoff.reset()
                if not batch:
                    continue
                # Already fetched: written even if a stop comes meanwhile,
                # rather than left to the ack wait.
                await slots.acquire()
                task = asyncio.create_task(self._write(batch, slots), name="archiver-write")
                writes.add(task)
                task.add_done_callback(writes.discard)
        finally:
            if writes:
                await asyncio.gather(*writes, return_exceptions=True)

    async def _write(self, batch: list[BusMsg], slots: asyncio.Semaphore) -> None:
        assert self._writer is not None
        try:
            await self._writer.handle(batch)
        except Exception as exc:  # noqa: BLE001 - acks not sent (bus down): JetStream redelivers the batch
            self._log.warning("batch not acked, left for redelivery", error=f"{type(exc).__name__}: {exc}",
                              messages=len(batch))
        finally:
            slots.release()

    async def _read_ack_floor(self) -> int:
        info = await self._js.consumer_info(self.stream, DURABLE)
        return info.ack_floor.stream_seq if info.ack_floor else 0

    async def lag(self) -> int:
        """Messages not yet archived: never delivered plus delivered-but-unacked."""
        info = await self._js.consumer_info(self.stream, DURABLE)
        self._floor.update(info.ack_floor.stream_seq if info.ack_floor else 0)
        value = (info.num_pending or 0) + (info.num_ack_pending or 0)
        self.metrics_.lag.set(value)
        return value

    async def _lag_loop(self) -> None:
        while True:
            try:
                await self.lag()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001
                self._log.debug("lag read failed", error=str(exc))
            await asyncio.sleep(self._lag_interval)

    # -- history ---------------------------------------------------------------
    async def _history(self, q: HistoryQuery) -> HistoryReply:
        """``sb.api.history`` (served by self.rpc, one task per query: a slow
        store read does not hold up the others). A store or bus failure is
        answered ``internal`` with retry by the wrapper."""
        t0 = time.perf_counter()
        try:
            return await self.history.query(q)
        finally:
            self.metrics_.history_seconds.observe(time.perf_counter() - t0)


async def run_archiver(*, settings: Settings, nc: NATS, store: Store, stop: asyncio.Event | None = None,
                       **options: Any) -> None:
    """Run an archiver until ``stop`` is set (or the task is cancelled), then shut down cleanly."""
    archiver = Archiver(settings=settings, nc=nc, store=store, **options)
    await archiver.start()
    try:
        await (stop or asyncio.Event()).wait()
    finally:
        await archiver.stop()
