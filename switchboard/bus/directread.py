"""Batch direct gets on the lean bus client: the edge's INBOX reads.

:func:`switchboard.bus.direct.direct_batch` goes through nats-py with a
subscription per call: a SUB and an UNSUB for the server, and for the client
a subscription task, a queue and a ``wait_for`` per message. An edge reads
INBOX for every hello (a reconnect storm: 20,000 in half a minute) and for
every re-read; py-spy of a storm edge put that path at ~9 % of its CPU. Here
one wildcard reply subscription serves every read (reply ``<inbox>.<n>``),
the answers are collected by a callback inline in the connection's read,
and a read costs one future and one timer.

The request and the answers are those of :mod:`switchboard.bus.direct`
(``$JS.API.DIRECT.GET.<stream>`` with ``next_by_subj``, entries, then
``204 EOB`` or a lone ``404``), and so are the results: a
:class:`~switchboard.bus.direct.DirectBatch`, :class:`Unavailable` (retry)
when no answer ends the batch within the timeout,
:class:`~switchboard.bus.direct.DirectGetError` for a refusal.

Order: a read goes over the same connection as the edge's subscriptions, so
the server has processed a SUB queued before the read when it handles the
read (one client's operations are processed in order): an entry stored after
the read is delivered live, one stored before it is in the answer.
"""

from __future__ import annotations

import asyncio
import json

from switchboard.bus.conn import BusConnection, BusMsg
from switchboard.bus.direct import DirectBatch, DirectGetError, add_entry, refusal
from switchboard.bus.inbox import ReplyInbox
from switchboard.errors import Unavailable


class _Read:
    __slots__ = ("fut", "out", "what")

    def __init__(self, fut: asyncio.Future[DirectBatch], out: DirectBatch, what: str) -> None:
        self.fut = fut
        self.out = out
        self.what = what  # "<stream> (<subject>)", for errors


class DirectReader:
    """Batch direct gets over one reply subscription of ``conn``."""

    def __init__(self, conn: BusConnection, *, api_prefix: str = "$JS.API") -> None:
        self._conn = conn
        self._api = f"{api_prefix}.DIRECT.GET."
        self._inbox = ReplyInbox(conn, self._on_msg)
        self._counter = 0
        self._pending: dict[str, _Read] = {}

    @property
    def pending(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        self._inbox.start()

    def stop(self) -> None:
        """Unsubscribe; every read in progress fails with Unavailable."""
        self._inbox.stop()
        pending, self._pending = self._pending, {}
        for r in pending.values():
            self._fail(r, Unavailable("direct get abandoned: the edge is stopping"))

    async def batch(self, *, stream: str, subject: str, start_seq: int, batch: int, timeout: float,
                    max_bytes: int = 0) -> DirectBatch:
        """Up to ``batch`` messages of ``subject`` in ``stream`` from stream
        sequence ``start_seq`` (and, with ``max_bytes``, about that many bytes;
        at least one message)."""
        if batch < 1:
            raise ValueError("batch must be >= 1")
        if not self._inbox.active:
            raise Unavailable("the direct reader is not started")
        start_seq = max(1, start_seq)
        req: dict[str, object] = {"seq": start_seq, "next_by_subj": subject, "batch": batch}
        if max_bytes > 0:
            req["max_bytes"] = max_bytes
        return await self._request(stream, req, start_seq - 1, f"{stream} ({subject})", timeout)

    async def _request(self, stream: str, req: dict[str, object], last_seq: int, what: str,
                       timeout: float) -> DirectBatch:
        """Send one batch request ``req`` to ``stream``'s direct get API; its
        entries until ``204 EOB`` (``last_seq``: the result's when none)."""
        loop = asyncio.get_running_loop()
        self._counter += 1
        token = str(self._counter)
        r = _Read(loop.create_future(), DirectBatch(last_seq=last_seq), what)
        self._pending[token] = r
        timer = loop.call_later(timeout, self._expire, token, timeout)
        try:
            self._conn.publish(self._api + stream, json.dumps(req).encode(), reply=self._inbox.prefix + token)
            return await r.fut
        finally:
            timer.cancel()
            self._pending.pop(token, None)

    def _expire(self, token: str, timeout: float) -> None:
        r = self._pending.pop(token, None)
        if r is not None:
            self._fail(r, Unavailable(f"direct get on {r.what} timed out after {timeout:g}s"))

    @staticmethod
    def _fail(r: _Read, exc: BaseException) -> None:
        if not r.fut.done():
            r.fut.set_exception(exc)

    def _on_msg(self, msg: BusMsg) -> None:
        token = self._inbox.token(msg.subject)
        r = self._pending.get(token)
        if r is None:
            return  # the answer of a read given up on
        out = r.out
        status = msg.status
        if status is not None and not msg.data:
            del self._pending[token]
            err = refusal(status, msg.description or "", r.what)
            if err is not None:
                self._fail(r, err)
                return
            if status == "204":
                n = msg.header(b"Nats-Num-Pending")
                out.num_pending = int(n) if n else 0
            if not r.fut.done():
                r.fut.set_result(out)
            return
        try:
            add_entry(out, msg.headers or {}, msg.data)
        except (KeyError, ValueError):
            del self._pending[token]
            self._fail(r, DirectGetError(f"direct get on {r.what}: an answer without Nats-Sequence"))
