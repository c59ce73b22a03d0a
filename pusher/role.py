"""The pusher as a role (switchboard/roles.py): the service ([pusher]
settings: policy, device store, providers) and the sequencer lookups (badge
counts, read marks) built from the context."""

from __future__ import annotations

from prometheus_client.registry import Collector

from pusher.lookups import SequencerLookups
from pusher.service import PusherService
from switchboard.errors import Unavailable
from switchboard.log import redact_url
from switchboard.reach import QUIET_DRIVERS, reach
from switchboard.roles import RoleContext, registry_of


class PusherRole:
    name = "pusher"

    def __init__(self) -> None:
        self.service: PusherService | None = None

    async def start(self, ctx: RoleContext) -> None:
        s = ctx.settings
        lookups = SequencerLookups(nc=ctx.nc, subjects=s.subjects, timeout=s.push_lookup_timeout_sec)
        self.service = PusherService(settings=s, read_upto=lookups.read_upto, unread_count=lookups.unread_count)
        # The device store (Cassandra when several pushers run) is waited for
        # like the message store; start() opens it again, which does nothing.
        await reach(self.service.devices.open, what="the device store", where=redact_url(s.push_device_store),
                    timeout_sec=s.store_connect_timeout_sec, retry_on=(Unavailable,), log=ctx.log,
                    attempt_sec=None, quiet=QUIET_DRIVERS)
        await self.service.start()

    async def stop(self) -> None:
        if self.service is not None:
            await self.service.stop()

    def metrics(self) -> Collector | None:
        return registry_of(self.service)
