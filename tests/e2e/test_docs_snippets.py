"""Every ```python block of README.md and docs/sdk.md runs as written.

Each block is a complete program; it runs in its own Python process against
a live deployment (every role, in-process, on a nats-server of its own, so
the default subject prefix ``sb`` the examples use is this deployment's).
The blocks read what the docs say they read: ``SB_URL``, ``SB_TOKEN_ALICE``,
``SB_TOKEN_BOB`` and ``SB_NATS_URL``. A block fails the test if it exits
non-zero (an exception or a failed assert) or runs over its time.

A block fenced ```python no-run is skipped only if the text before it says
why (the word "because" in the preceding paragraph); prefer runnable ones.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import pytest

from sbctl.supervisor import ALL_ROLES
from tests.e2e.helpers import PYTHON, REPO

DOCS = ("README.md", "docs/sdk.md")
BLOCK = re.compile(r"^```python([^\n]*)\n(.*?)^```\s*$", re.S | re.M)
BLOCK_TIMEOUT = 60.0


def blocks(doc: str) -> list[tuple[str, int, str, str]]:
    """(doc, line, fence info, code) of every python block."""
    text = (REPO / doc).read_text()
    return [(doc, text.count("\n", 0, m.start()) + 1, m.group(1).strip(), m.group(2))
            for m in BLOCK.finditer(text)]


ALL = [b for doc in DOCS for b in blocks(doc)]


def test_the_docs_have_blocks():
    """The extraction itself: a regex that matched nothing would pass vacuously."""
    assert {d for d, *_ in ALL} == set(DOCS)
    assert sum(1 for d, *_ in ALL if d == "docs/sdk.md") >= 6


@pytest.fixture(scope="module")
async def live(tmp_path_factory, make_nats_module, deploy_module):
    """One deployment for every block: default prefixes, all roles."""
    tmp = tmp_path_factory.mktemp("docs")
    d = await deploy_module(ALL_ROLES, nats_url=make_nats_module.url, subject_prefix="sb", stream_prefix="")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SB_", "SWITCHBOARD_"))}
    env.update(SB_URL=d.url, SB_NATS_URL=d.settings.nats_url,
               SB_TOKEN_ALICE=d.token("alice"), SB_TOKEN_BOB=d.token("bob"),
               PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    return env, tmp


@pytest.fixture(scope="module")
def make_nats_module(tmp_path_factory):
    from sbctl.embedded import EmbeddedNats

    server = EmbeddedNats(store_dir=str(tmp_path_factory.mktemp("docs-nats")), name="sb-docs").start()
    yield server
    server.stop()


@pytest.mark.parametrize("doc,line,info,code", ALL, ids=[f"{d}:{line}" for d, line, *_ in ALL])
async def test_block_runs(live, doc, line, info, code):
    env, tmp = live
    if "no-run" in info.split():
        before = (REPO / doc).read_text().split("\n")[:line - 1]
        paragraph = "\n".join(before[-8:])
        assert "because" in paragraph, f"{doc}:{line} is marked no-run without saying why"
        pytest.skip(f"{doc}:{line} marked no-run")
    work = tmp / f"{Path(doc).stem}-{line}"
    work.mkdir()
    (work / "snippet.py").write_text(code)
    proc = await asyncio.create_subprocess_exec(PYTHON, "snippet.py", cwd=work, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), BLOCK_TIMEOUT)
    except asyncio.TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
        pytest.fail(f"{doc}:{line} ran over {BLOCK_TIMEOUT:.0f} s:\n{out.decode(errors='replace')[-3000:]}")
    assert proc.returncode == 0, f"{doc}:{line} failed:\n{out.decode(errors='replace')[-3000:]}"
