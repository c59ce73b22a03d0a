"""A lean batch fetch for a durable pull consumer, on the lean bus client.

nats-py's ``PullSubscription.fetch`` waits for each message of a batch with its
own ``asyncio.wait_for``, and every message it delivers costs a parse of its
headers plus a trip through a subscription task and queue; together more than
the store write of the whole batch. This sends the ``$JS.API.CONSUMER.MSG.NEXT``
requests itself on a :class:`~switchboard.bus.conn.BusConnection` and collects
the replies in a handler that runs inline in the connection's read (no task, no
future, no header parse per message; one future and one timer per request):

1. ``{"batch": N, "no_wait": true}``: whatever is available now, up to N; the
   server ends a short batch with a 404/408 status.
2. Nothing available: ``{"batch": 1, "expires": wait}``, which returns as soon
   as one message arrives (the next call picks up the rest with 1.).

Each request has its own reply subject (``<inbox>.<n>`` on one wildcard
subscription): a status that ends an older request (one given up on after
its timeout) does not end the current one. Messages are
:class:`~switchboard.bus.conn.BusMsg` with the JetStream ack subject as
``reply``; :mod:`archiver.acks` acks them. A message that arrives after its
request timed out is kept for the next call, never dropped.
"""

from __future__ import annotations

import asyncio
import json

from switchboard.bus.conn import BusConnection, BusError, BusMsg
from switchboard.bus.inbox import ReplyInbox

# Statuses that end a pull request normally: no messages / request expired
# (or "requests pending"). 100 is an idle heartbeat: ignored. Any other status
# (409 consumer deleted or leadership change, 400, 503 no JetStream...) ends
# it with :class:`PullFailed`, so the fetch loop backs off instead of asking
# again in a tight loop.
_END = frozenset({"404", "408"})


class PullFailed(BusError):
    """The server ended a pull request with an error status."""

    code = "bus_pull"


class Puller:
    def __init__(self, *, conn: BusConnection, stream: str, durable: str, api_prefix: str = "$JS.API") -> None:
        self._conn = conn
        self._next_subject = f"{api_prefix}.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._inbox = ReplyInbox(conn, self._on_msg)
        self._counter = 0
        self._reply = ""  # reply subject of the request in flight
        self._error: str | None = None  # the error status that ended it
        self._got: list[BusMsg] = []
        self._want = 0
        self._waiter: asyncio.Future[None] | None = None
        self._returned = 0.0  # loop time the previous fetch returned

    def start(self) -> None:
        self._inbox.start()

    def stop(self) -> None:
        self._inbox.stop()
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _on_msg(self, msg: BusMsg) -> None:
        # Every JetStream message has its ack subject as reply; a status
        # (404/408/409/100...) has none and an empty payload.
        if not msg.reply:
            if msg.subject != self._reply:
                return  # the status of an older request, given up on already
            status = msg.status
            if status is None or status == "100":
                return
            if status not in _END:
                self._error = f"{status} {msg.description or ''}".rstrip()
            self._wake()  # the request in flight is over
            return
        got = self._got
        got.append(msg)
        if len(got) >= self._want:
            self._wake()

    async def _request(self, batch: int, timeout: float, *, expires: float | None = None) -> list[BusMsg]:
        self._want = batch
        if len(self._got) < batch:
            self._counter += 1
            self._reply = reply = self._inbox.prefix + str(self._counter)
            req = ({"batch": batch, "no_wait": True} if expires is None
                   else {"batch": batch, "expires": int(expires * 1e9)})
            loop = asyncio.get_running_loop()
            self._waiter = waiter = loop.create_future()
            # One timer per request: if neither the batch nor its end status
            # comes (a reconnect lost the request), give up and ask again.
            timer = loop.call_later(timeout, self._wake)
            try:
                self._conn.publish(self._next_subject, json.dumps(req).encode(), reply=reply)
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
                self._reply = ""  # a late status of this request is ignored (its messages are kept)
            if self._error is not None:
                err, self._error = self._error, None
                # whatever came is kept for the next call
                raise PullFailed(f"pull request on {self._next_subject} failed: {err}")
        out, self._got = self._got, []
        return out

    async def fetch(self, batch: int, wait: float, linger: float) -> list[BusMsg]:
        """Up to ``batch`` messages; waits up to ``wait`` seconds only when none is available.

        Gathering: a short batch is returned no sooner than ``linger`` seconds
        after the previous call returned (or, after an idle wait, after its
        first message arrived), topped up with what came meanwhile. Every
        store write has a fixed cost (a transaction, its commit, a page per
        conversation it touches), so a steady stream is written in batches
        of about rate x linger instead of whatever arrived during the last
        write; a backlog (full batches) is not held back.
        """
        # A no_wait request is answered at once; the timeout only covers a lost request.
        got = await self._request(batch, timeout=max(wait, 1.0))
        loop = asyncio.get_running_loop()
        if got:
            until = self._returned + linger
        else:
            # The server answers 408 when ``expires`` passes; 0.5 s more for
            # the round trip before the request counts as lost.
            got = await self._request(1, timeout=wait + 0.5, expires=wait)
            until = loop.time() + linger
        delay = until - loop.time()
        if got and batch > len(got) and delay > 0:
            await asyncio.sleep(delay)
            try:
                got += await self._request(batch - len(got), timeout=max(wait, 1.0))
            except PullFailed:
                pass  # these are delivered already; the next call meets the error again
        self._returned = loop.time()
        return got
