"""A lean batch fetch for a durable pull consumer.

nats-py's ``PullSubscription.fetch`` waits for each message of a batch with its
own ``asyncio.wait_for``, which costs more than the store write of the whole
batch. This sends the same ``$JS.API.CONSUMER.MSG.NEXT`` requests and collects
the replies in a subscription callback instead:

1. ``{"batch": N, "no_wait": true}``: whatever is available now, up to N; the
   server ends a short batch with a 404/408 status.
2. Nothing available: ``{"batch": 1, "expires": wait}``, which returns as soon
   as one message arrives (the next call picks up the rest with 1.).

Messages are ordinary JetStream messages (``ack``/``in_progress``/``term``
work as usual). A message that arrives after its request timed out is kept
for the next call, never dropped.
"""

from __future__ import annotations

import asyncio
import json

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg as NatsMsg

# 20 ms: history reads see unarchived messages anyway (read-your-writes from
# the stream), so archiving a little later costs nothing visible.
LINGER = 0.02
_END = {"404", "408", "409"}  # no messages / request expired / consumer changed or deleted


class Puller:
    def __init__(self, *, nc: NATS, stream: str, durable: str, api_prefix: str = "$JS.API") -> None:
        self._nc = nc
        self._next_subject = f"{api_prefix}.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._inbox = nc.new_inbox()
        self._got: list[NatsMsg] = []
        self._want = 0
        self._done: asyncio.Event = asyncio.Event()
        self._sub = None

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(self._inbox, cb=self._on_msg, pending_msgs_limit=1_000_000)

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def _on_msg(self, msg: NatsMsg) -> None:
        if not msg.data and msg.headers and msg.headers.get("Status") in _END | {"100"}:
            if msg.headers.get("Status") != "100":  # 100 = heartbeat, ignored
                self._done.set()
            return
        self._got.append(msg)
        if len(self._got) >= self._want:
            self._done.set()

    async def _request(self, req: dict, timeout: float) -> list[NatsMsg]:
        self._want = req["batch"]
        self._done.clear()
        if len(self._got) < self._want:
            await self._nc.publish(self._next_subject, json.dumps(req).encode(), reply=self._inbox)
            try:
                await asyncio.wait_for(self._done.wait(), timeout)
            except asyncio.TimeoutError:
                pass
        out, self._got = self._got, []
        return out

    async def fetch(self, batch: int, wait: float, linger: float = LINGER) -> list[NatsMsg]:
        """Up to ``batch`` messages; waits up to ``wait`` seconds only when none is available.

        When the stream was idle and one message arrives, it lingers
        ``linger`` seconds and takes what came meanwhile: at a trickle of
        messages that makes one store write per tick rather than per message.
        """
        got = await self._request({"batch": batch, "no_wait": True}, timeout=max(wait, 1.0))
        if got:
            return got
        got = await self._request({"batch": 1, "expires": int(wait * 1e9)}, timeout=wait + 0.5)
        if got and linger > 0 and batch > len(got):
            await asyncio.sleep(linger)
            got += await self._request({"batch": batch - len(got), "no_wait": True}, timeout=max(wait, 1.0))
        return got
