"""Reading a message's trace: ``switchboard trace`` and ``<prefix>.api.trace.get``.

A traced 1:1 message (``"trace": true`` on the send frame) goes through a
real edge, sequencer and archiver on a real nats-server; the tests then read
it back the way an operator does (the CLI as a child process, with the
deployment's prefixes in its environment) and the way a support tool does
(the sequencer's endpoint). What they protect:

- the timeline shows every hop in order, with the delay between hops, and
  includes nats-server's own events of the send request (``Nats-Trace-Dest``
  set by the edge; rendered as ``nats.*`` lines);
- ``trace CONV SEQ`` names the message (MESSAGES, archive) and ``--id`` finds
  the same records; ``--json`` is one parseable record per line, sorted;
- the exit codes a script relies on: 0 found, 1 none (with the one line that
  says why a message may have no trace), 2 bad arguments / no NATS;
- the endpoint answers the same records, and coded errors for bad queries;
- ``--data DIR`` of a real ``switchboard up`` finds its embedded NATS.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
from pathlib import Path

import msgspec
import nats
import pytest

from sbctl.embedded import free_port
from switchboard import trace_read
from tests.e2e.helpers import PYTHON, REPO, STEP, Proc, Raw, admin_init, procs, settings_env, unique, until

ROLES = ("sequencer", "edge", "archiver")
# The hops every traced 1:1 message delivered to an online device has, in
# the order they happen (edge.acked after the device acked).
EXPECTED = ["edge.received", "nats.ingress", "nats.egress", "sequencer.stored", "sequencer.fanout",
            "edge.delivered", "edge.acked"]


async def cli(settings, *args: str, env: dict | None = None) -> tuple[int, str, str]:
    """``python -m sbctl trace ARGS`` as a child process, with the
    deployment's prefixes (and nothing else of it) in its environment."""
    e = settings_env(settings) if env is None else env
    p = await asyncio.create_subprocess_exec(PYTHON, "-m", "sbctl", "trace", *args, cwd=REPO, env=e,
                                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(p.communicate(), 60)
    return p.returncode, out.decode(), err.decode()


async def wait_stages(settings, mid: str, want: dict[str, int], timeout: float = STEP) -> list:
    """The records of ``mid`` once at least ``want[stage]`` of each stage are
    stored (records are fire-and-forget: they land a little after the hop)."""
    nc = await nats.connect(settings.nats_url)
    recs: list = []
    try:
        async def enough() -> bool:
            recs[:] = (await trace_read.read_trace(nc, settings, id=mid))[0]
            have = [r.stage for r in recs]
            return all(have.count(s) >= n for s, n in want.items())

        await until(enough, timeout, lambda: f"stages of {mid} {[r.stage for r in recs]} to hold {want}", every=0.1)
        return recs
    finally:
        await nc.close()


async def traced_dm(d, alice: Raw, bobs: list[Raw], mid: str, *, trace: bool = True) -> dict:
    """alice sends ``mid`` to bob; every bob device receives and acks it."""
    frame = {"type": "send", "id": mid, "to": "bob", "body": f"hello {mid}"}
    if trace:
        frame["trace"] = True
    await alice.send(frame)
    sent = await alice.answer(mid)
    for b in bobs:
        m = await b.expect("msg", id=mid)
        await b.send({"type": "ack", "cursor": m["cursor"]})
    return sent


@pytest.fixture
async def dep(deploy):
    # trace_sample 0: only frames with "trace": true are traced, so the
    # untraced message below has no records by construction, not by luck.
    return await deploy(roles=ROLES, trace_sample=0.0)


async def test_timeline_json_and_id_of_a_traced_message(dep):
    d = dep
    alice = await d.raw("alice")
    bob1, bob2 = await d.raw("bob"), await d.raw("bob")
    mid = unique("tr-")
    sent = await traced_dm(d, alice, [bob1, bob2], mid)
    conv, seq = sent["conv"], sent["seq"]
    recs = await wait_stages(d.settings, mid, {s: 1 for s in EXPECTED} | {"edge.acked": 2, "archiver.stored": 1})
    bob_deliveries = {r.device for r in recs if r.stage == "edge.delivered" and r.user == "bob"}
    assert len(bob_deliveries) == 2, "one edge.delivered per device of the recipient"
    # Later messages: the traced one is no longer the conversation's last,
    # so CONV SEQ finds it by the binary search over MESSAGES.
    later = [await traced_dm(d, alice, [bob1, bob2], unique("later-"), trace=False) for _ in range(4)]
    nc = await d.nats()
    for s in [sent] + later:  # the sequencer's endpoint names each (conv, seq), traced or not
        m = await nc.request(d.settings.subjects.api("trace", "get"),
                             json.dumps({"conv": conv, "seq": s["seq"]}).encode(), timeout=STEP)
        body = json.loads(m.data)
        assert (body["sender"], body["id"]) == ("alice", s["id"]), body
    m = await nc.request(d.settings.subjects.api("trace", "get"),
                         json.dumps({"conv": conv, "seq": later[-1]["seq"] + 1}).encode(), timeout=STEP)
    assert json.loads(m.data)["error"]["code"] == "not_found"  # past the last one

    code, out, err = await cli(d.settings, conv, str(seq), "--nats", d.settings.nats_url)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"message {mid} from alice in {conv}, seq {seq}: "), lines[0]
    stages = [ln.split()[3] for ln in lines[1:-1]]
    # Every stage in the order of the contract (first occurrence of each).
    firsts = [s for i, s in enumerate(stages) if s in EXPECTED and s not in stages[:i]]
    assert firsts == EXPECTED, stages
    assert "archiver.stored" in stages
    hop = next(ln for ln in lines if " nats.ingress " in ln)
    assert "nats/sb-test" in hop and "client cid:" in hop, hop  # the server's name and the edge's connection
    assert re.search(r"\+\d+ ms", lines[2]), lines[2]  # delay from the previous hop
    assert f"seq={seq}" in next(ln for ln in lines if " sequencer.stored " in ln)

    code, out2, err = await cli(d.settings, "--id", mid, "--json", "--nats", d.settings.nats_url)
    assert code == 0, err
    rows = [json.loads(ln) for ln in out2.splitlines()]
    assert [r["stage"] for r in rows] == stages, "the --id read finds the same records as CONV SEQ"
    assert [r["at"] for r in rows] == sorted(r["at"] for r in rows)
    assert {r["role"] for r in rows} >= {"edge", "nats", "sequencer", "archiver"}
    ingress = next(r for r in rows if r["stage"] == "nats.ingress")
    assert ingress["subject"].endswith(f".{conv}") and ingress["conn_kind"] == "client"

    code, out3, _ = await cli(d.settings, "--id", mid, "--conv", conv, "--sender", "alice", "--json",
                              "--nats", d.settings.nats_url)
    assert code == 0 and len(out3.splitlines()) == len(rows)


async def test_exit_codes_and_the_no_trace_explanation(dep, tmp_path):
    d = dep
    alice, bob = await d.raw("alice"), await d.raw("bob")
    plain = unique("plain-")
    sent = await traced_dm(d, alice, [bob], plain, trace=False)
    url = d.settings.nats_url
    env = settings_env(d.settings.replace(trace_sample=0.001))

    # An untraced message: named (MESSAGES), but no records: exit 1 and why.
    code, out, err = await cli(d.settings, sent["conv"], str(sent["seq"]), "--nats", url, env=env)
    assert (code, out) == (1, ""), (code, out, err)
    assert f"id '{plain}' from 'alice'" in err
    assert "trace_sample 0.001: 1 in 1,000" in err and "kept 1 h" in err, err

    code, _, err = await cli(d.settings, sent["conv"], "999", "--nats", url)
    assert code == 1 and "no message 999" in err, err
    code, _, err = await cli(d.settings, "--id", unique("none-"), "--nats", url)
    assert code == 1 and "no trace records" in err, err

    # Bad arguments: 2; a NATS that is not there: 69 after CONNECT_SEC (tests/e2e/test_unreachable_deps.py).
    for args in ([], [sent["conv"]], ["--id", "bad id!"], [sent["conv"], "1", "--id", "x"],
                 [sent["conv"], "0"], ["c", "1", "--conv", "c"]):
        code, _, err = await cli(d.settings, *args, "--nats", url)
        assert code == 2, (args, err)
    code, _, err = await cli(d.settings, "--id", "x", "--nats", f"nats://127.0.0.1:{free_port()}")
    assert code == 69 and "cannot reach NATS" in err, err
    code, _, err = await cli(d.settings, "--id", "x", "--data", str(tmp_path / "nothing-here"))
    assert code == 2 and "--nats URL" in err, err


async def test_endpoint_answers_records_and_coded_errors(dep):
    d = dep
    alice, bob = await d.raw("alice"), await d.raw("bob")
    mid = unique("ep-")
    sent = await traced_dm(d, alice, [bob], mid)
    want = await wait_stages(d.settings, mid, {"sequencer.stored": 1, "edge.acked": 1, "nats.ingress": 1})
    subject = d.settings.subjects.api("trace", "get")
    nc = await nats.connect(d.settings.nats_url)
    try:
        async def ask(q: dict) -> tuple[dict, dict]:
            m = await nc.request(subject, json.dumps(q).encode(), timeout=STEP)
            return json.loads(m.data), dict(m.headers or {})

        body, _ = await ask({"conv": sent["conv"], "seq": sent["seq"]})
        assert (body["id"], body["sender"]) == (mid, "alice")
        stages = [r["stage"] for r in body["records"]]
        assert stages[:len(want)] == [r.stage for r in want] or set(stages) >= {r.stage for r in want}
        assert any(r["role"] == "nats" and r["instance"] == "sb-test" for r in body["records"])
        body2, _ = await ask({"id": mid})
        assert [r["stage"] for r in body2["records"]] == stages
        empty, _ = await ask({"id": unique("none-")})
        assert empty["records"] == [], "an id without records is an empty answer, not an error"

        for q, code in (({}, "bad_frame"), ({"conv": sent["conv"]}, "bad_frame"),
                        ({"conv": sent["conv"], "seq": 999}, "not_found"), ({"id": "bad id!"}, "invalid_id"),
                        ({"conv": sent["conv"], "seq": 1, "id": mid}, "bad_frame"),
                        ({"seq": "x"}, "bad_request")):  # not a TraceQuery at all: switchboard/rpc's decode error
            body, headers = await ask(q)
            assert body["error"]["code"] == code, (q, body)
            assert headers.get("Nats-Service-Error-Code") == code
            assert body["error"]["retry"] is False
    finally:
        await nc.close()


async def test_trace_data_dir_of_a_real_up(tmp_path):
    """``--data DIR`` finds the embedded nats-server of ``switchboard up``
    (its log in DIR/nats/), and the prefixes are the defaults."""
    data = str(tmp_path / "updata")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")} | {"PYTHONUNBUFFERED": "1"}
    with procs() as made:
        up = Proc(["up", "--port", str(port), "--data", data], env=env, log=tmp_path / "up.log")
        made.append(up)
        await up.wait_output("Switchboard is up", timeout=60)
        tok = subprocess.run([PYTHON, "-m", "sbctl", "token", "alice", "--data", data], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=30, check=True).stdout.strip()
        tokb = subprocess.run([PYTHON, "-m", "sbctl", "token", "bob", "--data", data], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=30, check=True).stdout.strip()
        url = f"ws://127.0.0.1:{port}/ws"
        alice, bob = await Raw.open(url, tok), await Raw.open(url, tokb)
        try:
            await alice.hello()
            await bob.hello()
            mid = unique("up-")
            await alice.send({"type": "send", "id": mid, "to": "bob", "body": "via up", "trace": True})
            sent = await alice.answer(mid)
            m = await bob.expect("msg", id=mid)
            await bob.send({"type": "ack", "cursor": m["cursor"]})
            result: list = []

            async def traced() -> bool:
                p = await asyncio.create_subprocess_exec(
                    PYTHON, "-m", "sbctl", "trace", sent["conv"], str(sent["seq"]), "--data", data, cwd=REPO,
                    env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                result[:] = [p.returncode, *await p.communicate()]
                result[0] = p.returncode
                return p.returncode == 0 and b" edge.acked " in result[1]

            await until(traced, STEP, lambda: f"`switchboard trace` showing edge.acked: {result}", every=0.2)
            out = result[1]
            assert b" nats.ingress " in out and b" sequencer.stored " in out and b" edge.acked " in out, out
        finally:
            await alice.close()
            await bob.close()
        assert up.terminate() == 0


def test_nats_events_parse_into_hops():
    """nats-server's trace message (the 2.15 format, as captured from a run)
    becomes one hop per event, with the server's name and the connection."""
    doc = {"server": {"name": "sb-1", "ver": "2.15.1"}, "hops": 1,
           "request": {"header": {"Nats-Trace-Dest": ["sb.trace.c.a.m.nats"]}, "msgsize": 80},
           "events": [{"type": "in", "ts": "2026-11-29T18:22:18.441913199Z", "kind": 0, "cid": 15, "acc": "SB",
                       "name": "sb-edge-x", "subj": "sb.send.3.c"},
                      {"type": "eg", "ts": "2026-11-29T18:22:18.442918858Z", "kind": 0, "cid": 14,
                       "sub": "sb.send.*.*"},
                      {"type": "eg", "ts": "2026-11-29T18:22:18.443Z", "kind": 1, "cid": 3, "name": "sb-2"},
                      {"type": "in", "ts": "2026-11-29T18:22:18.443Z", "kind": 0, "cid": 9,
                       "error": "Permissions Violation for Publish to \"x\""}]}
    hops = trace_read.nats_hops(msgspec.json.encode(doc), conv="c", sender="a", id="m")
    assert [h.stage for h in hops] == ["nats.ingress", "nats.egress", "nats.egress", "nats.ingress"]
    assert hops[0].at == 1795976538441 and hops[1].at == 1795976538442
    assert (hops[0].instance, hops[0].conn_kind, hops[0].cid, hops[0].conn) == ("sb-1", "client", 15, "sb-edge-x")
    assert hops[2].conn_kind == "route" and hops[2].hops == 1
    assert hops[3].error.startswith("Permissions Violation")
    assert trace_read.nats_hops(b"not json", conv="c", sender="a", id="m") == []


def test_data_dir_url_is_the_last_listen_line(tmp_path: Path):
    from sbctl.trace import data_dir_nats_url

    log = tmp_path / "nats" / "nats-server.log"
    log.parent.mkdir()
    log.write_text("[1] 2026/11/29 18:00:00.1 [INF] Listening for client connections on 127.0.0.1:4000\n"
                   "[2] 2026/11/29 18:10:00.1 [INF] Listening for client connections on 127.0.0.1:4111\n")
    assert data_dir_nats_url(str(tmp_path)) == "nats://127.0.0.1:4111"  # the log is appended by every start
    assert data_dir_nats_url(str(tmp_path / "x")) is None


async def test_server_hops_and_endpoint_under_the_committed_accounts(deploy, tmp_path):
    """With nats/accounts.conf (each role its own NATS user): nats-server
    refuses a message whose ``Nats-Trace-Dest`` its publisher may not publish
    to (the whole message, not just the trace), so the edge must hold
    ``sb.trace.>``; the sequencer must be allowed to serve
    ``sb.api.trace.get`` and read SB_TRACE; a backend service (the
    ``service`` user) gets the records, the server's hops included, and the
    ``admin`` user can run ``switchboard trace``."""
    from sbctl.init import init_fabric
    from tests.e2e.test_permissions import Server

    srv = Server(tmp_path)
    try:
        await srv.wait()
        d = await deploy(roles=(), nats_url=srv.url("admin"), init=False, subject_prefix="sb", stream_prefix="",
                         trace_sample=0.0)
        nc = await nats.connect(srv.url("admin"))
        try:
            await init_fabric(nc, d.settings)  # as the admin user: the roles may not
        finally:
            await nc.close()
        await d.start("sequencer", nats_url=srv.url("sequencer"))
        await d.start("edge", nats_url=srv.url("edge"))
        alice, bob = await d.raw("alice"), await d.raw("bob")
        mid = unique("acc-")
        await alice.send({"type": "send", "id": mid, "to": "bob", "body": "x", "trace": True})
        sent = await alice.answer(mid)  # a refused trace destination would lose the send itself
        m = await bob.expect("msg", id=mid)
        await bob.send({"type": "ack", "cursor": m["cursor"]})
        svc = await nats.connect(srv.url("service"))
        try:
            body: dict = {}

            async def complete() -> bool:
                query = json.dumps({"conv": sent["conv"], "seq": sent["seq"]}).encode()
                r = await svc.request("sb.api.trace.get", query, timeout=STEP)
                body.update(json.loads(r.data))
                return set(EXPECTED) <= {x["stage"] for x in body.get("records", [])}

            await until(complete, STEP, lambda: f"every expected stage in {body}", every=0.1)
            assert any(x["role"] == "nats" and x["instance"] == "sb-1" for x in body["records"])
        finally:
            await svc.close()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
        code, out, err = await cli(d.settings, sent["conv"], str(sent["seq"]), "--nats", srv.url("admin"), env=env)
        assert code == 0 and " nats.egress " in out, err
        await d.stop()  # before the server goes
    finally:
        srv.stop()


async def test_server_hops_across_a_cluster(make_nats, deploy):
    """Edge on node 1, sequencer on node 3 of a 3-node cluster: each server
    the send request crosses writes its own trace events, so the timeline
    shows node 1's ingress (client) and egress (route, hops=1), then node
    3's ingress (route, hop 1) and egress to the sequencer."""
    cports = [free_port() for _ in range(3)]
    routes = ",".join(f"nats://127.0.0.1:{p}" for p in cports)
    nodes = [make_nats(name=f"sb-tc-{i}", extra_args=["--cluster", f"nats://127.0.0.1:{cports[i]}",
                                                     "--cluster_name", "sbtrace", "--routes", routes])
             for i in range(3)]
    d = await deploy(roles=(), nats_url=nodes[0].url, init=False, trace_sample=0.0)
    async def initialised() -> bool:
        await admin_init(d.settings)
        return True

    # JetStream needs a meta leader (elected once the routes are up): the admin step until it works
    await until(initialised, 30, "the admin step on the cluster", every=0.5, ignore=(Exception,))
    await d.start("sequencer", nats_url=nodes[2].url)
    await d.start("edge")
    alice = await d.raw("alice")
    await d.raw("bob")  # online: the message is delivered
    mid = unique("cl-")
    await alice.send({"type": "send", "id": mid, "to": "bob", "body": "x", "trace": True})
    await alice.answer(mid, timeout=3 * STEP)
    recs = await wait_stages(d.settings, mid, {"nats.ingress": 2, "nats.egress": 2, "sequencer.stored": 1})
    hops = [r for r in recs if r.role == "nats"]
    by = {(r.instance, r.stage): r for r in hops}
    assert by[("sb-tc-0", "nats.ingress")].conn_kind == "client"
    assert (by[("sb-tc-0", "nats.egress")].conn_kind, by[("sb-tc-0", "nats.egress")].hops) == ("route", 1)
    assert (by[("sb-tc-2", "nats.ingress")].conn_kind, by[("sb-tc-2", "nats.ingress")].hop) == ("route", "1")
    assert by[("sb-tc-2", "nats.egress")].conn_kind == "client"
    # In the order the servers saw it: origin first, then the server at hop 1.
    assert [(r.instance, r.stage) for r in hops] == [("sb-tc-0", "nats.ingress"), ("sb-tc-0", "nats.egress"),
                                                     ("sb-tc-2", "nats.ingress"), ("sb-tc-2", "nats.egress")]
    from sbctl.trace import render

    print(render(recs))  # the cluster timeline (docs/operations.md shows one)
