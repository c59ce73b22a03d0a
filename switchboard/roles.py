"""One shape for every role: what a process host starts, stops and scrapes.

A *role* is one service of the fabric (edge, sequencer, archiver, presence,
pusher) as the process that runs it sees it. Each service package has a
small adapter, ``<service>/role.py``, implementing :class:`Role`: it builds
the service from a :class:`RoleContext`, so the host (``sbctl``, the only
package that imports services) knows no service's constructor. The
registry, name -> factory, is ``sbctl/roles.py``. This module is shared code
and imports no service.

The contract, which every adapter keeps and the host relies on:

- ``name``: the registry key (``"edge"``, ...): the CLI subcommand and the
  name in ``switchboard up --layout``.
- ``await start(ctx)``: build the service from ``ctx`` and start it. Called
  once per role object. When it returns the role serves: its NATS
  subscriptions are in effect on the server (a request right after finds a
  responder) and its listeners accept. What it needs and cannot find (a
  stream, a consumer) raises a :class:`~switchboard.errors.SwitchboardError`
  whose message is the one line the CLI prints. After a failed start the
  host does not call ``stop()``: the process is about to exit.
- ``await stop()``: stop serving, finish or hand back work in flight, and
  release what ``start()`` opened (its own connections, its backend), never
  what the context owns (``ctx.nc``, the store). Called once, after a
  successful start; it must not hang when NATS is gone.
- ``metrics()``: the role's Prometheus metrics as one collector (a
  ``CollectorRegistry`` is one), or None when it has none. Called after
  ``start()``; the host joins every role's collector on ``/metrics`` (and the
  edge's page shows those of its process).

Roles of one process start in registry order (the sequencer before the
edge) and stop in reverse order; they share ``ctx.nc`` and the store.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from prometheus_client.registry import Collector
    from structlog.typing import FilteringBoundLogger

    from switchboard.config import Settings
    from switchboard.store import Store


@dataclass(frozen=True, kw_only=True)
class RoleContext:
    """What the host hands a role's ``start()``."""

    settings: Settings
    # The process's nats-py connection (JetStream, micro services), shared by
    # its roles; the host drains it after every role stopped.
    nc: NATS
    # A new nats-py connection with the same servers, credentials and TLS as
    # ``nc``, under the given client name; the caller closes it.
    connect: Callable[[str], Awaitable[NATS]]
    # The process's message store (``settings.store_url``), opened on first
    # use and shared by the roles that ask (sequencer, archiver); the host
    # closes it after those roles stopped.
    store: Callable[[], Awaitable[Store]]
    log: FilteringBoundLogger  # bound to the role's name
    data_dir: Path  # settings.data_dir: where a role keeps local files (device tokens, ...)


@runtime_checkable
class Role(Protocol):
    """A service as a process runs it (the contract: this module's docstring)."""

    name: str

    async def start(self, ctx: RoleContext) -> None: ...

    async def stop(self) -> None: ...

    def metrics(self) -> Collector | None: ...


def registry_of(component: object) -> Collector | None:
    """The ``registry`` of ``component.metrics``, if it has one: how the
    services hold their Prometheus metrics (a registry per instance, no
    module-level state; e.g. edge/metrics.py)."""
    registry = getattr(getattr(component, "metrics", None), "registry", None)
    return registry


__all__ = ["Role", "RoleContext", "registry_of"]
