"""Request/reply with one shared reply subscription and plain counter tokens.

What nats-py's ``request`` does, minus a random token from the OS and a
``wait_for`` task per request: the edge makes one request per message sent
and per receipt batch, and the sequencer one JetStream publish per copy of a
message (:mod:`switchboard.bus.jspub` decodes those replies as acks), so the
difference shows. A "no responders" status reply (nobody serves that
subject) fails at once with :class:`Unavailable`.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any, Callable

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from switchboard.bus.fastsub import subscribe_inline
from switchboard.errors import Unavailable


class Requester:
    def __init__(self, *, nc: NATS) -> None:
        self._nc = nc
        self._prefix = ""
        self._counter = itertools.count(1)
        self._futures: dict[str, tuple[asyncio.Future, Callable[[Msg], Any] | None]] = {}
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
        for f, _ in self._futures.values():
            if not f.done():
                f.set_exception(Unavailable("shutting down"))
        self._futures.clear()

    def _on_reply(self, msg: Msg) -> None:
        fut, parse = self._futures.pop(msg.subject.rpartition(".")[2], (None, None))
        if fut is None or fut.done():
            return
        if not msg.data and msg.headers and msg.headers.get("Status") == "503":
            fut.set_exception(Unavailable("nobody serves this subject (no responders); retry"))
            return
        try:
            fut.set_result(parse(msg) if parse is not None else msg)
        except Exception as exc:  # noqa: BLE001 - the parser's verdict goes to the caller
            fut.set_exception(exc)

    async def send(self, subject: str, payload: bytes, headers: dict[str, str] | None = None,
                   parse: Callable[[Msg], Any] | None = None) -> asyncio.Future:
        """Publish with a reply subject; the future resolves to the reply, or
        to ``parse(reply)`` (which may raise). The caller bounds the wait (a
        cancelled future is forgotten)."""
        token = str(next(self._counter))
        fut = asyncio.get_running_loop().create_future()
        self._futures[token] = (fut, parse)
        fut.add_done_callback(lambda _f: self._futures.pop(token, None))
        await self._nc.publish(subject, payload, reply=f"{self._prefix}.{token}", headers=headers)
        return fut

    async def request(self, subject: str, payload: bytes, timeout: float) -> Msg:
        fut = await self.send(subject, payload)
        expire = asyncio.get_running_loop().call_later(timeout, _expire, fut, timeout)
        try:
            return await fut
        finally:
            expire.cancel()


def _expire(fut: asyncio.Future, timeout: float) -> None:
    if not fut.done():
        fut.set_exception(Unavailable(f"the service behind this request did not answer in {timeout:g}s; retry"))
