"""``switchboard_edge_opening_seconds{step}``: where a connection's opening
(upgrade to ``synced``) spends its time, one observation per step and
connection. What this protects: the steps are timed on the real path (a
step left untimed, or timed twice, would mislead whoever tunes
``admit_max_opening`` from them: docs/operations.md, reconnect storms), and
together they stay within the opening the client saw.
"""

from __future__ import annotations

import time

from edge.metrics import OPENING_STEPS
from tests.e2e.helpers import unique


async def test_each_opening_step_is_timed_once_per_connection(deploy):
    dep = await deploy()
    steps = dep.component("edge").metrics.opening_steps
    t0 = time.monotonic()
    await dep.sdk(unique("alice"))
    await dep.sdk(unique("bob"))
    took = time.monotonic() - t0
    assert {step: steps[(step,)].count for step in OPENING_STEPS} == dict.fromkeys(OPENING_STEPS, 2)
    assert 0 < sum(steps[(step,)].sum for step in OPENING_STEPS) <= took
