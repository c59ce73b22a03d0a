"""The package layout is the architecture: who may import whom.

- ``switchboard`` is shared code (ids, frames, config, bus, backends, the
  SDK) and imports no service and not the CLI package;
- each service (``edge``, ``sequencer``, ``archiver``, ``pusher``,
  ``presence``) imports only ``switchboard`` and itself: services talk over
  NATS, never through each other's code;
- ``sbctl`` (CLI, role wiring, benchmarks, process supervision) is the only
  package that imports services;
- ``switchboard_client`` (clients/python: the SDK and the wire contract, a
  distribution of its own) is the bottom layer: any package may import it,
  and it imports nothing of the project and no library but websockets and
  msgspec, so an application that installs it gets nothing of the server.

An AST walk over every module (imports inside functions included), so an
arrow added anywhere fails here with the file and line.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLIENT = "switchboard_client"
SHARED = "switchboard"
SERVICES = ("edge", "sequencer", "archiver", "pusher", "presence")
CLI = "sbctl"
PACKAGES = (CLIENT, SHARED, *SERVICES, CLI)
# Where each package's directory is (the client distribution has its own root).
ROOTS = {p: REPO / p for p in PACKAGES} | {CLIENT: REPO / "clients" / "python" / CLIENT}
# The client distribution's dependencies: all it may import besides the
# standard library and itself.
CLIENT_LIBRARIES = {"websockets", "msgspec"}

# What each package may import among the project's packages (besides itself).
ALLOWED: dict[str, set[str]] = {
    CLIENT: set(),
    SHARED: {CLIENT},
    **{s: {SHARED, CLIENT} for s in SERVICES},
    CLI: {CLIENT, SHARED, *SERVICES},
}


def imports_of(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def arrows() -> list[tuple[str, str, str]]:
    """(importing package, imported package, "file:line") for every cross-package import."""
    out = []
    for pkg in PACKAGES:
        for path in sorted(ROOTS[pkg].rglob("*.py")):
            for line, module in imports_of(path):
                top = module.split(".")[0]
                if top in PACKAGES and top != pkg:
                    out.append((pkg, top, f"{path.relative_to(REPO)}:{line}"))
    return out


def test_every_package_exists():
    # Protects the test itself: a renamed package would make the walk vacuous.
    for pkg in PACKAGES:
        assert (ROOTS[pkg] / "__init__.py").is_file(), pkg


@pytest.mark.parametrize("pkg", PACKAGES)
def test_imports_follow_the_layout(pkg):
    bad = [f"{where}: {src} -> {dst}" for src, dst, where in arrows()
           if src == pkg and dst not in ALLOWED[src]]
    assert not bad, "imports against the layout (see this module's docstring):\n" + "\n".join(bad)


def test_walk_sees_cross_package_imports():
    # The walk must find the CLI's imports of services, or it finds nothing.
    assert any(src == CLI and dst in SERVICES for src, dst, _ in arrows())


def test_client_imports_only_stdlib_websockets_msgspec():
    """Every import of switchboard_client (inside functions too): the standard
    library, websockets, msgspec or itself. Anything else would be a
    dependency the client distribution does not declare (an app's import
    fails), or server code pulled into it."""
    bad = []
    for path in sorted(ROOTS[CLIENT].rglob("*.py")):
        for line, module in imports_of(path):
            top = module.split(".")[0]
            if top not in sys.stdlib_module_names and top not in CLIENT_LIBRARIES | {CLIENT}:
                bad.append(f"{path.relative_to(REPO)}:{line}: {module}")
    assert not bad, "switchboard_client imports beyond the stdlib, websockets and msgspec:\n" + "\n".join(bad)


def test_client_distribution_declares_exactly_its_libraries():
    """clients/python/pyproject.toml depends on websockets and msgspec and on
    nothing else (a dependency added there reaches every app), and the
    server's pyproject.toml pins switchboard-client to that same version: the
    server imports the wire contract from it, so the two are released together."""
    client = tomllib.loads((REPO / "clients" / "python" / "pyproject.toml").read_text())["project"]
    names = {re.match(r"[A-Za-z0-9_.-]+", d)[0].lower() for d in client["dependencies"]}
    assert names == CLIENT_LIBRARIES
    server = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = [d for d in server["dependencies"] if d.startswith("switchboard-client")]
    assert pins == [f"switchboard-client=={client['version']}"]


def test_walk_sees_the_client_package():
    # The client walk must see the SDK's own imports (websockets), or it checks nothing.
    found = {m.split(".")[0] for p in ROOTS[CLIENT].rglob("*.py") for _, m in imports_of(p)}
    assert {"websockets", "msgspec", CLIENT} <= found
