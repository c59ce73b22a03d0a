"""A few seconds of ``switchboard bench presence --watchers`` (sbctl/bench/presence.py),
so the bench cannot rot: a fabric of its own, 3 watchers, 2 watched users
going online and offline.

What it protects: every change reaches every watcher exactly once (no
frame missing, none matching no change), and each figure the bench
reports is measured: latency samples for every frame, WebSocket and NATS
bytes, per-process CPU rows, and the fan-out rates read from the edge's
``/metrics`` (which also checks that ``switchboard up`` re-exports the
tracker's counters there) agree with what the watchers counted.
"""

from __future__ import annotations

from sbctl.bench.presence import WatchParams, render, run


def test_presence_watch_bench_smoke() -> None:
    rep = run(WatchParams(watchers=3, subjects=2, rate=2.0, duration=2.0),
              command="pytest tests/e2e/test_bench_presence.py")
    text = render(rep)
    print(text)
    assert rep.changes >= 4, text
    assert rep.expected_frames == rep.changes * 3, text
    assert rep.ok, text  # every frame, none stray
    assert rep.latency_ms.count == rep.frames and rep.latency_ms.p99 is not None, text
    # a presence frame is ~80 bytes of JSON; on the wire it adds a 2-byte header
    assert 40 < (rep.ws_payload_bytes_per_frame or 0) < 200, text
    assert rep.nats_bytes_per_change_per_watcher["tracker_to_server"] is not None, text
    rates = rep.metrics_per_sec
    edge_frames = rates["switchboard_edge_presence_frames_total"]
    fanout = rates["switchboard_presence_fanout_total"]
    assert edge_frames is not None and fanout is not None, text
    # the counters saw the frames the watchers got (same window; each watcher has one socket)
    assert abs(edge_frames * rep.watched_seconds - rep.frames) <= 1, text
    assert abs(fanout * rep.watched_seconds - rep.frames) <= 1, text
    roles = {p.role for p in rep.processes}
    assert {"nats-server", "edge", "archiver+presence+pusher"} <= roles, text
    assert "µs/change/watcher" in text and "reproduce:" in text
