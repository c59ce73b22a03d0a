"""The archiver as a role (switchboard/roles.py): built from the role context."""

from __future__ import annotations

from prometheus_client.registry import Collector

from archiver.service import Archiver
from switchboard.roles import RoleContext


class ArchiverRole:
    name = "archiver"

    def __init__(self) -> None:
        self.service: Archiver | None = None

    async def start(self, ctx: RoleContext) -> None:
        self.service = Archiver(settings=ctx.settings, nc=ctx.nc, store=await ctx.store())
        await self.service.start()

    async def stop(self) -> None:
        if self.service is not None:
            await self.service.stop()

    def metrics(self) -> Collector | None:
        return self.service.metrics_.registry if self.service is not None else None
