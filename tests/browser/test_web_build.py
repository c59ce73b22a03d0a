"""The web app the edge serves (edge/web/, committed so that `pip install`
needs no node) is exactly what its sources build to: `npm run build` of
clients/web, run on a copy of the sources in another directory, gives
byte-identical files. Protects against an edit of clients/web or of the SDK
(clients/js/src, bundled into app.js) committed without rebuilding, a
hand-edited edge/web/app.js, and a build whose output depends on where the
checkout lives (CI builds in another folder)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.services.common import require_service

REPO = Path(__file__).resolve().parents[2]
WEB_SRC = REPO / "clients" / "web"
SDK_SRC = REPO / "clients" / "js" / "src"
SERVED = REPO / "edge" / "web"
BUILT = ("index.html", "app.js", "app.css", "sw.js")


def fresh_build(tmp: Path) -> Path:
    """`npm run build` of a copy of clients/web + clients/js/src laid out as in the repo; returns its edge/web."""
    if shutil.which("npm") is None:
        require_service("npm", "npm is not on PATH", "run scripts/test (it installs node and npm)")
    if not (WEB_SRC / "node_modules" / "esbuild").exists():
        require_service("esbuild", "clients/web/node_modules is missing", "run scripts/test (npm ci in clients/web)")
    web = tmp / "clients" / "web"
    shutil.copytree(WEB_SRC, web, ignore=shutil.ignore_patterns("node_modules"))
    (web / "node_modules").symlink_to(WEB_SRC / "node_modules")
    shutil.copytree(SDK_SRC, tmp / "clients" / "js" / "src")
    out = tmp / "edge" / "web"
    out.mkdir(parents=True)
    done = subprocess.run(["npm", "run", "--silent", "build"], cwd=web, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, env={**os.environ, "NO_COLOR": "1"})
    assert done.returncode == 0, f"npm run build failed:\n{done.stdout}\n{done.stderr}"
    return out


def test_served_app_equals_a_fresh_build(tmp_path):
    out = fresh_build(tmp_path)
    for name in BUILT:
        built, served = out / name, SERVED / name
        assert built.exists(), f"the build made no {name}"
        assert served.exists(), f"edge/web/{name} is not committed"
        assert served.read_bytes() == built.read_bytes(), (
            f"edge/web/{name} differs from a fresh build of clients/web: run `npm run build` in clients/web "
            f"and commit edge/web/")
    # Nothing stale besides: every file the edge serves comes from the build
    # (a favicon or icon the build copies is fine; a leftover bundle is not).
    extra = sorted(p.name for p in SERVED.iterdir() if p.is_file() and not (out / p.name).exists())
    assert not extra, f"edge/web has files the build does not make: {extra}"


def test_build_is_reproducible(tmp_path):
    """Two builds in two directories give the same bytes (no timestamps, no absolute paths)."""
    a, b = fresh_build(tmp_path / "a"), fresh_build(tmp_path / "b")
    for name in BUILT:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
