"""What `nats micro stats` shows for a real deployment: errors and the time of the real work.

Before switchboard/rpc/, nats-py's own counters timed only the hand-off of a
request to a task (microseconds, whatever the work) and counted an error
only when the micro callback raised, which no endpoint did: Errors was
always 0. This asks ``$SRV.STATS`` the way the NATS CLI does, after a
client's request failed behind the edge.
"""

from __future__ import annotations

import contextlib
import json

import nats.errors

from tests.e2e.helpers import STEP, unique, until


async def stats_of(nc, service: str, prefix: str) -> dict:
    """This deployment's instance of ``service`` in ``$SRV.STATS.<service>``
    (the session's nats-server may run other tests' instances: ours is the
    one whose endpoints are under our subject prefix)."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    await nc.publish(f"$SRV.STATS.{service}", b"", reply=inbox)
    async def ours() -> dict | None:
        with contextlib.suppress(nats.errors.TimeoutError):
            s = json.loads((await sub.next_msg(timeout=0.5)).data)
            if any(e["subject"].startswith(prefix + ".") for e in s["endpoints"]):
                return s
        return None

    found = await until(ours, STEP, f"{service} of prefix {prefix} answering $SRV.STATS", every=0)
    await sub.unsubscribe()
    return {e["name"]: e for e in found["endpoints"]}


async def test_a_failed_request_shows_in_micro_stats(deploy):
    d = await deploy(roles=("sequencer", "edge"))
    nc = await d.nats()
    prefix = d.settings.subjects.prefix
    before = (await stats_of(nc, "sb-sequencer", prefix))["receipts-get"]

    alice = await d.raw(unique("alice"))
    await alice.send({"type": "receipts", "id": "r1", "conv": unique("nowhere")})
    err = await alice.reply("r1")
    assert (err["type"], err["code"], err["retry"]) == ("error", "not_found", False), err

    after = (await stats_of(nc, "sb-sequencer", prefix))["receipts-get"]
    assert after["num_requests"] == before["num_requests"] + 1
    assert after["num_errors"] == before["num_errors"] + 1
    assert after["last_error"].startswith("not_found: ")
    # The request's own time (a store read), counted from its arrival to its answer.
    assert after["processing_time"] > before["processing_time"]
    assert after["average_processing_time"] > 0
