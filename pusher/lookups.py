"""What the pusher asks the sequencer: read watermarks and unread counts.

Both go over ``sb.api`` requests (the pusher never reads the store). A
failed lookup never blocks a notification: ``read_upto`` answers 0 (send it)
and ``unread_count`` answers None (no badge).
"""

from __future__ import annotations

import msgspec
import nats.errors
from nats.aio.client import Client as NATS

from switchboard import events
from switchboard.subjects import Subjects

TIMEOUT = 1.0  # a lookup slower than this is skipped: the notification matters more

_receipts = msgspec.json.Decoder(events.ReceiptsReply)
_unread = msgspec.json.Decoder(events.UnreadReply)


class SequencerLookups:
    def __init__(self, *, nc: NATS, subjects: Subjects) -> None:
        self._nc = nc
        self._subjects = subjects

    async def read_upto(self, user: str, conv: str) -> int:
        try:
            msg = await self._nc.request(self._subjects.api("receipts", "get"),
                                         events.encode(events.ReceiptsQuery(conv=conv)), timeout=TIMEOUT)
            reply = _receipts.decode(msg.data)
        except (nats.errors.Error, msgspec.DecodeError, TimeoutError):
            return 0
        return next((r.read for r in reply.receipts if r.user == user), 0)

    async def unread_count(self, user: str) -> int | None:
        try:
            msg = await self._nc.request(self._subjects.api("unread"),
                                         events.encode(events.UnreadQuery(user=user)), timeout=TIMEOUT)
            reply = _unread.decode(msg.data)
        except (nats.errors.Error, msgspec.DecodeError, TimeoutError):
            return None
        return None if reply.error is not None else reply.total
