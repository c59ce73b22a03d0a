"""``switchboard bench faults``, the bounded subset CI runs (sbctl/bench/faults.py).

One real run of the command against the cluster shape of ``cluster up``
(3 nats-servers at R3, 2 edges, 2 sequencers, 2 archivers, presence,
pusher), at a modest rate: 200 1:1 msgs/s over 200 pairs with one member on
each edge, plus a 20-member group at 5 msgs/s, 420 clients; a warm-up phase first
gives each pair its first message (no fault; checked the same way). Two faults:

- **kill -9 of the NATS node that leads MESSAGES and INBOX** (restarted after
  3 s): a new leader is elected and every confirmed message still reaches
  every member, exactly once, and every send is answered (the sequencer
  answers ``unavailable`` meanwhile and the clients resend the same id).
  What it protects: a send confirmed while the leader dies and lost with it,
  a retried send stored twice, a send never answered.
- **kill -9 of an edge holding 210 clients** (restarted after 3 s): its
  clients reconnect to the other edge with their cursor and miss nothing,
  get nothing twice, in order; their unanswered sends are resent.
  What it protects: a replay after a reconnect that skips or repeats
  entries, a cursor that does not resume on another edge.

Order is asserted after both faults. It used to fail by thousands after the leader kill:
copies whose fan-out failed while no leader existed were re-published
(or, after the sender's resend, fanned out again) after later messages of
the same conversation had been stored, so a member's INBOX held seq N after
N+1 (680 to 3,440 arrivals out of order at 300 msgs/s). The sequencer now
retries failed copies with a backoff that outlasts an election and holds
the conversation's later copies behind them, in seq order (ordered mode:
sequencer/pipeline.py, ``_fanout``). It leaves a window open (a later
message whose copies were already on their way when the earlier one's
failed; 0 here in two runs, 14 of 16,909 at 300 msgs/s), so the test allows
0.5 % of the leader phase's deliveries and no more.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.e2e.helpers import PYTHON, REPO

ARGS = ["--faults", "nats-leader,edge", "--clients-per-edge", "200", "--rate", "200", "--group-size", "20",
        "--group-rate", "5", "--procs", "1", "--before", "3", "--down", "3", "--after", "4", "--json", "--quiet"]


def logs(data: Path) -> str:
    out = []
    for f in sorted((data / "logs").glob("*.log")):
        lines = f.read_text(errors="replace").splitlines()
        out.append(f"== {f.name}\n" + "\n".join(lines[-15:]))
    return "\n".join(out)


@pytest.mark.timeout(240)
def test_faults_leader_and_edge_kill_lose_nothing(tmp_path: Path):
    data = tmp_path / "faults"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")} | {"PYTHONUNBUFFERED": "1"}
    run = subprocess.run([PYTHON, "-m", "sbctl", "bench", "faults", *ARGS, "--data", str(data)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=220)
    start = run.stdout.find("{\n")
    assert start >= 0, (run.returncode, run.stdout[-3000:], run.stderr[-5000:])
    report = json.loads(run.stdout[start:])
    rows = {r["fault"]: r for r in report["rows"]}
    why = f"{json.dumps(report, indent=1)[:6000]}\n{run.stderr[-3000:]}\n{logs(data)}"
    assert set(rows) == {"(warm-up)", "nats-leader", "edge"}, why  # the warm-up creates the conversations
    for name, r in rows.items():
        assert r["lost"] == 0, (name, why)
        assert r["duplicated"] == 0, (name, why)
        assert r["unconfirmed"] == 0 and r["refused"] == 0, (name, why)
    for name, r in rows.items():
        if name == "nats-leader":  # the window ordered mode leaves open (below): a few, never thousands
            assert r["out_of_order"] <= r["deliveries"] // 200, (name, why)
        else:
            assert r["out_of_order"] == 0, (name, why)
    for name in ("nats-leader", "edge"):
        assert rows[name]["deliveries"] > 1000, (name, why)  # the load ran through the fault
        assert rows[name]["recover_sec"] < 40, (name, why)  # recovered within the phase, not at its drain
    assert rows["edge"]["reconnects"] >= 210, why  # every client of the killed edge moved
    assert any("new MESSAGES leader" in n for n in rows["nats-leader"]["notes"]), why
    assert run.returncode == (0 if all(r["out_of_order"] == 0 for r in rows.values()) else 1), why
