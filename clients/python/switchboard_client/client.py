"""The Python async client SDK.

    from switchboard_client import Client

    async with Client(url="ws://127.0.0.1:8080/ws", token=token) as c:
        sent = await c.send(to="bob", body="hi")          # durable once it returns
        msg = await c.next_message()                      # frames.Msg, deduplicated

What it does for you:

- reconnects with jittered exponential backoff, resuming from its ``cursor``
  and ``epoch`` (persist them to resume across restarts);
- resends unconfirmed sends with the same id after a reconnect or a
  ``retry: true`` error, so each message is stored once;
- acks the cursor of what it has queued for you (batched);
- drops duplicates by (conv, seq); fills a gap in a conversation, and the
  ranges of a ``resync``, from history (the decisions are
  :class:`switchboard_client.ordering.Ordering`'s, which does no I/O).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from switchboard_client import backoff, frames
from switchboard_client.errors import SwitchboardError, from_code
from switchboard_client.ordering import Fill, Ordering


class ClientError(SwitchboardError):
    """An error the server answered, or the client gave up."""

    code = "client"


class ConnectionLost(ClientError):
    code = "connection_lost"
    retry = True


# Close codes after which reconnecting cannot help (-> the error code raised):
# 4001 the token is refused or expired; 4010 the user opened more sockets on
# that edge than allowed and this, the oldest, was closed: reconnecting on its
# own would close another of the user's devices in turn.
FATAL_CLOSE_CODES = {4001: "unauthorized", 4010: "replaced"}


@dataclass
class _Pending:
    frame: Any
    future: asyncio.Future[Any]
    resend: bool  # sends are resent after a reconnect (same id: stored once)
    attempts: int = 0


# A message that arrives ahead of a missing one is held this long for the
# missing one to arrive live (several sequencers can fan out a conversation's
# messages slightly out of order) before the gap is fetched from history.
GAP_WAIT = 0.3


class Client:
    def __init__(self, *, url: str, token: str, cursor: int | None = None, epoch: str | None = None,
                 auto_ack: bool = True, fill_gaps: bool = True, gap_wait: float = GAP_WAIT,
                 backoff_min: float = 0.1,
                 backoff_max: float = 10.0, request_timeout: float = 30.0, max_retries: int = 20,
                 queue_size: int = 100_000, conv_seqs: dict[str, int] | None = None) -> None:
        self.url = url
        self._token = token
        self.cursor = cursor  # INBOX cursor of the last message queued for the application
        self.epoch = epoch
        self.user: str | None = None
        self.auto_ack = auto_ack
        self.gap_wait = gap_wait
        self.backoff = (backoff_min, backoff_max)
        self._reconnect_wait = backoff.Backoff(backoff_min, backoff_max)  # full jitter: storms spread out
        self.request_timeout = request_timeout
        self.max_retries = max_retries
        self.messages: asyncio.Queue[frames.Msg] = asyncio.Queue(queue_size)
        self.events: asyncio.Queue[Any] = asyncio.Queue(queue_size)  # receipts, typing, presence, conv, resync
        self.reconnects = 0
        self._ws: ClientConnection | None = None
        self._pending: dict[str, _Pending] = {}
        # Per conversation, the last seq handed to the application; persist it
        # with cursor and epoch (``conv_seqs``) so a resync fetches only what is missing.
        self._order = Ordering(conv_seqs, fill_gaps=fill_gaps)
        self._ids = itertools.count(1)
        self._prefix = uuid.uuid4().hex[:12]
        self._synced = asyncio.Event()
        self._closing = False
        self._fatal: BaseException | None = None
        self._runner: asyncio.Task[None] | None = None
        self._ack_task: asyncio.Task[None] | None = None
        self._acked = 0
        self._bg: set[asyncio.Task[None]] = set()

    @property
    def fill_gaps(self) -> bool:
        """Fetch a gap from history (else it is skipped after ``gap_wait``)."""
        return self._order.fill_gaps

    @fill_gaps.setter
    def fill_gaps(self, value: bool) -> None:
        self._order.fill_gaps = value

    @property
    def conv_seqs(self) -> dict[str, int]:
        """Last seq handed to the application, per conversation (persist it)."""
        return self._order.conv_seqs()

    # -- lifecycle -------------------------------------------------------------------
    async def connect(self, timeout: float = 30.0) -> Client:
        self._runner = asyncio.create_task(self._run())
        await self.wait_synced(timeout)
        return self

    async def wait_synced(self, timeout: float = 30.0) -> None:
        waiter = asyncio.ensure_future(self._synced.wait())
        watched: set[asyncio.Future[Any]] = {waiter}
        if self._runner is not None:  # it ends when the edge refuses for good
            watched.add(self._runner)
        done, _ = await asyncio.wait(watched, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            waiter.cancel()
            if self._fatal:
                raise self._fatal
            raise ConnectionLost(f"not synced within {timeout}s")

    async def close(self) -> None:
        self._closing = True
        if self.auto_ack:  # with auto_ack=False the application acks what it has made safe
            await self._flush_ack()
        for task in (self._runner, self._ack_task, *self._bg):
            if task is not None:
                task.cancel()
        if self._ws is not None:
            await self._ws.close()
        for p in self._pending.values():
            if not p.future.done():
                p.future.set_exception(ConnectionLost("client closed"))
        self._pending.clear()

    async def __aenter__(self) -> Client:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _run(self) -> None:
        while not self._closing:
            told: float | None = None  # the wait a refusal's Retry-After asked for
            try:
                async with websockets.connect(self.url, additional_headers={"Authorization": f"Bearer {self._token}"},
                                              max_size=None, compression=None, open_timeout=10) as ws:
                    self._ws = ws
                    await ws.send(frames.encode(frames.Hello(cursor=self.cursor, epoch=self.epoch)))
                    for p in list(self._pending.values()):  # unconfirmed sends: same id, stored once
                        if p.resend:
                            await ws.send(frames.encode(p.frame))
                    self._reconnect_wait.reset()
                    async for data in ws:
                        self._dispatch(data)
            except (TimeoutError, OSError, ConnectionClosed, InvalidStatus) as exc:
                if isinstance(exc, InvalidStatus):  # e.g. 503 from admission control: it says how long
                    told = backoff.retry_after(exc.response.headers.get("Retry-After"))
                rcvd = exc.rcvd if isinstance(exc, ConnectionClosed) else None  # the server's close frame
                if rcvd is not None and rcvd.code in FATAL_CLOSE_CODES:
                    self._fatal = ClientError(f"connection refused: {rcvd.reason}",
                                              code=FATAL_CLOSE_CODES[rcvd.code])
                    self._fail_all(self._fatal)
                    return
            finally:
                self._ws = None
                self._synced.clear()
                self._fail_requests()
            if self._closing:
                return
            self.reconnects += 1
            # An edge refusing a storm books each client a time to come back
            # (Retry-After); otherwise full jitter spreads the storm out.
            await asyncio.sleep(told if told is not None else self._reconnect_wait.delay())

    # -- incoming ----------------------------------------------------------------------
    def _dispatch(self, data: str | bytes) -> None:
        f = frames.decode_server_frame(data)
        if isinstance(f, frames.Msg):
            if f.cursor is not None:
                self.cursor = max(self.cursor or 0, f.cursor)
                self._schedule_ack()
            self._deliver(f)
        elif isinstance(f, frames.Sent):
            self._resolve(f.id, f)
        elif isinstance(f, frames.Error):
            self._on_error(f)
        elif isinstance(f, (frames.History, frames.Conv, frames.ConvList, frames.Ok)) and f.ref in self._pending:
            self._resolve(f.ref, f)
        elif isinstance(f, frames.Welcome):
            self.user, self.epoch = f.user, f.epoch
        elif isinstance(f, frames.Synced):
            self.cursor = max(self.cursor or 0, f.cursor)
            for fill in self._order.synced(f.groups):  # large groups: fetch what was missed while away
                self._spawn(self._fill(fill))
            self._synced.set()
        elif isinstance(f, frames.Resync):
            self.cursor = f.cursor
            self._put_event(f)
            for fill in self._order.resync(f.ranges):
                self._spawn(self._fill(fill))
        else:
            self._put_event(f)

    def _deliver(self, m: frames.Msg) -> None:
        """Hand messages to the application once each, in seq order per
        conversation; a gap is waited for, then fetched from history."""
        order = self._order
        order.receive(m)
        for ready in order.take_ready():
            self._queue(ready)
        for conv in order.take_waits():
            self._spawn(self._repair(conv))

    async def _repair(self, conv: str) -> None:
        order = self._order
        try:
            await asyncio.sleep(self.gap_wait)
            fill = order.expire(conv)
            for m in order.take_ready():
                self._queue(m)
            while fill is not None:
                await self._fill(fill)
                fill = order.filled(conv, fill)
                for m in order.take_ready():
                    self._queue(m)
            order.skip(conv)
            for m in order.take_ready():
                self._queue(m)
        finally:
            order.repair_over(conv)

    def _queue(self, m: frames.Msg) -> None:
        try:
            self.messages.put_nowait(m)
        except asyncio.QueueFull:
            pass  # the application is not reading; it will refetch from history

    def _put_event(self, f: Any) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.events.put_nowait(f)

    def _on_error(self, e: frames.Error) -> None:
        ref = e.ref
        p = self._pending.get(ref) if ref else None
        if ref is None or p is None:
            self._put_event(e)
            return
        if e.retry and p.resend and p.attempts < self.max_retries and not self._closing:
            p.attempts += 1
            self._spawn(self._resend_later(ref, p))
            return
        self._pending.pop(ref, None)
        if not p.future.done():
            p.future.set_exception(from_code(e.code, e.message, e.retry))

    async def _resend_later(self, ref: str, p: _Pending) -> None:
        await asyncio.sleep(backoff.delay(p.attempts, initial=self.backoff[0], cap=self.backoff[1]))
        if self._pending.get(ref) is p and self._ws is not None:
            with contextlib.suppress(ConnectionClosed):
                await self._ws.send(frames.encode(p.frame))

    def _resolve(self, ref: str, value: Any) -> None:
        p = self._pending.pop(ref, None)
        if p is not None and not p.future.done():
            p.future.set_result(value)

    def _fail_requests(self) -> None:
        for ref, p in list(self._pending.items()):
            if not p.resend:
                self._pending.pop(ref)
                if not p.future.done():
                    p.future.set_exception(ConnectionLost("connection lost; retry"))

    def _fail_all(self, exc: BaseException) -> None:
        for p in self._pending.values():
            if not p.future.done():
                p.future.set_exception(exc)
        self._pending.clear()

    # -- acks -----------------------------------------------------------------------------
    def _schedule_ack(self) -> None:
        if self.auto_ack and self._ack_task is None:
            self._ack_task = asyncio.get_running_loop().create_task(self._ack_soon())

    async def _ack_soon(self) -> None:
        await asyncio.sleep(0.05)  # one ack per 50 ms at most, whatever the message rate
        self._ack_task = None
        await self._flush_ack()

    async def _flush_ack(self) -> None:
        if self.cursor and self.cursor > self._acked and self._ws is not None:
            with contextlib.suppress(ConnectionClosed):
                await self._ws.send(frames.encode(frames.Ack(cursor=self.cursor)))
                self._acked = self.cursor

    async def ack(self, cursor: int) -> None:
        if self._ws is not None:
            await self._ws.send(frames.encode(frames.Ack(cursor=cursor)))
            self._acked = max(self._acked, cursor)

    # -- outgoing -----------------------------------------------------------------------------
    def new_id(self) -> str:
        return f"{self._prefix}-{next(self._ids)}"

    async def _request(self, ref: str, frame: Any, *, resend: bool) -> Any:
        if self._fatal:
            raise self._fatal
        fut = asyncio.get_running_loop().create_future()
        self._pending[ref] = _Pending(frame, fut, resend)
        if self._ws is not None:
            with contextlib.suppress(ConnectionClosed):
                await self._ws.send(frames.encode(frame))
        elif not resend:
            self._pending.pop(ref)
            raise ConnectionLost("not connected; retry")
        try:
            return await asyncio.wait_for(fut, self.request_timeout)
        finally:
            self._pending.pop(ref, None)

    async def send(self, *, body: str, conv: str | None = None, to: str | None = None,
                   id: str | None = None, trace: bool = False) -> frames.Sent:
        """Send a message; returns once it is durable. Retries transparently.
        ``trace``: record every hop of this message (``switchboard trace --id``)."""
        ref = id or self.new_id()
        sent: frames.Sent = await self._request(ref, frames.Send(id=ref, body=body, conv=conv, to=to, trace=trace),
                                                resend=True)
        return sent

    async def create_conversation(self, members: list[str], title: str = "") -> frames.Conv:
        ref = self.new_id()
        conv: frames.Conv = await self._request(ref, frames.ConvCreate(members=members, title=title, id=ref),
                                                resend=False)
        return conv

    async def list_conversations(self) -> list[frames.ConvSummary]:
        """Your conversations, most recently active first (at most
        ``conv_list_max``, 500): members, title, ``last_seq``, your ``read``
        watermark (unread = ``last_seq - read``) and the ``last`` message."""
        ref = self.new_id()
        reply: frames.ConvList = await self._request(ref, frames.ConvListRequest(id=ref), resend=False)
        return reply.convs

    async def history(self, conv: str, *, before: int | None = None, after: int | None = None,
                      limit: int = 50) -> frames.History:
        ref = self.new_id()
        page: frames.History = await self._request(
            ref, frames.HistoryRequest(conv=conv, before=before, after=after, limit=limit, id=ref), resend=False)
        return page

    async def history_range(self, conv: str, *, after: int = 0, upto: int | None = None) -> AsyncIterator[frames.Msg]:
        """Every message of ``conv`` with after < seq <= upto (to the end if None), oldest first."""
        while True:
            page = await self.history(conv, after=after, limit=200)
            for m in page.messages:
                if upto is not None and m.seq > upto:
                    return
                yield m
                after = m.seq
            if not page.more or not page.messages:
                return

    async def _fill(self, fill: Fill) -> None:
        with contextlib.suppress(SwitchboardError, asyncio.TimeoutError):
            async for m in self.history_range(fill.conv, after=max(fill.after, 0), upto=fill.upto):
                self._deliver(m)

    async def register_push(self, platform: str, token: str) -> frames.Ok:
        """Register this device for push notifications; returns once stored."""
        ref = self.new_id()
        ok: frames.Ok = await self._request(ref, frames.PushRegister(platform=platform, token=token, id=ref),
                                            resend=False)
        return ok

    async def read(self, conv: str, seq: int) -> None:
        """Mark ``conv`` read up to ``seq``: the members (and your other
        devices) get a ``receipt``; a bad seq comes back as an ``error`` event."""
        await self.send_frame(frames.Read(conv=conv, seq=seq))

    async def typing(self, conv: str) -> None:
        """Tell the other members you are typing (send it at most every few seconds)."""
        await self.send_frame(frames.Typing(conv=conv))

    async def watch_presence(self, users: list[str]) -> None:
        """One ``presence`` event per user now, then one on every change
        (only users who share a conversation with you are watched)."""
        await self.send_frame(frames.PresenceWatch(users=users))

    async def request_receipts(self, conv: str) -> None:
        """Ask for every member's watermarks of ``conv``: one ``receipt`` event each."""
        await self.send_frame(frames.ReceiptsRequest(conv=conv))

    async def send_frame(self, frame: Any) -> None:
        """Send any frame as is (typing, read, presence.watch, push.register)."""
        if self._ws is None:
            raise ConnectionLost("not connected; retry")
        await self._ws.send(frames.encode(frame))

    async def next_message(self, timeout: float | None = None) -> frames.Msg:
        """The next message; ``TimeoutError`` after ``timeout`` seconds
        without one (None: wait as long as it takes). A wait that timed out
        takes nothing from the queue."""
        return await asyncio.wait_for(self.messages.get(), timeout)

    async def next_event(self, timeout: float | None = None) -> Any:
        """The next event (receipt, typing, presence, conv, resync, or an
        error answering none of your requests); ``TimeoutError`` as for
        :meth:`next_message`."""
        return await asyncio.wait_for(self.events.get(), timeout)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)
