"""Pipelined JetStream publishing with cheap acks.

Publishes go through a :class:`~switchboard.bus.requester.Requester` (one
reply subscription, counter tokens); the reply is decoded with msgspec into a
small :class:`PubAck`, and an API error (e.g. 10071 wrong last sequence)
fails the future with :class:`PublishError` carrying the JetStream error
code. nats-py's ``publish_async`` instead draws a random token from the OS
and builds a dataclass per ack, and (2.16) raises an API error inside its
reply handler rather than failing the future, so the caller waits forever.
"""

from __future__ import annotations

import asyncio

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from switchboard.bus.requester import Requester
from switchboard.errors import SwitchboardError, Unavailable


class PublishError(SwitchboardError):
    """JetStream refused the message."""

    code = "stream_refused"

    def __init__(self, message: str, *, err_code: int) -> None:
        super().__init__(message)
        self.err_code = err_code


class _ApiError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class PubAck(msgspec.Struct):
    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: _ApiError | None = None


_decode_ack = msgspec.json.Decoder(PubAck).decode


class JsPublisher:
    """``await publish(...)`` returns a future resolving to the :class:`PubAck`."""

    def __init__(self, *, nc: NATS) -> None:
        self._requester = Requester(nc=nc)

    async def start(self) -> None:
        await self._requester.start()

    async def stop(self) -> None:
        await self._requester.stop()

    async def publish(self, subject: str, data: bytes, headers: dict[str, str] | None = None) -> asyncio.Future:
        return await self._requester.send(subject, data, headers, parse=_ack_of)


def _ack_of(reply: Msg) -> PubAck:
    try:
        ack = _decode_ack(reply.data)
    except msgspec.DecodeError:
        raise Unavailable("unreadable publish ack") from None
    if ack.error is not None:
        raise PublishError(ack.error.description, err_code=ack.error.err_code)
    return ack
