"""The role registry: name -> factory of a :class:`~switchboard.roles.Role`.

Every way of running roles goes through it: ``switchboard <role>``,
``switchboard run a+b``, ``switchboard up`` (its layout names these roles)
and the in-process fabric of the tests (sbctl/fabric.py). The order is the
start order in one process: the sequencer answers before an edge takes
sends; roles stop in reverse. A service's adapter (``<service>/role.py``)
is imported only when its role is made, so ``switchboard pusher`` does not
load the edge.
"""

from __future__ import annotations

from collections.abc import Callable

from switchboard.errors import ConfigError
from switchboard.roles import Role

RoleFactory = Callable[[], Role]


def _sequencer() -> Role:
    from sequencer.role import SequencerRole

    return SequencerRole()


def _edge() -> Role:
    from edge.role import EdgeRole

    return EdgeRole()


def _archiver() -> Role:
    from archiver.role import ArchiverRole

    return ArchiverRole()


def _presence() -> Role:
    from presence.role import PresenceRole

    return PresenceRole()


def _pusher() -> Role:
    from pusher.role import PusherRole

    return PusherRole()


ROLES: dict[str, RoleFactory] = {
    "sequencer": _sequencer,
    "edge": _edge,
    "archiver": _archiver,
    "presence": _presence,
    "pusher": _pusher,
}
ALL_ROLES: tuple[str, ...] = tuple(ROLES)


def make(name: str) -> Role:
    """A new, not yet started role ``name``; ConfigError names the known ones."""
    factory = ROLES.get(name)
    if factory is None:
        raise ConfigError(f"unknown role {name!r}; roles are {', '.join(ALL_ROLES)}")
    return factory()


def parse_roles(text: str) -> tuple[str, ...]:
    """``"archiver+presence+pusher"`` -> its roles, each known and named once
    (ConfigError otherwise), in the order given."""
    roles = tuple(r.strip() for r in text.split("+") if r.strip())
    unknown = [r for r in roles if r not in ROLES]
    if unknown or not roles:
        raise ConfigError(f"unknown roles {unknown} in {text!r}; roles are {', '.join(ALL_ROLES)}")
    dup = sorted({r for r in roles if roles.count(r) > 1})
    if dup:
        raise ConfigError(f"roles named twice in {text!r}: {dup}")
    return roles


__all__ = ["ALL_ROLES", "ROLES", "RoleFactory", "make", "parse_roles"]
