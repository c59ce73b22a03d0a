"""Subscriptions whose messages are handed to a plain function, in line.

nats-py gives every callback subscription its own asyncio task and queue;
an edge holds one subscription per connected user, so that is 20,000 tasks
and queues for 20,000 users, and a task switch per delivered message. The
edge's handlers never block (they append to socket buffers), so they can run
right inside the client's read loop: :func:`subscribe_inline` subscribes
without a callback (no task) and puts an object in place of the
subscription's queue whose ``put_nowait`` calls the handler.

This leans on nats-py internals (``Subscription._pending_queue``, checked
against nats-py 2.16); tests/e2e cover it on every delivery path.
"""

from __future__ import annotations

from typing import Callable

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from switchboard import log

_log = log.get("bus.fastsub")


class _Inline:
    __slots__ = ("_handler",)

    def __init__(self, handler: Callable[[Msg], None]) -> None:
        self._handler = handler

    def put_nowait(self, msg: Msg) -> None:
        try:
            self._handler(msg)
        except Exception:  # noqa: BLE001 - never let one message break the client's read loop
            _log.exception("inline subscription handler failed", subject=msg.subject)

    def qsize(self) -> int:
        return 0

    def empty(self) -> bool:
        return True

    async def join(self) -> None:
        return None

    def __bool__(self) -> bool:
        return True


async def subscribe_inline(nc: NATS, subject: str, handler: Callable[[Msg], None]) -> Subscription:
    """Subscribe ``subject``; ``handler(msg)`` runs synchronously for each
    message and must not block or raise."""
    # pending_bytes_limit=0: nothing is ever pending here, and the byte count
    # nats-py keeps would otherwise grow until it declared a slow consumer.
    sub = await nc.subscribe(subject, pending_bytes_limit=0)
    sub._message_iterator = None  # noqa: SLF001 - not iterated; lets the unused queue go
    sub._pending_queue = _Inline(handler)  # type: ignore[assignment]  # noqa: SLF001
    return sub
