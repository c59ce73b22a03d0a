"""The server side: one micro service whose every endpoint runs through one wrapper."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client as NATS
from nats.micro.request import Request
from nats.micro.service import EndpointConfig, ServiceConfig

from switchboard import log
from switchboard.errors import Internal, SwitchboardError, Unavailable
from switchboard.rpc.endpoint import Endpoint, encode_error, error_headers
from switchboard.rpc.stats import EndpointCounts, MicroService
from switchboard.subjects import Subjects

# Requests of one service being handled at once; beyond it a request is
# answered `unavailable` (retry) at once, so a flood of expensive queries
# cannot starve what shares the event loop (a sequencer's leases and send
# pipeline). 256 is the sequencer's bound since issue 7: far above what a
# healthy fabric has in flight (a few per edge), far below what exhausts memory.
MAX_INFLIGHT = 256
# Seconds stop() waits for the requests in hand to be answered.
STOP_TIMEOUT = 5.0

Handler = Callable[..., Awaitable[Any]]


class RpcService:
    """A NATS micro service (``nats micro ls/info/stats`` see it) whose
    endpoints are :class:`Endpoint` descriptors served by plain handlers::

        svc = RpcService(nc, name="sb-archiver", version=..., description=..., subjects=settings.subjects)
        await svc.start()
        await svc.add(api.HISTORY, history.query)  # async (HistoryQuery) -> HistoryReply

    Each request runs in its own task (a micro callback runs one at a time),
    at most ``max_inflight`` at once across the service. The wrapper decodes
    the request (:class:`BadRequest` if it cannot), awaits the handler and
    answers its reply, or, for an error, the one error answer of
    :mod:`switchboard.rpc.endpoint`: a :class:`SwitchboardError` keeps its
    code and retry flag; any other exception is logged and answered
    ``internal`` (retry). Requests, errors by code and the time from arrival
    to answer are counted in :attr:`counts` (``$SRV.STATS``, Prometheus).

    The object outlives start()/stop() (its counters too): make it with the
    role, so a metrics registry can hold its collector from the start."""

    def __init__(self, nc: NATS | None, *, name: str, version: str, description: str, subjects: Subjects,
                 metadata: dict[str, str] | None = None, queue_group: str | None = None,
                 max_inflight: int = MAX_INFLIGHT) -> None:
        self.nc = nc
        self.name = name
        self.subjects = subjects
        self.counts: dict[str, EndpointCounts] = {}
        self.busy = 0  # requests refused at once over max_inflight (also counted as `unavailable`)
        self._config = ServiceConfig(name=name, version=version, description=description, metadata=metadata,
                                     queue_group=queue_group)
        self._max_inflight = max_inflight
        self._micro: MicroService | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._log = log.get("rpc", service=name)

    @property
    def id(self) -> str | None:
        """The micro service instance id (``$SRV.STATS.<name>.<id>``), once started."""
        return self._micro.id if self._micro is not None else None

    async def start(self, nc: NATS | None = None) -> None:
        """Register the micro service on ``nc`` (or the connection given at
        construction: a role that connects in its own start() passes it here)."""
        if nc is not None:
            self.nc = nc
        assert self.nc is not None, "no NATS connection"
        self._micro = MicroService(self.nc, self._config, self.counts)
        await self._micro.start()

    async def add(self, endpoint: Endpoint[Any, Any], handler: Handler, *, queue_group: str | None = None,
                  with_subject: bool = False, **params: str) -> None:
        """Serve ``endpoint`` with ``handler(request)`` (``handler(request,
        subject)`` if ``with_subject``) on its subject, ``params`` filling
        some ``{param}`` tokens (the rest are wildcards). The caller flushes
        ``nc`` when all are added, so a request right after finds them."""
        assert self._micro is not None, "start() first"
        self.counts.setdefault(endpoint.name, EndpointCounts())

        async def on_request(req: Request) -> None:
            self._dispatch(endpoint, handler, with_subject, req)

        await self._micro.add_endpoint(EndpointConfig(name=endpoint.name, handler=on_request,
                                                      subject=endpoint.pattern(self.subjects, **params),
                                                      queue_group=queue_group))

    async def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop taking requests, then wait up to ``timeout`` for those in hand."""
        if self._micro is not None:
            with contextlib.suppress(Exception):  # the connection may be gone already
                await self._micro.stop()
            self._micro = None
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=timeout)

    # -- the wrapper --------------------------------------------------------------
    def _dispatch(self, endpoint: Endpoint[Any, Any], handler: Handler, with_subject: bool, req: Request) -> None:
        t0 = time.perf_counter_ns()
        if len(self._tasks) >= self._max_inflight:
            self.busy += 1
            coro = self._answer(endpoint, req, t0, None, Unavailable(f"{self.name} busy; retry"))
        else:
            coro = self._run(endpoint, handler, with_subject, req, t0)
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, endpoint: Endpoint[Any, Any], handler: Handler, with_subject: bool, req: Request,
                   t0: int) -> None:
        try:
            request = endpoint.decode_request(req.data)
            reply = await (handler(request, req.subject) if with_subject else handler(request))
            data = endpoint.encode_reply(reply)
        except SwitchboardError as exc:
            await self._answer(endpoint, req, t0, None, exc)
        except Exception as exc:  # a bug or a backend failure must answer, not hang the caller
            self._log.exception("request failed", endpoint=endpoint.name, subject=req.subject)
            await self._answer(endpoint, req, t0, None, Internal(f"{endpoint.name} failed: {type(exc).__name__}"))
        else:
            await self._answer(endpoint, req, t0, data, None)

    async def _answer(self, endpoint: Endpoint[Any, Any], req: Request, t0: int, data: bytes | None,
                      err: SwitchboardError | None) -> None:
        try:
            if err is None:
                await req.respond(data or b"")
            else:
                await req.respond(encode_error(err), headers=error_headers(err))
        except Exception as exc:  # no reply subject (a plain publish), or the connection closed
            self._log.debug("answer not sent", endpoint=endpoint.name, error=type(exc).__name__)
        self.counts[endpoint.name].observe(time.perf_counter_ns() - t0, None if err is None else err.code,
                                           "" if err is None else err.message)
