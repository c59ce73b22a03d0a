"""The TypeScript SDK (clients/js, npm package switchboard-client) against a
real fabric: edge + sequencer + presence + archiver (history) in-process on a
real nats-server, tokens from the deployment's token helper.

- node's test runner drives ``clients/js/test/live/``: two clients chat
  (typing, receipts, presence), groups and conv.list, a dropped socket catches
  up in order, resume from a stored cursor, resync filled from history,
  history paging, a real "token expired" close bridged by the token function,
  a socket renewed with a fresh token before exp, a refused token;
- ``limits.test.mjs`` on a deployment with tight limits: a real 4010, a real
  HTTP 503 at the upgrade;
- the README's examples, extracted from the README and run as written;
- the built bundle in headless Chromium (browser WebSocket, IndexedDB,
  localStorage).

Needs node and the package's node_modules: the fixture runs ``npm ci`` when
node_modules is missing or was installed from another package-lock.json (the
stamp scripts/test also writes), then ``npm run build``. Without node (or
when npm ci fails, or without Chromium for the browser test) a test is
skipped, and with CI=true it fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import http.server
import json
import os
import shutil
import signal
import subprocess
import threading
import urllib.parse

import pytest

from tests.e2e.helpers import REPO, run_process, unique
from tests.services.common import require_service

PKG = REPO / "clients" / "js"
# The stamp scripts/test writes too (same file, same hash), so an install by
# either is recognised by the other.
STAMP = PKG / "node_modules" / ".switchboard-npm-stamp"
HOW = "install node >= 20 and run `npm ci` in clients/js (scripts/test does both)"


def _lock_hash(node: str) -> str:
    """sha256 of package-lock.json + package.json + `node --version`, as scripts/test computes it."""
    version = subprocess.run([node, "--version"], capture_output=True, check=True).stdout
    return hashlib.sha256((PKG / "package-lock.json").read_bytes() + (PKG / "package.json").read_bytes()
                          + version).hexdigest()


@pytest.fixture(scope="module")
def built_sdk() -> str:
    """node, the package's node_modules (npm ci when missing or stale), and a
    fresh build (dist/): returns the node executable."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        require_service("node", "node/npm are not on PATH", HOW)
    want = _lock_hash(node)
    if not STAMP.exists() or STAMP.read_text().strip() != want:
        r = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=PKG, capture_output=True, text=True,
                           timeout=600)
        if r.returncode != 0:
            require_service("npm packages of clients/js", f"npm ci failed: {r.stderr[-1500:]}", HOW)
        STAMP.write_text(want + "\n")
    r = subprocess.run([npm, "run", "build"], cwd=PKG, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"npm run build failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return node


@pytest.fixture
async def dep(deploy):
    return await deploy(roles=("sequencer", "edge", "presence", "archiver"))


async def run_node(node: str, args: list[str], env: dict[str, str], timeout: float = 100.0) -> tuple[int, str]:
    """Run node in clients/js (killed within pytest's own timeout)."""
    return await run_process(node, *args, cwd=PKG, env={**os.environ, **env}, timeout=timeout)


def users_env(dep, names: list[str]) -> dict[str, str]:
    """Fresh users with tokens from the deployment's token helper; ``short``:
    a token of the same user that expires at once (the edge closes its socket
    with 4001 "token expired" about 6 s later: exp + the 5 s leeway);
    ``renew``: one that expires in 35 s (the SDK renews a token function's
    socket 30 s before exp)."""
    users = {}
    for name in names:
        user = unique(name)
        users[name] = {"user": user, "token": dep.token(user), "short": dep.token(user, ttl=1),
                       "renew": dep.token(user, ttl=35)}
    return {"SB_URL": dep.url, "SB_USERS": json.dumps(users)}


async def test_js_sdk_live(dep, built_sdk):
    """Every spec of clients/js/test/live/ passes against the real fabric
    (what each checks is said in the spec's name)."""
    env = users_env(dep, ["alice", "bob", "carol", "dave", "erin", "frank"])
    code, out = await run_node(built_sdk, ["--test", "--test-reporter=spec", "test/live/"], env)
    assert code == 0, out[-8000:]
    # Everything ran: only limits.test.mjs skips here (it needs its own deployment, below).
    assert "fail 0" in out and "skipped 2" in out, out[-8000:]


async def test_js_sdk_limits_replaced_and_admission(deploy, built_sdk):
    """The SDK against a real edge's limits (clients/js/test/live/limits.test.mjs):
    close 4010 (max_sockets_per_user = 1) leaves the older client closed with
    a `replaced` error, not reconnecting (it would close the newer one in
    turn); HTTP 503 at the upgrade (admit_per_sec = 2, six clients at once) is
    retried with backoff until every client is synced."""
    d = await deploy(max_sockets_per_user=1, admit_per_sec=2.0)
    env = {**users_env(d, ["alice", "bob", "u1", "u2", "u3", "u4", "u5", "u6"]), "SB_LIMITS": "1"}
    code, out = await run_node(built_sdk, ["--test", "--test-reporter=spec", "test/live/limits.test.mjs"], env)
    assert code == 0, out[-8000:]
    assert "pass 2" in out and "skipped 0" in out, out[-8000:]


async def test_readme_examples_run_as_written(dep, built_sdk):
    """The README's examples are the code blocks that start with
    ``// example: NAME.mjs``; each is written out unchanged and run with node
    against the fabric (they read SB_URL, SB_TOKEN, SB_PEER, SB_PEER_TOKEN) and
    must exit 0 printing its ``example ok`` line. Fails if the README has none."""
    users = json.loads(users_env(dep, ["alice", "bob"])["SB_USERS"])
    env = {"SB_URL": dep.url, "SB_TOKEN": users["alice"]["token"], "SB_PEER": users["bob"]["user"],
           "SB_PEER_TOKEN": users["bob"]["token"]}
    code, out = await run_node(built_sdk, ["test/live/readme-examples.mjs"], env)
    assert code == 0, out[-8000:]
    ran = [line for line in out.splitlines() if line.startswith("ran example ")]
    assert len(ran) >= 3, out[-4000:]


CHROMIUM = os.environ.get("SB_CHROMIUM", "/usr/bin/chromium")


async def test_js_sdk_bundle_in_chromium(dep, built_sdk, tmp_path):
    """The built bundle in headless Chromium (clients/js/test/browser/smoke.html):
    the browser's own WebSocket, IndexedDBStore and LocalStorageStore, and a
    resume from localStorage after a close, against the real fabric. The page
    reports through console lines ``SBTEST PASS`` / ``SBTEST FAIL why``."""
    if not os.access(CHROMIUM, os.X_OK):
        require_service("chromium", f"{CHROMIUM} is missing", "apt-get install chromium (scripts/test does)")
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(PKG / "test" / "browser" / "smoke.html", site / "index.html")
    shutil.copy(PKG / "dist" / "switchboard.js", site / "switchboard.js")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    alice, bob = unique("alice"), unique("bob")
    query = urllib.parse.urlencode({"url": dep.url, "token": dep.token(alice), "peer": bob,
                                    "peer_token": dep.token(bob)})
    page = f"http://127.0.0.1:{httpd.server_address[1]}/index.html?{query}"
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--enable-logging=stderr",
        "--v=0", f"--user-data-dir={tmp_path / 'profile'}", page,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, start_new_session=True)
    verdict, seen = None, []
    try:
        async with asyncio.timeout(90):
            while verdict is None:
                line = (await proc.stderr.readline()).decode(errors="replace")
                if not line:
                    break
                seen.append(line)
                if "SBTEST " in line:
                    verdict = line.split("SBTEST ", 1)[1].split('"', 1)[0]
    except TimeoutError:
        pass
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        httpd.shutdown()
    assert verdict == "PASS", f"page said {verdict!r}; chromium's last lines:\n{''.join(seen[-30:])}"
