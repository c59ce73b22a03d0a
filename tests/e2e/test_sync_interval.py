"""JetStream's flush policy ([nats] sync_interval) reaches the nats-server
that switchboard starts, as the server itself reports it on /varz.

- the embedded server (sbctl/embedded.py) runs with each value: /varz shows
  the interval, and ``sync_always`` only for "always" (a config text the
  server misread, e.g. an unquoted ``2m`` = 2,000,000 s, fails here);
- ``switchboard up`` with ``SWITCHBOARD_NATS__SYNC_INTERVAL=always`` starts
  its nats-server with fsync per write, and a message still goes from one
  client to another through it;
- ``up`` with a value nats-server would misread stops before starting
  anything, with one line.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import urllib.request

import psutil
import pytest

from sbctl.embedded import EmbeddedNats, free_port
from switchboard_client import Client
from tests.e2e.helpers import PYTHON, REPO, STEP, Proc, procs, unique
from tests.e2e.test_cli_up import URL_LINE, clean_env, cli_token, nats_children, stop_up


def varz_jetstream(monitor_url: str) -> dict:
    with urllib.request.urlopen(f"{monitor_url}/varz", timeout=10) as r:
        return json.loads(r.read())["jetstream"]["config"]


@pytest.mark.parametrize("value, interval_ns, always", [
    ("2m", 120 * 10**9, False),
    ("100ms", 100 * 10**6, False),
    # nats-server keeps its default interval beside the flag: fsync per write wins.
    ("always", 120 * 10**9, True),
])
async def test_embedded_server_reports_the_interval_it_was_given(tmp_path, value: str, interval_ns: int,
                                                                  always: bool) -> None:
    with EmbeddedNats(store_dir=str(tmp_path / "nats"), sync_interval=value) as srv:
        assert srv.monitor_url is not None
        cfg = await asyncio.to_thread(varz_jetstream, srv.monitor_url)
    assert cfg["sync_interval"] == interval_ns
    assert cfg.get("sync_always", False) is always


def monitor_url_of(nats: psutil.Process) -> str:
    argv = nats.cmdline()
    return f"http://127.0.0.1:{argv[argv.index('-m') + 1]}"


async def test_up_with_always_fsyncs_each_write_and_delivers(tmp_path) -> None:
    data = str(tmp_path / "data")
    env = {**clean_env(), "SWITCHBOARD_NATS__SYNC_INTERVAL": "always"}
    alice, bob = unique("alice"), unique("bob")
    with procs() as made:
        p = Proc(["up", "--port", str(free_port()), "--data", data], env=env, log=tmp_path / "up.log")
        made.append(p)
        out = await p.wait_output("Switchboard is up", timeout=60)
        url = URL_LINE.search(out).group(1)
        [nats] = nats_children(p.pid)
        cfg = await asyncio.to_thread(varz_jetstream, monitor_url_of(nats))
        assert cfg.get("sync_always") is True, cfg
        a = await Client(url=url, token=cli_token(alice, data)).connect(STEP)
        b = await Client(url=url, token=cli_token(bob, data)).connect(STEP)
        sent = await a.send(to=bob, body="on disk")
        m = await b.next_message(STEP)
        assert (m.seq, m.body, m.from_) == (sent.seq, "on disk", alice)
        await a.close()
        await b.close()
        await stop_up(p)


def test_up_refuses_a_bad_sync_interval_in_one_line(tmp_path) -> None:
    env = {**clean_env(), "SWITCHBOARD_NATS__SYNC_INTERVAL": "2"}
    r = subprocess.run([PYTHON, "-m", "sbctl", "up", "--data", str(tmp_path / "data")], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("switchboard up: env SWITCHBOARD_NATS__SYNC_INTERVAL")
    assert not (tmp_path / "data" / "nats").exists()  # nothing was started
