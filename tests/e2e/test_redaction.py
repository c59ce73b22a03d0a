"""Credentials never show in what a running fabric prints or serves (issue 8).

A nats-server that wants a password (or a token) and ``switchboard`` role
processes given the credentials in their ``--nats`` URL: the password appears
in no output line (stdout, structlog and library logging at DEBUG, the
"is up" lines), not on the edge's ``/metrics``, and not in the command line
of the children ``up`` starts (readable by any local user in /proc).
"""

from __future__ import annotations

import asyncio
import secrets
import urllib.request

from sbctl.embedded import free_port
from switchboard.config import Settings
from switchboard_client import Client
from tests.e2e.helpers import STEP, Proc, admin_init, procs, unique
from tests.e2e.test_cli_up import ROLE_CHILDREN, clean_env, cli_token, role_children


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


async def test_password_in_nats_url_appears_nowhere(make_nats, tmp_path):
    """Protects item 6: `fabric up nats=nats://sequencer:pw@...` printed the
    password; the children of `up` also carried it in argv."""
    password = "pw" + secrets.token_hex(12)
    srv = make_nats(extra_args=["--user", "sbuser", "--pass", password])
    url = f"nats://sbuser:{password}@127.0.0.1:{srv.port}"
    port = free_port()
    data = str(tmp_path / "data")
    with procs() as made:
        p = Proc(["up", "--nats", url, "--port", str(port), "--data", data, "--log-level", "debug"],
                 env=clean_env(), log=tmp_path / "up.log")
        made.append(p)
        await p.wait_output("processes: ", timeout=60)
        children = role_children(p.pid)
        assert set(children) == ROLE_CHILDREN, children
        for name, c in children.items():  # argv of every process is public on the host
            assert password not in " ".join(c.cmdline()), name
        # Traffic, so that the roles log more than their start-up.
        alice, bob = unique("alice"), unique("bob")
        a = await Client(url=f"ws://127.0.0.1:{port}/ws", token=cli_token(alice, data)).connect(STEP)
        b = await Client(url=f"ws://127.0.0.1:{port}/ws", token=cli_token(bob, data)).connect(STEP)
        await a.send(to=bob, body="hi")
        assert (await b.next_message(STEP)).body == "hi"
        await a.close()
        await b.close()
        page = await asyncio.to_thread(_metrics, port)
        assert "switchboard_edge_frames_in_total" in page
        assert password not in page
        assert p.terminate(timeout=30) == 0
        out = p.output()
        assert "fabric up" in out and "nats://sbuser:***@127.0.0.1" in out, out[-2000:]
        assert password not in out


async def test_token_in_nats_url_appears_nowhere(make_nats, tmp_path):
    """A NATS token (``nats://TOKEN@host``) is a secret as a whole: one role
    process run by hand prints it nowhere."""
    token = "tok" + secrets.token_hex(12)
    srv = make_nats(extra_args=["--auth", token])
    await admin_init(Settings(), f"nats://{token}@127.0.0.1:{srv.port}")  # role processes do not create streams
    with procs() as made:
        p = Proc(["sequencer", "--nats", f"nats://{token}@127.0.0.1:{srv.port}", "--data", str(tmp_path / "d"),
                  "--store", f"sqlite:///{tmp_path}/sb.db", "--log-level", "debug"],
                 env=clean_env(), log=tmp_path / "seq.log")
        made.append(p)
        await p.wait_output("fabric up", timeout=60)
        await p.wait_output(" running (NATS ")
        assert p.terminate(timeout=30) == 0
        out = p.output()
        assert token not in out, out[-2000:]
        assert "running (NATS nats://***@127.0.0.1" in out
