"""The sequencer as a role (switchboard/roles.py): built from the role context."""

from __future__ import annotations

from prometheus_client.registry import Collector

from sequencer.service import Sequencer
from switchboard.roles import RoleContext, registry_of


class SequencerRole:
    name = "sequencer"

    def __init__(self) -> None:
        self.service: Sequencer | None = None

    async def start(self, ctx: RoleContext) -> None:
        self.service = Sequencer(settings=ctx.settings, nc=ctx.nc, store=await ctx.store())
        await self.service.start()

    async def stop(self) -> None:
        if self.service is not None:
            await self.service.stop()

    def metrics(self) -> Collector | None:
        return registry_of(self.service)
