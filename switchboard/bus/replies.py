"""Request/reply on a :class:`~switchboard.bus.conn.BusConnection` with
callbacks: one wildcard reply subscription, counter tokens, one timeout sweep.

Why: nats-py's ``request`` makes a subscription or a future plus a timer task
per request (19.6 µs per request/reply here); the hot path (an edge send, a
sequencer JetStream publish awaiting its ack) needs ~2 µs
(shared/notes/hot-path-measured.md). So: one ``_INBOX.<id>.*`` subscription,
the reply subject of request n is ``_INBOX.<id>.n``, the pending callbacks sit
in a dict, and one periodic sweep (not a timer per request) expires the late
ones. A JetStream publish is a request to the stream's subject whose reply is
the ack JSON; this module does not parse it (nats-py stays for the JetStream
API).

Each request gets exactly one ``on_reply(msg, None)`` or ``on_reply(None,
exc)``: :class:`BusUnavailable` on a "no responders" status (nobody serves
the subject; needs the connection's ``no_responders``, which conn sets), on a
timeout, when the request could not be queued, and at :meth:`Replies.stop`.
An exception raised by ``on_reply`` is logged, never propagated.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from switchboard import log
from switchboard.bus.conn import BusConnection
from switchboard.bus.proto import BusError, BusMsg, BusUnavailable

_log = log.get("bus.replies")

OnReply = Callable[[BusMsg | None, BaseException | None], None]


def _deliver(on_reply: OnReply, msg: BusMsg | None, exc: BaseException | None) -> None:
    try:
        on_reply(msg, exc)
    except Exception:  # a caller's callback must not break the read loop or the sweep
        _log.exception("reply callback failed")


class Replies:
    """Callback request/reply over one reply subscription.

    ``sweep_interval``: how often expired requests are failed, so a timeout
    fires between ``timeout`` and ``timeout + sweep_interval`` late; 50 ms is
    well under any send timeout and costs 20 wake-ups a second.
    """

    def __init__(self, conn: BusConnection, sweep_interval: float = 0.05) -> None:
        self._conn = conn
        self._sweep_interval = sweep_interval
        self._prefix = conn.new_inbox() + "."
        self._plen = len(self._prefix)
        self._counter = 0
        # token -> (deadline, on_reply); insertion order is request order
        self._pending: dict[str, tuple[float, OnReply]] = {}
        self._min_timeout = float("inf")
        self._max_timeout = 0.0
        self._sid: int | None = None
        self._timer: asyncio.TimerHandle | None = None
        # Set by start(); request() (which checks _sid) and _sweep run only after it.
        self._loop: asyncio.AbstractEventLoop

    @property
    def pending(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        if self._sid is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._sid = self._conn.subscribe(self._prefix + "*", self._on_msg)
        self._timer = self._loop.call_later(self._sweep_interval, self._sweep)

    def stop(self) -> None:
        """Unsubscribe; every pending request gets BusUnavailable."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sid is not None:
            self._conn.unsubscribe(self._sid)
            self._sid = None
        pending, self._pending = self._pending, {}
        exc = BusUnavailable("request abandoned: the reply listener stopped")
        for _, on_reply in pending.values():
            _deliver(on_reply, None, exc)

    def request(self, subject: str, data: bytes, on_reply: OnReply, *, headers: bytes | None = None,
                timeout: float) -> None:
        """Publish ``data`` to ``subject`` with a reply subject; ``on_reply``
        is called once, later (never from inside this call)."""
        if self._sid is None:
            raise BusError("Replies.start() was not called")
        self._counter += 1
        token = str(self._counter)
        if timeout < self._min_timeout:
            self._min_timeout = timeout
        if timeout > self._max_timeout:
            self._max_timeout = timeout
        self._pending[token] = (time.monotonic() + timeout, on_reply)
        try:
            self._conn.publish(subject, data, reply=self._prefix + token, headers=headers)
        except BusError as exc:
            del self._pending[token]
            self._loop.call_soon(_deliver, on_reply, None, exc)

    async def call(self, subject: str, data: bytes, *, headers: bytes | None = None, timeout: float) -> BusMsg:
        """``request`` awaited (cold paths): the reply, or BusUnavailable."""
        fut: asyncio.Future[BusMsg] = asyncio.get_running_loop().create_future()

        def done(msg: BusMsg | None, exc: BaseException | None) -> None:
            if fut.done():
                return  # the caller was cancelled
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(msg)  # type: ignore[arg-type]  # a reply comes with exc None (module doc)

        self.request(subject, data, done, headers=headers, timeout=timeout)
        return await fut

    def _on_msg(self, msg: BusMsg) -> None:
        entry = self._pending.pop(msg.subject[self._plen:], None)
        if entry is None:
            return  # late (timed out already) or a duplicate
        if msg.hdr and not msg.data and msg.status == "503":
            _deliver(entry[1], None, BusUnavailable("no responders: nobody serves this subject now; retry"))
            return
        try:
            entry[1](msg, None)
        except Exception:  # see _deliver; inlined here on the hot path
            _log.exception("reply callback failed")

    def _sweep(self) -> None:
        self._timer = self._loop.call_later(self._sweep_interval, self._sweep)
        pending = self._pending
        if not pending:
            return
        now = time.monotonic()
        # Requests are in insertion order. A request made after one whose
        # deadline is d has a deadline of at least d - (max - min timeout), so
        # once that is in the future nothing after it has expired.
        spread = self._max_timeout - self._min_timeout
        expired: list[str] = []
        for token, (deadline, _) in pending.items():
            if deadline <= now:
                expired.append(token)
            elif deadline - spread > now:
                break
        for token in expired:
            entry = pending.pop(token, None)
            if entry is not None:
                _deliver(entry[1], None, BusUnavailable("no reply in time: the service did not answer; retry"))
