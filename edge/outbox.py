"""A socket's bounded send queue.

Fan-out never awaits a socket. While the socket keeps up (its transport
buffer is below a high-water mark) a frame is written at once, synchronously
(``write_now``): no queue, no task. Otherwise it is appended to the socket's
queue and a writer task drains it; the task exists only while there is
something queued, so an idle connection costs no task. A queue that reaches its limit
means the client does not keep up: the socket is closed with
:data:`CLOSE_SLOW_CONSUMER` and the client catches up from its cursor on
reconnect, so one slow client never slows the others.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Callable

from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

CLOSE_SLOW_CONSUMER = 4008


class Outbox:
    __slots__ = ("_send", "_write_now", "_q", "_limit", "_writer", "_on_overflow", "closed", "sent")

    def __init__(self, *, send: Callable, limit: int, on_overflow: Callable[[], None],
                 write_now: Callable[[bytes], bool] | None = None) -> None:
        self._send = send  # ws.send
        self._write_now = write_now  # writes at once and returns True, or returns False (busy)
        self._q: deque[bytes] = deque()
        self._limit = limit
        self._writer: asyncio.Task | None = None
        self._on_overflow = on_overflow
        self.closed = False
        self.sent = 0

    def __len__(self) -> int:
        return len(self._q)

    def put(self, data: bytes) -> bool:
        if self.closed:
            return False
        if not self._q and self._write_now is not None and self._write_now(data):
            self.sent += 1
            return True
        if len(self._q) >= self._limit:
            self.closed = True
            self._q.clear()
            self._on_overflow()
            return False
        self._q.append(data)
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._drain())
        return True

    async def _drain(self) -> None:
        q = self._q
        try:
            while q:
                await self._send(q.popleft(), text=True)
                self.sent += 1
        except ConnectionClosed:
            self.closed = True
            q.clear()
        finally:
            self._writer = None

    @property
    def limit(self) -> int:
        return self._limit

    async def drained(self) -> None:
        """Wait until everything queued so far has been written."""
        while self._writer is not None and not self.closed:
            await asyncio.shield(self._writer)

    async def flush(self, timeout: float) -> None:
        if self._writer is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._writer), timeout)
            except (asyncio.TimeoutError, ConnectionClosed):
                pass

    def close(self) -> None:
        self.closed = True
        self._q.clear()
        if self._writer is not None:
            self._writer.cancel()


# The transport may hold this much unsent data before frames are queued
# instead of written: the kernel socket buffer is full, the peer is slow.
HIGH_WATER = 64 * 1024


def direct_writer(ws) -> Callable[[bytes], bool]:
    """``write_now`` for a websockets connection: frame and write a text
    message synchronously through its sans-I/O protocol, when it is open and
    its transport is not backed up."""
    protocol, transport, send_data = ws.protocol, ws.transport, ws.send_data

    def write(data: bytes) -> bool:
        if protocol.state is not State.OPEN or transport.get_write_buffer_size() > HIGH_WATER:
            return False
        protocol.send_text(data)
        send_data()
        return True

    return write
