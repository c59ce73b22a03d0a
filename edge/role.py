"""The edge as a role (switchboard/roles.py): built from the role context."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.registry import Collector

from edge.server import Edge
from switchboard.roles import RoleContext


class EdgeRole:
    name = "edge"

    def __init__(self) -> None:
        self.service: Edge | None = None

    async def start(self, ctx: RoleContext) -> None:
        self.service = Edge(settings=ctx.settings, nc=ctx.nc)
        await self.service.start()

    async def stop(self) -> None:
        if self.service is not None:
            await self.service.stop()

    def metrics(self) -> Collector | None:
        return self.service.metrics.registry if self.service is not None else None

    def also_export(self, collectors: Iterable[Collector]) -> None:
        """Show ``collectors`` (the other roles of this process, other
        processes' pages) on this edge's ``/metrics`` as well."""
        assert self.service is not None
        self.service.metrics.extra = list(collectors)
