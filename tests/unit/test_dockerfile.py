"""deploy/Dockerfile copies every package the project installs.

The image is never built here (no container runtime), so nothing else would
notice: after the layout moved the CLI to sbctl/ and the tracker to
presence/, the image built a `switchboard` entry point whose package was
missing from it.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_image_copies_every_package():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = set(re.findall(r"^COPY (\w+) \./\1\s*$", (REPO / "deploy" / "Dockerfile").read_text(), re.M))
    assert packages, "no packages found in pyproject.toml"
    assert packages <= copied, f"deploy/Dockerfile does not COPY {sorted(packages - copied)}"


def test_the_image_installs_the_client_distribution():
    """The server depends on switchboard-client, the SDK's distribution in
    clients/python, which no package index serves: an image that does not
    copy it and install it with the server fails at its pip install."""
    text = (REPO / "deploy" / "Dockerfile").read_text()
    assert re.search(r"^COPY clients/python \./clients/python\s*$", text, re.M)
    assert re.search(r"^RUN pip install \./clients/python \S", text, re.M)


def test_every_extra_the_image_installs_exists():
    """pip only warns about an extra a project does not define and installs
    the rest: the image once asked for a `push` extra that never existed,
    and a renamed or dropped extra would leave the image without its
    libraries (a Cassandra store failing at the first role start)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    defined = set(project["project"]["optional-dependencies"])
    text = (REPO / "deploy" / "Dockerfile").read_text()
    asked = {e.strip() for run in re.findall(r"^RUN pip install .*$", text, re.M)
             for group in re.findall(r"\.\[([^\]]*)\]", run) for e in group.split(",")}
    assert asked, "no extras found in deploy/Dockerfile's pip install"
    assert asked <= defined, f"deploy/Dockerfile installs extras pyproject.toml lacks: {sorted(asked - defined)}"
