"""Fixtures of the browser tests: the node + Chromium toolchain and a real
`switchboard up` (subprocess, free loopback port, its own data dir).

The fabric is shared by every spec of test_browser.py: specs use their own random
user names, so they do not see each other's conversations. The edge-kill
spec leaves it healthy (it waits until messages flow again).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from sbctl.embedded import free_port
from tests.services.common import die_with_parent, log_tail, require_service

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CHROMIUM = os.environ.get("SB_CHROMIUM", "/usr/bin/chromium")
PLAYWRIGHT_CLI = HERE / "node_modules" / "@playwright" / "test" / "cli.js"
# Failure traces and screenshots, one directory per spec (gitignored).
RESULTS = HERE / "test-results"
URL_LINE = re.compile(r"Switchboard is up: (wss?)://(\S+?)/ws")
# `up` starts nats-server and three Python children: 3-10 s on a busy 2-core box.
UP_TIMEOUT_SEC = 90.0


@dataclass(frozen=True)
class Tools:
    node: str
    chromium: str


@dataclass(frozen=True)
class Fabric:
    base_url: str  # http://127.0.0.1:PORT
    data: Path  # --data of `up` (`switchboard token USER --data DIR` mints tokens)
    pid: int  # the `up` process; its edge child is `python -m sbctl edge ...`
    log: Path

    def env(self) -> dict[str, str]:
        """What a Playwright spec reads (tests/browser/lib.mjs)."""
        return {"SB_BASE_URL": self.base_url, "SB_DATA": str(self.data), "SB_UP_PID": str(self.pid),
                "SB_PYTHON": sys.executable, "SB_REPO": str(REPO)}


@pytest.fixture(scope="session")
def browser_tools() -> Tools:
    """node, the npm packages of tests/browser and Chromium, or skip/fail (CI=true)."""
    how = "run scripts/test (it installs chromium, node and the npm packages of tests/browser)"
    node = shutil.which("node")
    if node is None:
        require_service("node", "node is not on PATH", how)
    if not PLAYWRIGHT_CLI.exists():
        require_service("playwright", f"{PLAYWRIGHT_CLI.relative_to(REPO)} is missing (npm ci not run)", how)
    if not os.access(CHROMIUM, os.X_OK):
        require_service("chromium", f"{CHROMIUM} is missing", how)
    return Tools(node=node, chromium=CHROMIUM)


def start_up(data: Path, log: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    """`switchboard up` on a free loopback port; returns the process and http://host:port.

    Called from the main thread: PR_SET_PDEATHSIG ties `up` to pytest, and
    `up` ties its own children to itself, so a killed pytest leaves nothing.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env["PYTHONUNBUFFERED"] = "1"
    port = free_port()
    fh = open(log, "wb")
    p = subprocess.Popen([sys.executable, "-m", "sbctl", "up", "--host", "127.0.0.1", "--port", str(port),
                          "--data", str(data), *extra],
                         cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                         preexec_fn=die_with_parent)
    fh.close()
    deadline = time.monotonic() + UP_TIMEOUT_SEC
    while time.monotonic() < deadline:
        m = URL_LINE.search(log.read_text(errors="replace"))
        if m:
            return p, f"{'https' if m.group(1) == 'wss' else 'http'}://{m.group(2)}"
        if p.poll() is not None:
            raise AssertionError(f"switchboard up exited with {p.returncode}: {log_tail(log, 3000)}")
        time.sleep(0.1)
    stop_up(p)
    raise AssertionError(f"switchboard up did not print its URL within {UP_TIMEOUT_SEC}s: {log_tail(log, 3000)}")


def stop_up(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


# Module scope: stopped as soon as test_browser.py is done, so an idle fabric
# does not run beside the rest of the suite.
@pytest.fixture(scope="module")
def fabric(tmp_path_factory, browser_tools) -> Fabric:
    tmp = tmp_path_factory.mktemp("browser-fabric")
    p, base = start_up(tmp / "data", tmp / "up.log")
    try:
        yield Fabric(base_url=base, data=tmp / "data", pid=p.pid, log=tmp / "up.log")
    finally:
        stop_up(p)


@pytest.fixture(scope="module")
def fabric_nodev(tmp_path_factory, browser_tools) -> Fabric:
    """`switchboard up --no-dev-signin`: what any deployment off loopback looks like to the page."""
    tmp = tmp_path_factory.mktemp("browser-fabric-nodev")
    p, base = start_up(tmp / "data", tmp / "up.log", "--no-dev-signin")
    try:
        yield Fabric(base_url=base, data=tmp / "data", pid=p.pid, log=tmp / "up.log")
    finally:
        stop_up(p)


def run_playwright(tools: Tools, fabric: Fabric, spec: Path, *, timeout: float, extra_env: dict | None = None
                   ) -> subprocess.CompletedProcess:
    """One spec file in one `playwright test` run; traces of failures in test-results/<spec>/."""
    name = spec.name.removesuffix(".spec.mjs")
    env = {**os.environ, **fabric.env(), "SB_CHROMIUM": tools.chromium, "SB_PW_OUT": str(RESULTS / name),
           "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1", "FORCE_COLOR": "0", **(extra_env or {})}
    return subprocess.run([tools.node, str(PLAYWRIGHT_CLI), "test", "--config", str(HERE / "playwright.config.mjs"),
                           str(spec.relative_to(HERE))],
                          cwd=HERE, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)
