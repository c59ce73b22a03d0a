"""A bounded ``switchboard bench storm`` (sbctl/bench/storm.py): 1,000
clients on two storm edges, both killed with SIGKILL at once and restarted,
while 20 other clients talk 1:1 on up's edge and a feeder keeps sending to
the storm users.

``admit_per_sec`` is lowered to 50 per edge so admission control has to
refuse (500 clients per edge coming back with the SDK's backoff ask for
more than that), which is what this protects:

- every storm client gets back in: a refused upgrade is answered (HTTP 503,
  counted by the edge and seen by the client), not left hanging, and the
  client's backoff brings it back until admitted;
- each resumes from its cursor: every message confirmed to a storm user,
  those stored while it was away included, arrives exactly once and in
  order, with no resync (the cursor was usable), and some did arrive by
  replay between hello and synced;
- the others, never dropped, lose nothing meanwhile.

Times and p99 are the bench's figures (docs/benchmarks.md), not asserted.
"""

from __future__ import annotations

from sbctl.bench.storm import StormParams, render, run


def test_reconnect_storm_through_admission_control() -> None:
    rep = run(StormParams(clients=1_000, edges=2, others=20, rate=50.0, feed_rate=40.0, fed_users=100, before=2.0,
                          after=1.0, timeout=60.0, admit_per_sec=50.0, progress=False),
              command="pytest tests/e2e/test_reconnect_storm.py")
    text = render(rep)
    print(text)
    assert rep.dropped >= 1_000 and rep.synced == rep.dropped, text  # every storm client back and synced
    assert rep.all_synced_sec is not None, text
    # Admission refused some, the clients saw those refusals as 503s, and came back.
    assert rep.edge_rejects.get("admission", 0) > 0, text
    assert rep.client_errors.get("http_503", 0) > 0, text
    assert rep.edge_accepted >= 1_000, text
    # Nothing lost, duplicated or reordered, for the storm users or the others.
    assert rep.feed_confirmed > 0 and rep.storm_replayed > 0, text
    assert (rep.storm_lost, rep.storm_duplicates, rep.storm_gaps, rep.storm_resyncs) == (0, 0, 0, 0), text
    assert rep.others["confirmed"] > 0 and rep.others["lost"] == 0, text
    assert rep.ok, text
