"""Push enqueue: a PUSH entry for each recipient with no online device.

:class:`PresenceView` keeps a local, bounded map user -> online, filled by
one ``sb.api.presence.query`` per message for the users it does not know yet
(all of them in one request) and kept fresh by the tracker's
``sb.presence.changed.*`` events. If the tracker does not answer, nobody is
assumed offline: no notification rather than a flood of them; the message
itself is in INBOX either way.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Iterable

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg as NatsMsg
from nats.aio.subscription import Subscription

from switchboard import api, events, frames, log, rpc
from switchboard.errors import SwitchboardError
from switchboard.frames import Presence
from switchboard.presence.messages import QueryRequest
from switchboard.subjects import Subjects

# Characters of the body that go into a push entry: a notification shows a
# preview, never the whole message (providers cap payloads at ~4 KiB).
PREVIEW_CHARS = 200
QUIET_AFTER_FAILURE = 1.0  # seconds without presence queries after one failed

_presence_decoder = msgspec.json.Decoder(Presence)


class PresenceView:
    def __init__(self, *, nc: NATS, subjects: Subjects, timeout: float, capacity: int = 200_000) -> None:
        self._nc = nc
        self._subjects = subjects
        self._timeout = timeout  # [sequencer] presence_timeout_sec: a later answer is not worth delaying `sent`
        self._online: OrderedDict[str, bool] = OrderedDict()
        self._capacity = capacity
        self._sub: Subscription | None = None
        self._quiet_until = 0.0  # no tracker answered: don't ask again per message
        self._tasks: set[asyncio.Task[None]] = set()
        self._log = log.get("sequencer.presence")

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(f"{self._subjects.prefix}.presence.changed.*", cb=self._on_change)

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def _on_change(self, msg: NatsMsg) -> None:
        try:
            p = _presence_decoder.decode(msg.data)
        except msgspec.DecodeError:
            return
        self._set(p.user, p.online)

    def _set(self, user: str, online: bool) -> None:
        self._online[user] = online
        self._online.move_to_end(user)
        if len(self._online) > self._capacity:
            self._online.popitem(last=False)

    def offline_now(self, users: Iterable[str]) -> list[str]:
        """Who of ``users`` is known to be offline, without waiting: the send
        pipeline's question. A user not known (evicted from the view) counts
        as online this once, and a query refreshes the view in the background."""
        out, unknown = [], []
        online = self._online
        for u in users:
            state = online.get(u)
            if state is False:
                out.append(u)
            elif state is None:
                unknown.append(u)
        if unknown and time.monotonic() >= self._quiet_until:
            task = asyncio.get_running_loop().create_task(self.prime(unknown))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return out

    async def prime(self, users: Iterable[str]) -> None:
        """Learn the state of those of ``users`` not known yet (one query)."""
        await self.offline(users)

    async def offline(self, users: Iterable[str]) -> list[str]:
        users = list(users)
        unknown = [u for u in users if u not in self._online]
        if unknown and time.monotonic() >= self._quiet_until:
            try:
                r = await rpc.call(self._nc, api.PRESENCE_QUERY, QueryRequest(users=unknown), subjects=self._subjects,
                                   timeout=self._timeout)
            except SwitchboardError as exc:
                self._log.debug("presence query failed", code=exc.code)
                self._quiet_until = time.monotonic() + QUIET_AFTER_FAILURE
                return [u for u in users if self._online.get(u) is False]
            for p in r.users:
                self._set(p.user, p.online)
        return [u for u in users if self._online.get(u) is False]


def push_entry(msg: frames.Msg, user: str, title: str) -> bytes:
    body = msg.body if len(msg.body) <= PREVIEW_CHARS else msg.body[: PREVIEW_CHARS - 1] + "…"
    return events.encode(events.PushEntry(user=user, conv=msg.conv, seq=msg.seq, id=msg.id, sender=msg.from_,
                                          body=body, ts=msg.ts, title=title))
