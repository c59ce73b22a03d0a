"""The shell scripts of scripts/ that docs/benchmarks.md quotes, run briefly
end to end (their own nats-server and role processes, real traffic): they
once failed at their first line for a release after a module moved, and
nothing noticed. Each must exit 0 and its bench report say the run was
correct; the failover script must also see every partition owned again."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.helpers import REPO

CORRECT = "correct (no loss/dup/gap)        yes"

SCRIPTS = {
    "bench-split": (["scripts/bench-split", "--rate", "200", "--duration", "2", "--quiet"], {}, [CORRECT]),
    # The fabric without its archiver, for the ablation in docs/benchmarks.md: delivery must not need it.
    "bench-split-no-archiver": (["scripts/bench-split", "--rate", "200", "--duration", "2", "--quiet"],
                                {"SB_SPLIT_ROLES": "presence+pusher"}, [CORRECT]),
    # KILL_AT=2: the first sequencer is SIGKILLed 2 s into sending; the other takes its partitions.
    "bench-failover": (["scripts/bench-failover", "--rate", "200", "--duration", "6", "--quiet"], {"KILL_AT": "2"},
                       [CORRECT, "partitions owned by"]),
    # The floor measurement docs/benchmarks.md and docs/architecture.md quote: in every pattern
    # each send is confirmed and both its copies delivered (it exits 1 otherwise).
    **{f"measure-nats-floor-{p}": ([sys.executable, "scripts/measure-nats-floor", "--pattern", p, "300"],
                                   {"FLOOR_SECONDS": "2"}, [f"{p}: offered    300/s", "errors 0"])
       for p in "BCEMPQS"},
    # The lean end-to-end pipeline the same docs quote, driven by bench delivery: nothing lost,
    # duplicated or out of order in either pattern (the bench exits 1 otherwise).
    **{f"measure-lean-pipeline-{p}": ([sys.executable, "scripts/measure-lean-pipeline", "--pattern", p, "--rate",
                                       "200", "--duration", "2", "--quiet"], {}, [CORRECT])
       for p in "BQ"},
    # The archiver's read of MESSAGES, by its consumer and by direct gets: both read every entry once, in order.
    "measure-archive-read": ([sys.executable, "scripts/measure-archive-read", "2000", "20", "100"], {},
                             ["consumer + acks: 2,000 read", "direct get by sequence: 2,000 read"]),
    # The catch-up cost of B's mailbox and of three ways to read Q's: the same users read the same
    # number of entries every way.
    "measure-catchup-read": ([sys.executable, "scripts/measure-catchup-read", "200", "500", "2000", "50"], {},
                             ["B: 50 users caught up", "Q: 50 users caught up", "Q by conversation: 50 users",
                              "Q by last: 50 users"]),
}


@pytest.mark.parametrize("argv, extra_env, expected", SCRIPTS.values(), ids=SCRIPTS.keys())
def test_bench_script_runs(argv, extra_env, expected):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update(extra_env, SB_VENV=str(Path(sys.executable).parent.parent))
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    for line in expected:
        assert line in out, out[-3000:]
