"""The role registry (sbctl/roles.py) and the Role contract (switchboard/roles.py).

Every way of running a role goes through the registry: a role missing from
it, registered under another name than its own, or built from another
service's package would run the wrong code (or none) under ``switchboard
<role>``, ``run a+b`` and ``up --layout``.
"""

from __future__ import annotations

import pytest

from sbctl import roles as registry
from sbctl.cli import ROLE_FLAGS, build_parser
from sbctl.supervisor import DEFAULT_LAYOUT, parse_layout
from switchboard.errors import ConfigError
from switchboard.roles import Role, RoleContext

SERVICES = ("edge", "sequencer", "archiver", "presence", "pusher")


def test_registry_holds_every_service_once():
    assert sorted(registry.ROLES) == sorted(SERVICES)
    assert registry.ALL_ROLES == tuple(registry.ROLES)


def test_start_order_puts_the_sequencer_before_the_edge():
    # In one process the edge must find a sequencer answering when it takes
    # its first send; roles start in registry order and stop in reverse.
    order = registry.ALL_ROLES
    assert order.index("sequencer") < order.index("edge")


@pytest.mark.parametrize("name", SERVICES)
def test_factory_makes_a_fresh_role_of_its_own_service(name):
    role = registry.make(name)
    assert isinstance(role, Role)
    assert role.name == name
    # the adapter lives in the service's own package (<service>/role.py):
    # only sbctl imports services, and a service builds only itself
    assert type(role).__module__ == f"{name}.role"
    assert registry.make(name) is not role  # a new object each time: start() is called once per object
    assert role.metrics() is None  # nothing to show before start


def test_unknown_role_names_the_known_ones():
    with pytest.raises(ConfigError, match="unknown role 'web'; roles are sequencer, edge, archiver"):
        registry.make("web")


@pytest.mark.parametrize("text,roles", [
    ("archiver+presence+pusher", ("archiver", "presence", "pusher")),
    (" edge + sequencer ", ("edge", "sequencer")),
    ("pusher", ("pusher",)),
])
def test_parse_roles(text, roles):
    assert registry.parse_roles(text) == roles


@pytest.mark.parametrize("text,error", [
    ("archiver+web", r"unknown roles \['web'\]"),
    ("", r"unknown roles \[\]"),
    ("+", r"unknown roles \[\]"),
    ("edge+edge", r"roles named twice in 'edge\+edge': \['edge'\]"),
])
def test_parse_roles_refuses(text, error):
    with pytest.raises(ConfigError, match=error):
        registry.parse_roles(text)


def test_cli_and_layout_follow_the_registry():
    """A role added to the registry gets its subcommand and its flag line,
    and the default layout of `up` runs it."""
    assert set(ROLE_FLAGS) == set(registry.ROLES)
    parser = build_parser()
    for name in registry.ROLES:
        assert parser.parse_args([name]).cmd == name
    assert sorted(r for group in parse_layout(DEFAULT_LAYOUT) for r in group) == sorted(registry.ROLES)


def test_protocol_rejects_an_object_without_the_lifecycle():
    """isinstance(x, Role) checks the shape; an adapter that forgot stop()
    or metrics() is not a Role (the registry's test above relies on this)."""

    class NoStop:
        name = "x"

        async def start(self, ctx: RoleContext) -> None: ...

        def metrics(self):
            return None

    assert not isinstance(NoStop(), Role)
