"""The pusher's metrics against the real providers and their local HTTP/2
fakes (tests/fakes/), for each platform: a throttled send retried and then
delivered, and a dead token.

What it protects: the push panels of the dashboard and the alerts in
docs/operations.md read these series; an outcome counted under the wrong
provider or outcome, a retry not counted (or counted as a failure to
deliver), the provider's reason code lost, or a queue gauge that stays up
after the queue drained would each mislead an operator.
"""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.helpers import until
from tests.e2e.test_pusher import Harness, fakes, material, plat  # noqa: F401 (fixtures)

# The reason code each platform's fake answers a throttled send with (tests/e2e/test_pusher.py, platform()).
THROTTLED_REASON = {"apns": "TooManyRequests", "fcm": "QUOTA_EXCEEDED", "webpush": "HTTP 429"}


def samples(h: Harness) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(h.service.metrics.registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def get(m, name: str, **labels: str) -> float:
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_retry_then_delivered_and_dead_token_are_counted(nats_server, material, fakes, plat):  # noqa: F811
    async with Harness(nats_server.url, material, fakes) as h:
        await h.devices.register("alice", plat.name, plat.new_token())
        plat.fake.script = [plat.throttled]  # first answer 429 (Retry-After: 1), then accepted
        await h.publish("alice")
        await until(lambda: len(plat.fake.received) == 1, 15, "the notification")
        await until(h.drained, 15, "the PUSH queue drained")

        dead = plat.new_token()
        await h.devices.register("bob", plat.name, dead)
        plat.fake.dead.add(plat.dead_key(dead))
        await h.publish("bob")
        await until(h.drained, 15, "the PUSH queue drained")

        async def settled() -> bool:  # the queue gauge is read every 2 s
            m = samples(h)
            return (get(m, "switchboard_pusher_entries_total", result="sent") == 2
                    and get(m, "switchboard_pusher_queue_pending") == 0
                    and get(m, "switchboard_pusher_queue_ack_pending") == 0)

        await until(settled, 15, lambda: f"the counters settled: {samples(h)}")
        m = samples(h)
        p = plat.name
        assert get(m, "switchboard_pusher_notifications_total", provider=p, outcome="retry") == 1
        assert get(m, "switchboard_pusher_notifications_total", provider=p, outcome="ok") == 1
        assert get(m, "switchboard_pusher_notifications_total", provider=p, outcome="dead_token") == 1
        assert get(m, "switchboard_pusher_failures_total", provider=p, reason=THROTTLED_REASON[p]) == 1
        assert get(m, "switchboard_pusher_entries_total", result="retry") == 1
        assert get(m, "switchboard_pusher_entries_total", result="dead_letter") == 0
        assert get(m, "switchboard_pusher_redeliveries_total") == 1
        assert get(m, "switchboard_pusher_provider_seconds_count", provider=p) == 3  # three provider calls
        others = [q for q in ("apns", "fcm", "webpush") if q != p]
        assert all(get(m, "switchboard_pusher_notifications_total", provider=q, outcome="ok") == 0 for q in others)
