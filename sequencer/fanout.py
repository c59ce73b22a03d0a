"""Fan-out: one INBOX entry per member, publishes pipelined.

Publishes are *issued* in order (under the conversation lock, so each user's
INBOX receives a conversation's messages in seq order) and their acks awaited
together afterwards: never one awaited round trip per recipient. Each entry
carries ``Nats-Msg-Id = conv:seq:user``, so re-running a fan-out (a retried
send, a retry after a timeout) stores nothing twice.
"""

from __future__ import annotations

import asyncio
from typing import Iterable

from switchboard.bus.jspub import JsPublisher

from switchboard.errors import Unavailable
from switchboard.subjects import Subjects

# Retries of the publishes whose ack did not come: a JetStream leader change
# takes a few seconds; beyond that the client retries the send (it is durable).
FANOUT_ATTEMPTS = 3


class Fanout:
    def __init__(self, *, pub: JsPublisher, subjects: Subjects, timeout: float) -> None:
        self._pub = pub
        self._subjects = subjects
        self._timeout = timeout

    async def issue(self, conv: str, seq: int, data: bytes, users: Iterable[str]) -> list[tuple[str, asyncio.Future]]:
        pending = []
        for user in users:
            fut = await self._pub.publish(self._subjects.inbox(user), data, {"Nats-Msg-Id": f"{conv}:{seq}:{user}"})
            pending.append((user, fut))
        return pending

    async def enqueue_push(self, conv: str, seq: int, entries: dict[str, bytes]) -> None:
        """PUSH work-queue entries (user -> PushEntry JSON), pipelined, deduplicated."""
        for attempt in range(FANOUT_ATTEMPTS):
            pending = []
            for user, data in entries.items():
                fut = await self._pub.publish(self._subjects.push(user), data,
                                              {"Nats-Msg-Id": f"{conv}:{seq}:{user}:push"})
                pending.append((user, fut))
            failed = set(await self._wait(pending))
            entries = {u: d for u, d in entries.items() if u in failed}
            if not entries:
                return
        raise Unavailable(f"push enqueue of {conv}#{seq} did not complete; retry the send")

    async def complete(self, conv: str, seq: int, data: bytes,
                       pending: list[tuple[str, asyncio.Future]]) -> None:
        for attempt in range(FANOUT_ATTEMPTS):
            failed = await self._wait(pending)
            if not failed:
                return
            if attempt + 1 < FANOUT_ATTEMPTS:
                pending = await self.issue(conv, seq, data, failed)
        raise Unavailable(f"fan-out of {conv}#{seq} did not complete; retry the send")

    async def _wait(self, pending: list[tuple[str, asyncio.Future]]) -> list[str]:
        if not pending:
            return []
        futs = [f for _, f in pending]
        done, not_done = await asyncio.wait(futs, timeout=self._timeout)
        for f in not_done:
            f.cancel()
        failed = []
        for user, f in pending:
            if f in not_done or f.cancelled() or (f.exception() is not None):
                failed.append(user)
        return failed

