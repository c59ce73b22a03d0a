"""The log provider, the embedded default: logs what it would send.

INFO is acceptable here because it is the developer's provider; the line has
the platform, a short hash of the token (never the token), conversation, seq,
badge and payload size. The preview text itself is only logged at DEBUG.
"""

from __future__ import annotations

from pusher.notification import Notification
from pusher.providers import SendResult
from switchboard import log
from switchboard.devices import Device


class LogProvider:
    platform = "log"

    def __init__(self) -> None:
        self._log = log.get("pusher.log_provider")

    async def send(self, device: Device, note: Notification) -> SendResult:
        self._log.info("push.would_send", platform=device.platform, device=device.short, conv=note.conv,
                       seq=note.seq, badge=note.badge, title_chars=len(note.title), body_chars=len(note.body))
        self._log.debug("push.would_send.text", device=device.short, title=note.title, body=note.body)
        return SendResult.ok()

    async def close(self) -> None:
        pass
