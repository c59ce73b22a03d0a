"""The lock-free metric primitives (switchboard/metrics.py) and the pusher's
bounded labels (pusher/metrics.py).

What it protects: an IntHistogram exported with the wrong ``le`` semantics
(a value equal to a bound counted above it) or non-cumulative buckets makes
every ``histogram_quantile`` of the dashboard lie; a provider answering free
text (an exception message with a byte count in it) must not mint a new
Prometheus series per answer.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pusher.metrics import MAX_REASONS, PusherMetrics
from switchboard.metrics import IntHistogram, counter, gauge, histogram


def samples(collector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    reg = CollectorRegistry()
    reg.register(collector)
    out = {}
    for fam in text_string_to_metric_families(generate_latest(reg).decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


class _One:
    def __init__(self, *families) -> None:
        self._families = families

    def collect(self):
        yield from self._families


def test_histogram_buckets_are_cumulative_with_le_semantics():
    h = IntHistogram((0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 1.0, 7.0):  # 0.1 and 1.0 sit exactly on a bound: counted at that bound
        h.observe(v)
    got = samples(_One(histogram("t_seconds", "x", h)))
    assert got[("t_seconds_bucket", (("le", "0.1"),))] == 2
    assert got[("t_seconds_bucket", (("le", "1.0"),))] == 4
    assert got[("t_seconds_bucket", (("le", "+Inf"),))] == 5
    assert got[("t_seconds_count", ())] == 5 and h.count == 5
    assert abs(got[("t_seconds_sum", ())] - 8.65) < 1e-9


def test_labelled_counter_gauge_and_histogram_families():
    hists = {("apns",): IntHistogram(), ("fcm",): IntHistogram()}
    hists[("fcm",)].observe(0.2)
    got = samples(_One(counter("t_events", "x", {("a", "b"): 3}, ["p", "q"]), gauge("t_level", "x", 4.5),
                       histogram("t_call_seconds", "x", hists, ["provider"])))
    assert got[("t_events_total", (("p", "a"), ("q", "b")))] == 3
    assert got[("t_level", ())] == 4.5
    assert got[("t_call_seconds_count", (("provider", "apns"),))] == 0  # exists before the first call
    assert got[("t_call_seconds_count", (("provider", "fcm"),))] == 1


def test_pusher_series_exist_at_zero_and_reasons_stay_bounded():
    m = PusherMetrics(["apns", "fcm"])
    before = samples(m.registry)
    assert before[("switchboard_pusher_notifications_total", (("outcome", "ok"), ("provider", "apns")))] == 0
    assert before[("switchboard_pusher_entries_total", (("result", "sent"),))] == 0

    m.sent("fcm", "retry", "QUOTA_EXCEEDED", 0.01)
    m.sent("fcm", "too_large", "payload is 4217 bytes after trimming the body; the limit is 4096\n", 0.01)
    for i in range(MAX_REASONS + 10):
        m.sent("apns", "failed", f"Code{i}", 0.01)
    m.sent("apns", "ok", "", 0.02)
    got = samples(m.registry)
    fails = {labels: v for (name, labels), v in got.items() if name == "switchboard_pusher_failures_total"}
    assert fails[(("provider", "fcm"), ("reason", "QUOTA_EXCEEDED"))] == 1
    assert fails[(("provider", "fcm"), ("reason", "other"))] == 1  # free text: not a label value
    apns = [dict(labels)["reason"] for labels in fails if dict(labels)["provider"] == "apns"]
    assert len(apns) == MAX_REASONS + 1 and "other" in apns  # bounded, the rest counted as other
    assert fails[(("provider", "apns"), ("reason", "other"))] == 10
    assert got[("switchboard_pusher_notifications_total", (("outcome", "failed"), ("provider", "apns")))] \
        == MAX_REASONS + 10
    assert got[("switchboard_pusher_provider_seconds_count", (("provider", "apns"),))] == MAX_REASONS + 11
