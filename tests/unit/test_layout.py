"""The package layout is the architecture: who may import whom.

- ``switchboard`` is shared code (ids, frames, config, bus, backends, the
  SDK) and imports no service and not the CLI package;
- each service (``edge``, ``sequencer``, ``archiver``, ``pusher``,
  ``presence``) imports only ``switchboard`` and itself: services talk over
  NATS, never through each other's code;
- ``sbctl`` (CLI, role wiring, benchmarks, process supervision) is the only
  package that imports services.

An AST walk over every module (imports inside functions included), so an
arrow added anywhere fails here with the file and line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = "switchboard"
SERVICES = ("edge", "sequencer", "archiver", "pusher", "presence")
CLI = "sbctl"
PACKAGES = (SHARED, *SERVICES, CLI)

# What each package may import among the project's packages (besides itself).
ALLOWED: dict[str, set[str]] = {
    SHARED: set(),
    **{s: {SHARED} for s in SERVICES},
    CLI: {SHARED, *SERVICES},
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
        for path in sorted((REPO / pkg).rglob("*.py")):
            for line, module in imports_of(path):
                top = module.split(".")[0]
                if top in PACKAGES and top != pkg:
                    out.append((pkg, top, f"{path.relative_to(REPO)}:{line}"))
    return out


def test_every_package_exists():
    # Protects the test itself: a renamed package would make the walk vacuous.
    for pkg in PACKAGES:
        assert (REPO / pkg / "__init__.py").is_file(), pkg


@pytest.mark.parametrize("pkg", PACKAGES)
def test_imports_follow_the_layout(pkg):
    bad = [f"{where}: {src} -> {dst}" for src, dst, where in arrows()
           if src == pkg and dst not in ALLOWED[src]]
    assert not bad, "imports against the layout (see this module's docstring):\n" + "\n".join(bad)


def test_walk_sees_cross_package_imports():
    # The walk must find the CLI's imports of services, or it finds nothing.
    assert any(src == CLI and dst in SERVICES for src, dst, _ in arrows())
