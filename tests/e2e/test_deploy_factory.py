"""The test harness itself: the ``deploy`` factory (tests/e2e/conftest.py)
gives the same Deployment API in both modes, and ``until`` waits for sync
and async predicates and says what it waited for when it gives up.

What it protects: every e2e test stands on these two; a factory whose
"processes" mode silently ran in-process, or a wait helper that returned on
a falsy value, would make many tests pass without testing anything.
"""

from __future__ import annotations

import os

import pytest

from tests.e2e.helpers import STEP, unique, until


@pytest.mark.parametrize("mode", ["inprocess", "processes"])
async def test_same_api_in_both_modes(deploy, mode):
    d = await deploy(roles=("sequencer", "edge"), mode=mode, max_body_bytes=100)
    alice, bob = unique("alice"), unique("bob")
    a, b = await d.sdk(alice), await d.sdk(bob)
    sent = await a.send(to=bob, body="hi")
    assert (await b.next_message(STEP)).seq == sent.seq
    r = await d.raw(alice, cursor=0)  # the replay of alice's own copy
    assert [f["seq"] for f in r.msgs()] == [sent.seq]
    # The settings reach the roles in both modes (processes: by environment).
    await r.send({"type": "send", "id": "big", "to": bob, "body": "x" * 101})
    assert (await r.reply("big"))["code"] == "limit_exceeded"
    assert (await d.metrics("switchboard_edge_connections"))["switchboard_edge_connections"] >= 3
    if mode == "processes":
        edge = d.unit("edge")
        assert edge.pid != os.getpid() and "Switchboard is up" in edge.output()
        with pytest.raises(TypeError):
            d.component("edge")
    else:
        assert d.component("edge").epoch == r.welcome["epoch"]
        with pytest.raises(TypeError):
            d.kill("edge")


async def test_killed_edge_process_and_a_second_edge(deploy):
    """kill() is a real SIGKILL of that role's process only; start() adds
    an edge on its own port, where the clients carry on."""
    d = await deploy(roles=("sequencer", "edge"), mode="processes")
    alice, bob = unique("alice"), unique("bob")
    second = await d.start("edge")
    assert second.port != d.unit("edge").port
    b = await d.sdk(bob, edge=second)
    a = await d.sdk(alice)
    a.url = second.url  # where a balancer would send it next
    d.kill("edge")
    assert d.unit("edge") is second
    sent = await a.send(to=bob, body="after the kill")
    assert (await b.next_message(STEP)).seq == sent.seq


async def test_until_sync_async_and_failure_message():
    calls = []

    def later() -> int:
        calls.append(1)
        return len(calls) if len(calls) >= 3 else 0

    assert await until(later, 2.0, "three calls", every=0.001) == 3

    async def ready() -> str:
        return "yes"

    assert await until(ready) == "yes"
    with pytest.raises(AssertionError, match=r"waiting for the moon \(last value: 0\)"):
        await until(lambda: 0, 0.05, "the moon")
    with pytest.raises(AssertionError, match="waiting for computed"):
        await until(lambda: None, 0.01, lambda: "computed")
    with pytest.raises(ZeroDivisionError):  # not ignored: fails at once
        await until(lambda: 1 / 0, 5.0)
    assert await until(_raise_then(7), 1.0, ignore=(ValueError,)) == 7


def _raise_then(value):
    state = {"n": 0}

    def pred():
        state["n"] += 1
        if state["n"] == 1:
            raise ValueError("not yet")
        return value

    return pred
