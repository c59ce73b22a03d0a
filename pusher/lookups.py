"""What the pusher asks the sequencer: read watermarks and unread counts.

Both go over ``sb.api`` requests (the pusher never reads the store). A
failed lookup never blocks a notification: ``read_upto`` answers 0 (send it)
and ``unread_count`` answers None (no badge).
"""

from __future__ import annotations

from nats.aio.client import Client as NATS

from switchboard import api, events, rpc
from switchboard.errors import SwitchboardError
from switchboard.subjects import Subjects


class SequencerLookups:
    def __init__(self, *, nc: NATS, subjects: Subjects, timeout: float) -> None:
        self._nc = nc
        self._subjects = subjects
        self._timeout = timeout  # [pusher] lookup_timeout_sec: a slower lookup is skipped

    async def read_upto(self, user: str, conv: str) -> int:
        try:
            reply = await rpc.call(self._nc, api.RECEIPTS_GET, events.ReceiptsQuery(conv=conv),
                                   subjects=self._subjects, timeout=self._timeout)
        except SwitchboardError:
            return 0
        return next((r.read for r in reply.receipts if r.user == user), 0)

    async def unread_count(self, user: str) -> int | None:
        try:
            reply = await rpc.call(self._nc, api.UNREAD, events.UnreadQuery(user=user), subjects=self._subjects,
                                   timeout=self._timeout)
        except SwitchboardError:
            return None
        return reply.total
