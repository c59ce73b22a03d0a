"""The web app's files served by the edge (edge/static.py), over raw HTTP.

Raw sockets, not an HTTP library: a library would normalise ``/../`` or
percent-encoding away before the request left, and the traversal cases must
reach the edge as written. The last test builds the server's wheel (and the
client SDK's, which it depends on), installs them (not editable) into a fresh
venv and serves the app from there: before the assets were package data, a
wheel install answered ``/`` with HTTP 500.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from edge.static import WEB_DIR, StaticFiles
from tests.e2e.helpers import PYTHON, REPO, STEP, settings_env, until
from tests.services.wheelhouse import build_wheel

pytestmark = pytest.mark.timeout(300)


async def http(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``raw`` as is; (status, headers lower-cased, body). The edge
    closes the connection after a plain HTTP answer, so read to EOF."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), STEP)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if not raw.startswith(b"HEAD ") and lines[0].split()[1] != "304":
        assert int(headers.get("content-length", len(body))) == len(body)
    return int(lines[0].split()[1]), headers, body


def get(path: str, *extra: str, method: str = "GET") -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n" + "".join(f"{h}\r\n" for h in extra) + "\r\n").encode()


@pytest.fixture
async def dep(deploy):
    return await deploy(roles=("edge",))


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A web directory with one file per served type and the traps a
    traversal would need: a secret beside it, a symlink out, a subdirectory."""
    root = tmp_path / "site" / "web"
    root.mkdir(parents=True)
    for name in ("index.html", "app.js", "app.css", "icon.svg", "logo.png", "favicon.ico", "data.json",
                 "app.webmanifest", "server.py", ".hidden.js", "no-extension"):
        (root / name).write_bytes(f"content of {name}".encode())
    (root / "sub").mkdir()
    (root / "sub" / "x.js").write_bytes(b"nested")
    (tmp_path / "site" / "secret.js").write_bytes(b"SECRET")
    (root / "link.js").symlink_to(tmp_path / "site" / "secret.js")
    return root


async def test_root_serves_the_packaged_index(dep):
    """GET / is edge/web/index.html of the package, with or without a
    token in the query (links from a host app carry ?token=JWT)."""
    for path in ("/", "/?token=abc.def.ghi", "/index.html"):
        before = (WEB_DIR / "index.html").read_bytes()
        status, headers, body = await http(dep.settings.port, get(path))
        # the file as it was just before or after (the app may be rebuilt meanwhile)
        assert status == 200 and body in (before, (WEB_DIR / "index.html").read_bytes()), path
        assert headers["content-type"] == "text/html; charset=utf-8"
        assert headers["cache-control"] == "no-cache"
        assert headers["referrer-policy"] == "no-referrer"  # the token in the URL must not leak in a Referer


# (path, status, body or None, content type or None)
SERVED = [
    ("/", 200, b"content of index.html", "text/html; charset=utf-8"),
    ("/?token=x", 200, b"content of index.html", "text/html; charset=utf-8"),
    ("/app.js", 200, b"content of app.js", "text/javascript; charset=utf-8"),
    ("/app.js?v=3", 200, b"content of app.js", "text/javascript; charset=utf-8"),
    ("/app.css", 200, b"content of app.css", "text/css; charset=utf-8"),
    ("/icon.svg", 200, b"content of icon.svg", "image/svg+xml"),
    ("/logo.png", 200, b"content of logo.png", "image/png"),
    ("/favicon.ico", 200, b"content of favicon.ico", "image/x-icon"),
    ("/data.json", 200, b"content of data.json", "application/json"),
    ("/app.webmanifest", 200, b"content of app.webmanifest", "application/manifest+json"),
    # Not served: nothing outside the directory, nothing but exact names of
    # regular files with a known type, no listing.
    ("/missing.js", 404, None, None),
    ("/server.py", 404, None, None),  # unknown type
    ("/no-extension", 404, None, None),
    ("/.hidden.js", 404, None, None),  # dot files
    ("/sub", 404, None, None),  # a directory: no listing
    ("/sub/", 404, None, None),
    ("/sub/x.js", 404, None, None),  # one segment only
    ("/link.js", 404, None, None),  # a symlink out of the directory
    ("/../secret.js", 404, None, None),
    ("/..%2fsecret.js", 404, None, None),
    ("/%2e%2e/secret.js", 404, None, None),
    ("/web/../secret.js", 404, None, None),
    ("//etc/passwd", 404, None, None),
    ("/app.js%00.html", 404, None, None),
    ("/..", 404, None, None),
]


@pytest.mark.parametrize("path,status,body,ctype", SERVED, ids=[p for p, *_ in SERVED])
async def test_static_files(dep, site, path, status, body, ctype):
    dep.component("edge").static = StaticFiles(site)  # its public attribute: serve the test site
    got_status, headers, got_body = await http(dep.settings.port, get(path))
    assert got_status == status
    if status == 200:
        assert got_body == body
        assert headers["content-type"] == ctype
        assert headers["cache-control"] == "no-cache"
        assert headers["x-content-type-options"] == "nosniff"
    else:
        assert b"SECRET" not in got_body and b"nested" not in got_body


async def test_etag_revalidation_and_rebuilds(dep, site):
    """no-cache + ETag: an unchanged file answers 304 without a body, a
    rebuilt one (new content) is served at once."""
    dep.component("edge").static = StaticFiles(site)  # its public attribute: serve the test site
    port = dep.settings.port
    _, headers, _ = await http(port, get("/app.js"))
    etag = headers["etag"]
    status, _, body = await http(port, get("/app.js", f"If-None-Match: {etag}"))
    assert (status, body) == (304, b"")
    (site / "app.js").write_bytes(b"rebuilt, longer than before")
    status, headers, body = await http(port, get("/app.js", f"If-None-Match: {etag}"))
    assert (status, body) == (200, b"rebuilt, longer than before")
    assert headers["etag"] != etag


async def test_head_and_other_methods(dep, site):
    dep.component("edge").static = StaticFiles(site)  # its public attribute: serve the test site
    port = dep.settings.port
    status, headers, body = await http(port, get("/app.js", method="HEAD"))
    assert (status, body) == (200, b"")
    assert headers["content-length"] == str(len(b"content of app.js"))
    status, headers, _ = await http(port, get("/app.js", "Content-Length: 2", method="POST") + b"{}")
    assert status == 405 and "GET" in headers["allow"]


async def test_other_routes_unchanged(dep):
    port = dep.settings.port
    assert (await http(port, get("/healthz")))[:1] == (200,)
    status, headers, body = await http(port, get("/metrics"))
    assert status == 200 and b"# HELP" in body
    assert (await http(port, get("/nope")))[0] == 404


# ---------------------------------------------------------------- a real wheel install


def _build_wheels(tmp: Path) -> tuple[Path, Path]:
    """Wheels of the working tree: the server's and the one it depends on,
    the client SDK's (clients/python: the wire frames and error codes)."""
    server = build_wheel(REPO, ("switchboard", "edge", "sequencer", "archiver", "pusher", "presence", "sbctl",
                                "pyproject.toml", "README.md"), tmp)  # pyproject's packages
    client = build_wheel(REPO / "clients" / "python", ("switchboard_client", "pyproject.toml", "README.md"), tmp)
    return server, client


def _venv_with(wheels: tuple[Path, ...], tmp: Path) -> Path:
    """A fresh venv holding the wheels (not editable). Their dependencies
    come from this venv's site-packages through a .pth file, added only
    after the install, so pip never sees (or touches) the editable installs
    there; .pth files of that directory are not processed, so neither the
    editable finder nor the client's editable path entry is loaded."""
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    subprocess.run([PYTHON, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q",
                    *map(str, wheels)], check=True, cwd=tmp, timeout=240)
    (site_dir,) = (env_dir / "lib").glob("python3*/site-packages")
    deps = next(p for p in sys.path if p.endswith("site-packages") and Path(p, "msgspec").exists())
    (site_dir / "_switchboard_test_deps.pth").write_text(deps + "\n")
    return env_dir


async def test_wheel_install_serves_the_app(deploy, tmp_path):
    wheel, client_wheel = _build_wheels(tmp_path)
    zf = zipfile.ZipFile(wheel)
    names = set(zf.namelist())
    assets = sorted(p.name for p in WEB_DIR.iterdir() if p.is_file())
    assert {"index.html", "app.js"} <= set(assets)  # the built app (clients/web: npm run build)
    assert {f"edge/web/{a}" for a in assets} <= names, "the web app is not package data"
    assert "edge/demo.html" not in names
    # What the install must serve: the wheel's copies (the checkout may be rebuilt meanwhile).
    packed = {a: zf.read(f"edge/web/{a}") for a in assets}

    env_dir = _venv_with((wheel, client_wheel), tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for pkg in ("edge", "switchboard_client"):
        where = subprocess.run([str(env_dir / "bin" / "python"), "-c", f"import {pkg}; print({pkg}.__file__)"],
                               check=True, capture_output=True, text=True, cwd=tmp_path, env=env).stdout.strip()
        assert where.startswith(str(env_dir)), f"{pkg} imported from {where}, not from the wheel install"

    # The deployment's settings and admin step; its edge is the wheel's own
    # `switchboard` script (not this checkout's python -m sbctl), configured
    # the way the factory configures role processes.
    d = await deploy(roles=(), mode="processes")
    settings = d.settings
    env = settings_env(settings, base=env)
    log = tmp_path / "edge.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([str(env_dir / "bin" / "switchboard"), "edge"], cwd=tmp_path, env=env,
                                stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        await until(lambda: "Switchboard is up" in log.read_text(errors="replace") or proc.poll() is not None,
                    STEP * 3, "the wheel's edge to start")
        assert "Switchboard is up" in log.read_text(errors="replace"), log.read_text(errors="replace")[-3000:]
        status, headers, body = await http(settings.port, get("/"))
        assert (status, body) == (200, packed["index.html"])
        assert headers["content-type"] == "text/html; charset=utf-8"
        for name in assets:  # app.js, app.css, sw.js ...
            status, _, body = await http(settings.port, get(f"/{name}"))
            assert (status, body) == (200, packed[name]), name
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
