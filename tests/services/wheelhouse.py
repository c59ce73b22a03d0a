"""Wheels of the client distribution's dependencies, for installs without a network.

:func:`build_wheel` builds a wheel of one of the repository's distributions
(the server's, the client's) offline, from a copy of its files.

tests/e2e/test_client_distribution.py installs the ``switchboard-client``
wheel alone into a fresh virtualenv with ``pip install --no-index
--find-links``: pip resolves its dependencies (websockets, msgspec, as
clients/python/pyproject.toml declares them) from this directory, the way an
application's install resolves them from a package index. The wheels are the
versions installed in the test virtualenv, downloaded once with ``pip
download`` into ``~/.cache/switchboard/wheels`` and re-used afterwards.

CLI (the test command warms the cache with it)::

    python -m tests.services.wheelhouse fetch
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

from tests.services.cassandra import cache_root

REPO = Path(__file__).resolve().parents[2]
CLIENT_DIR = REPO / "clients" / "python"
HOW_TO_ENABLE = "python -m tests.services.wheelhouse fetch (pip download, once; scripts/test runs it)"
# pip download: a few megabytes.
FETCH_TIMEOUT = 300.0


def wheel_dir() -> Path:
    return cache_root() / "wheels"


def requirements() -> list[str]:
    """The client distribution's dependencies, pinned to the versions
    installed here (the ones the rest of the suite runs with)."""
    deps = tomllib.loads((CLIENT_DIR / "pyproject.toml").read_text())["project"]["dependencies"]
    names = [re.match(r"[A-Za-z0-9_.-]+", d)[0] for d in deps]
    return [f"{n}=={version(n)}" for n in names]


def _wheel_prefix(requirement: str) -> str:
    name, ver = requirement.split("==")
    return f"{re.sub(r'[-_.]+', '_', name).lower()}-{ver}-"  # a wheel file's name (PEP 427)


def missing() -> list[str]:
    """Requirements without a wheel in :func:`wheel_dir`."""
    have = [p.name.lower() for p in wheel_dir().glob("*.whl")] if wheel_dir().is_dir() else []
    return [r for r in requirements() if not any(h.startswith(_wheel_prefix(r)) for h in have)]


def fetch() -> Path:
    """Download the missing wheels (binary only, no dependencies of theirs:
    websockets and msgspec have none); return the directory."""
    need = missing()
    if need:
        wheel_dir().mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--no-deps",
                        "-d", str(wheel_dir()), *need], check=True, timeout=FETCH_TIMEOUT, stdin=subprocess.DEVNULL)
        if still := missing():
            raise RuntimeError(f"pip download did not bring wheels of {still}")
    return wheel_dir()


def build_wheel(project: Path, entries: tuple[str, ...], tmp: Path) -> Path:
    """A wheel of the distribution whose pyproject.toml is in ``project``,
    built from a copy of ``entries`` (its packages, pyproject.toml, README):
    the build must not leave build/ or egg-info in the shared checkout. No
    network and no build isolation: setuptools comes from this virtualenv."""
    src = tmp / f"src-{project.name}"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "node_modules", "*.egg-info", "build")
    for entry in entries:
        if (project / entry).is_dir():
            shutil.copytree(project / entry, src / entry, ignore=ignore)
        else:
            shutil.copy2(project / entry, src / entry)
    dist = tmp / f"dist-{project.name}"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(dist), str(src)], check=True, cwd=tmp, timeout=240, stdin=subprocess.DEVNULL)
    (wheel,) = dist.glob("*.whl")
    return wheel


def main() -> int:
    if sys.argv[1:] != ["fetch"]:
        print("usage: python -m tests.services.wheelhouse fetch", file=sys.stderr)
        return 2
    print(f"wheels of {', '.join(requirements())} in {fetch()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
