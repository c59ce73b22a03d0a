"""The presence tracker as a role (switchboard/roles.py): its backend
(``presence_url``) is opened here and closed after the tracker stops."""

from __future__ import annotations

from prometheus_client.registry import Collector

from presence.tracker import PresenceTracker, TrackerConfig
from switchboard.log import redact_url
from switchboard.presence import PresenceBackend, open_presence
from switchboard.reach import reach
from switchboard.roles import RoleContext, registry_of


async def _open_backend(url: str) -> PresenceBackend:
    backend = open_presence(url)
    try:
        await backend.open()
    except BaseException:
        await backend.close()
        raise
    return backend


def _unreachable_errors() -> tuple[type[BaseException], ...]:
    """What a backend that is not (yet) there raises: retried at start
    (switchboard/reach.py); anything else is raised at once."""
    try:
        from redis.exceptions import ConnectionError as RedisConnectionError, TimeoutError as RedisTimeout
    except ImportError:  # no redis extra: memory:// only, which always opens
        return (OSError,)
    return (OSError, RedisConnectionError, RedisTimeout)


class PresenceRole:
    name = "presence"

    def __init__(self) -> None:
        self.service: PresenceTracker | None = None
        self.backend: PresenceBackend | None = None

    async def start(self, ctx: RoleContext) -> None:
        s = ctx.settings
        self.backend = await reach(lambda: _open_backend(s.presence_url), what="the presence backend",
                                   where=redact_url(s.presence_url), timeout_sec=s.presence_connect_timeout_sec,
                                   retry_on=_unreachable_errors(), log=ctx.log)
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
