"""Request/reply with one shared reply subscription and plain counter tokens.

What nats-py's ``request`` does, minus a random token from the OS and a
``wait_for`` task per request: the edge makes one request per message sent
and per receipt batch, so the difference shows. A "no responders" status
reply (nobody serves that subject) fails at once with :class:`Unavailable`.
"""

from __future__ import annotations

import asyncio
import itertools

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from switchboard.bus.fastsub import subscribe_inline
from switchboard.errors import Unavailable


class Requester:
    def __init__(self, *, nc: NATS) -> None:
        self._nc = nc
        self._prefix = ""
        self._counter = itertools.count(1)
        self._futures: dict[str, asyncio.Future] = {}
        self._sub = None

    async def start(self) -> None:
        self._prefix = self._nc.new_inbox()
        self._sub = await subscribe_inline(self._nc, self._prefix + ".*", self._on_reply)

    async def stop(self) -> None:
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception:  # noqa: BLE001 - connection already closed
                pass
            self._sub = None
        for f in self._futures.values():
            if not f.done():
                f.set_exception(Unavailable("shutting down"))
        self._futures.clear()

    def _on_reply(self, msg: Msg) -> None:
        fut = self._futures.pop(msg.subject.rpartition(".")[2], None)
        if fut is None or fut.done():
            return
        if not msg.data and msg.headers and msg.headers.get("Status") == "503":
            fut.set_exception(Unavailable("the service behind this request is not running; retry"))
        else:
            fut.set_result(msg)

    async def request(self, subject: str, payload: bytes, timeout: float) -> Msg:
        token = str(next(self._counter))
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._futures[token] = fut
        expire = loop.call_later(timeout, self._expire, token, timeout)
        try:
            await self._nc.publish(subject, payload, reply=f"{self._prefix}.{token}")
            return await fut
        finally:
            expire.cancel()
            self._futures.pop(token, None)

    def _expire(self, token: str, timeout: float) -> None:
        fut = self._futures.pop(token, None)
        if fut is not None and not fut.done():
            fut.set_exception(Unavailable(f"the service behind this request did not answer in {timeout:g}s; retry"))
