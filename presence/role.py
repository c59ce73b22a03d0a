"""The presence tracker as a role (switchboard/roles.py): its backend
(``presence_url``) is opened here and closed after the tracker stops."""

from __future__ import annotations

from prometheus_client.registry import Collector

from presence.tracker import PresenceTracker, TrackerConfig
from switchboard.presence import PresenceBackend, open_presence
from switchboard.roles import RoleContext, registry_of


class PresenceRole:
    name = "presence"

    def __init__(self) -> None:
        self.service: PresenceTracker | None = None
        self.backend: PresenceBackend | None = None

    async def start(self, ctx: RoleContext) -> None:
        s = ctx.settings
        self.backend = open_presence(s.presence_url)
        await self.backend.open()
        config = TrackerConfig(sweep_sec=s.presence_sweep_sec, max_watches_per_user=s.presence_max_watches_per_user)
        self.service = PresenceTracker(nc=ctx.nc, backend=self.backend, subjects=s.subjects, config=config)
        try:
            await self.service.start()
        except BaseException:
            await self.backend.close()
            raise

    async def stop(self) -> None:
        try:
            if self.service is not None:
                await self.service.stop()
        finally:
            if self.backend is not None:
                await self.backend.close()

    def metrics(self) -> Collector | None:
        return registry_of(self.service)
