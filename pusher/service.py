"""The pusher service: pull consumer on PUSH, micro service ``sb-pusher``.

- Durable pull consumer on the PUSH work queue (``sb.push.*``), explicit
  acks; ``max_deliver`` is enforced by the worker (it dead-letters on the
  last delivery) rather than by the server, so an entry is never left
  un-acked in the work queue after its last try.
- Endpoint ``sb.api.push.register`` (switchboard/api.py, served through
  switchboard/rpc/): {user, platform, token} -> {ok} or {error: {code,
  message, retry}} (codes: invalid_id, unknown_platform, bad_token,
  bad_request). The edge calls it for the ``push.register`` frame.
- Dead letters go to ``sb.dlq.push``: into JetStream if a stream captures that
  subject, else as a core publish.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

import switchboard
from pusher.providers import PushProvider
from pusher.providers.select import providers_for
from pusher.providers.webpush import WebPushProvider
from pusher.worker import ReadUpto, UnreadCount, Worker, _no_badge
from switchboard import api, log, reach, rpc, tls
from switchboard.bus import streams
from switchboard.config import Settings
from switchboard.devices import BadToken, DeviceStore, RegisterReply, RegisterRequest, check_token, open_device_store
from switchboard.tasks import stop_task
from switchboard.trace import Tracer, default_instance

VERSION = switchboard.__version__  # the package's (pyproject.toml), shown by `nats micro ls`


def push_consumer_config(settings: Settings) -> ConsumerConfig:
    """The PUSH work queue's durable pull consumer (nats/consumers/PUSH.sb-pusher.json):
    ``max_deliver`` -1 (the worker dead-letters on its own last try),
    ``max_ack_pending`` = 4 x concurrency."""
    durable = settings.push_durable
    return ConsumerConfig(name=durable, durable_name=durable, filter_subject=settings.subjects.push_all,
                          ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL, max_deliver=-1,
                          ack_wait=settings.push_ack_wait, max_ack_pending=settings.push_concurrency * 4)


async def ensure_push_consumer(js: JetStreamContext, settings: Settings) -> str:
    """Create the consumer, or bring an existing one to this definition (the
    admin step: sbctl/init.py). Returns its name."""
    await js.add_consumer(streams.names(settings)[2], push_consumer_config(settings))
    return settings.push_durable


class PusherService:
    def __init__(self, *, settings: Settings, devices: DeviceStore | None = None,
                 providers: dict[str, PushProvider] | None = None,
                 unread_count: UnreadCount = _no_badge, read_upto: ReadUpto | None = None) -> None:
        """Everything comes from ``settings`` ([pusher]: policy, device
        store, providers); ``devices`` and ``providers`` replace theirs (tests)."""
        self.settings = settings
        self.devices = devices or open_device_store(settings.push_device_store)
        self.providers = providers if providers is not None else providers_for(settings)
        self._webpush = settings.push_webpush  # the register endpoint checks subscriptions against it
        self.worker = Worker(devices=self.devices, providers=self.providers, config=settings,
                             dead_letter=self._dead_letter, unread_count=unread_count, read_upto=read_upto)
        self.metrics = self.worker.metrics  # its .registry: /metrics (pusher/metrics.py)
        self._log = log.get("pusher")
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        # sb-pusher: the register endpoint (switchboard/rpc/), on the connection start() makes.
        self.rpc = rpc.RpcService(None, name="sb-pusher", version=VERSION, subjects=settings.subjects,
                                  description="Push notifications (APNs, FCM, Web Push)")
        self._task: asyncio.Task[None] | None = None
        self._queue_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._dlq_stored: bool | None = None
        # [pusher] timings, read once: an idle fetch's wait, the queue gauges' period.
        self._fetch_timeout = settings.push_fetch_timeout_sec
        self._queue_poll = settings.push_queue_poll_sec

    async def start(self) -> None:
        await self.devices.open()
        self._nc = await nats.connect(self.settings.nats_servers, name="sb-pusher",
                                      error_cb=reach.error_logger(log.get("pusher.nats")),
                                      **tls.nats_py_options(self.settings))
        tls.require_tls(self._nc, self.settings)
        self._js = js = self._nc.jetstream()
        self.worker.tracer = Tracer(publish=self._nc.publish, prefix=self.settings.subject_prefix, role="pusher",
                                    instance=self.settings.instance or default_instance("pusher"))
        # The stream and the consumer are created by the admin step
        # (switchboard init / up): the pusher's NATS user may only use them.
        durable = self.settings.push_durable
        push = streams.names(self.settings)[2]
        await streams.require_streams(js, [push])
        try:
            await js.consumer_info(push, durable)
        except nats.js.errors.NotFoundError:
            raise streams.NotInitialized(f"JetStream consumer {push}/{durable}") from None
        psub = await js.pull_subscribe_bind(durable=durable, stream=push)
        await self.rpc.start(self._nc)
        await self.rpc.add(api.PUSH_REGISTER, self._register)
        await self._nc.flush()  # started means answering: the SUB is in effect on the server
        self._task = asyncio.create_task(self._consume(psub), name="sb-pusher-consume")
        self._queue_task = asyncio.create_task(self._queue_loop(push, durable), name="sb-pusher-queue")
        self._log.info("pusher.started", providers=sorted({p.platform for p in self.providers.values()}),
                       max_deliver=self.settings.push_max_deliver)

    async def stop(self) -> None:
        self._stopping = True
        await stop_task(self._queue_task)
        # nats-py turns a cancel during fetch into its own TimeoutError, which
        # the loop would take for an empty fetch: the loop also checks
        # _stopping, stop_task cancels again, and the wait is bounded (fetch
        # timeout + 1 s), so a stop never hangs, even with nats-server gone.
        await stop_task(self._task, timeout=self._fetch_timeout + 1.0)
        await self.rpc.stop()
        if self._nc:
            # flush (acks and dead letters are already confirmed), then close; a drain
            # would wait on the pull subscription's pending fetch for its full timeout
            with contextlib.suppress(Exception):  # nats-server may be gone: nothing left to flush to
                await asyncio.wait_for(self._nc.flush(), 1.0)
            # likewise: close what is left (RuntimeError: nats-py writes what it
            # buffered while reconnecting into its closed transport)
            with contextlib.suppress(ConnectionError, RuntimeError, nats.errors.Error):
                await self._nc.close()
        for provider in {id(p): p for p in self.providers.values()}.values():
            await provider.close()
        await self.devices.close()
        self._log.info("pusher.stopped")

    async def __aenter__(self) -> PusherService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _consume(self, psub: JetStreamContext.PullSubscription) -> None:
        batch = self.settings.push_concurrency
        while not self._stopping:
            try:
                msgs = await psub.fetch(batch, timeout=self._fetch_timeout)
            except TimeoutError:
                # An empty fetch. nats.errors.TimeoutError is one, but nats-py
                # 2.16's fetch of several messages also raises asyncio's own
                # (js/client.py, _fetch_n): caught as nats.errors' only, it
                # ended this loop, and the pusher never fetched again.
                continue
            except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError) as exc:
                self._log.warning("pusher.fetch_failed", error=type(exc).__name__)
                await asyncio.sleep(1.0)
                continue
            results = await asyncio.gather(*(self.worker.handle(m) for m in msgs), return_exceptions=True)
            for r in results:
                if isinstance(r, BaseException):  # e.g. the ack could not be sent: it will be redelivered
                    self._log.error("pusher.handle_failed", error=repr(r)[:300])

    async def _queue_loop(self, stream: str, durable: str) -> None:
        """Keep the queue depth gauges (PusherMetrics.queue_*) current."""
        _, js = self._started()  # the task is made by start()
        while True:
            try:
                info = await js.consumer_info(stream, durable)
                self.metrics.queue_pending = info.num_pending or 0
                self.metrics.queue_ack_pending = info.num_ack_pending or 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - NATS away: keep the last values, try again
                self._log.debug("pusher.queue_info_failed", error=type(exc).__name__)
            await asyncio.sleep(self._queue_poll)

    def _started(self) -> tuple[NATS, JetStreamContext]:
        assert self._nc is not None and self._js is not None, "PusherService.start() first"
        return self._nc, self._js

    async def _dead_letter(self, data: bytes, headers: dict[str, str]) -> None:
        nc, js = self._started()
        subject = self.settings.subjects.dead_letter("push")
        if self._dlq_stored is None:  # looked up on first use: is there a stream that keeps dead letters?
            try:
                await js.find_stream_name_by_subject(subject)
                self._dlq_stored = True
            except nats.js.errors.NotFoundError:
                self._dlq_stored = False
        if self._dlq_stored:
            await js.publish(subject, data, headers=headers)
        else:  # core publish: only live subscribers (an operator's `nats sub`) see it
            await nc.publish(subject, data, headers=headers)
            await nc.flush()

    def _check_push_service(self, platform: str, token: str) -> None:
        """A Web Push subscription must name an allowed push service (it is a
        URL the user chose; the pusher would POST to it)."""
        if platform != "webpush" or not isinstance(self.providers.get("webpush"), WebPushProvider):
            return
        endpoint = json.loads(check_token(platform, token))["endpoint"]
        if self._webpush is None or not self._webpush.allows(endpoint):
            raise BadToken("webpush endpoint is not an allowed push service (webpush.allowed_hosts)")

    async def _register(self, r: RegisterRequest) -> RegisterReply:
        """``sb.api.push.register`` (served by self.rpc): a bad token is its
        SwitchboardError (bad_token, unknown_platform, invalid_id)."""
        self._check_push_service(r.platform, r.token)
        device = await self.devices.register(r.user, r.platform, r.token)
        self._log.info("push.registered", user=r.user, platform=device.platform, device=device.short)
        self.metrics.registered(device.platform)
        return RegisterReply(ok=True)
