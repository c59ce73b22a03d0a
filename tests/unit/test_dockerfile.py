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
    copy it, build its wheel and install it with the server fails at its pip
    install (or, worse, takes an index's package of that name)."""
    text = (REPO / "deploy" / "Dockerfile").read_text()
    assert re.search(r"^COPY clients/python \./clients/python\s*$", text, re.M)
    assert re.search(r"^RUN pip wheel --no-deps --wheel-dir /wheels \./clients/python \.\s*$", text, re.M)
    assert re.search(r"^RUN pip install /wheels/switchboard_client-\*\.whl ", text, re.M)


def test_the_image_installs_wheels_not_the_source_tree():
    """A source-tree or editable install can run code that the wheel leaves
    out: before the web app was package data, the checkout served / and a
    wheel install answered HTTP 500. The image installs only the wheels built
    in its first stage (tests/e2e/test_web_assets.py installs the same wheels
    and serves /), and the service stage copies no source."""
    text = (REPO / "deploy" / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    assert len(stages) == 2 and stages[0].split()[2] == "wheels", "a wheel stage, then the service stage"
    service = stages[1]
    installs = re.findall(r"^RUN pip install (.*)$", service, re.M)
    assert installs, "the service stage installs nothing"
    for line in installs:
        assert not re.search(r"(^|\s)(-e|--editable)\s", line), line
        line = re.sub(r'"\$\(ls (\S+)\)(\[[^\]]*\])?"', r"\1\2", line)  # "$(ls W.whl)[extras]": W.whl[extras]
        args = [a for a in line.rstrip("\\").split("&&")[0].split() if not a.startswith("-")]
        assert all(".whl" in a for a in args), f"installs something other than a wheel: {line}"
    assert re.findall(r"^COPY (.*)$", service, re.M) == ["--from=wheels /wheels /wheels"]


def test_every_extra_the_image_installs_exists():
    """pip only warns about an extra a project does not define and installs
    the rest: the image once asked for a `push` extra that never existed,
    and a renamed or dropped extra would leave the image without its
    libraries (a Cassandra store failing at the first role start)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    defined = set(project["project"]["optional-dependencies"])
    text = (REPO / "deploy" / "Dockerfile").read_text()
    asked = {e.strip() for run in re.findall(r"^RUN pip install .*$", text, re.M)
             for group in re.findall(r"\.whl\)?\[([^\]]*)\]", run) for e in group.split(",")}
    assert asked, "no extras found in deploy/Dockerfile's pip install"
    assert asked <= defined, f"deploy/Dockerfile installs extras pyproject.toml lacks: {sorted(asked - defined)}"
