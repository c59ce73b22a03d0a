"""Prometheus metrics of one pusher (a registry per pusher: no module-level state).

The worker counts with plain ints in dicts and one
:class:`~switchboard.metrics.IntHistogram` per provider (no lock; a push is
an HTTP call, so this is about consistency with the other roles more than
speed) and :class:`_Collector` exports them when Prometheus scrapes. Every
series of the enabled providers exists from the start at 0, so ``rate()``
works before the first notification.

Labels stay bounded: ``provider`` is a platform (apns, fcm, webpush),
``outcome`` one of :class:`~pusher.providers.Outcome` (plus ``disabled``: the
device's platform is not enabled here), ``reason`` the provider's reason code
when it is a short plain token, at most :data:`MAX_REASONS` distinct ones per
provider; anything else is counted as ``other``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

from switchboard.metrics import IntHistogram, counter, gauge, histogram

# Distinct failure reasons kept per provider: the platforms document a few
# dozen codes at most; a provider answering free text must not grow the series.
MAX_REASONS = 32
_PLAIN_REASON = re.compile(r"[A-Za-z0-9_.:/ -]{1,48}")
OUTCOMES = ("ok", "dead_token", "retry", "too_large", "failed", "disabled")
RESULTS = ("sent", "no_device", "read_elsewhere", "retry", "dead_letter")


class PusherMetrics:
    def __init__(self, providers: Iterable[str]) -> None:
        names = sorted(set(providers))
        self.notifications: dict[tuple[str, ...], int] = {(p, o): 0 for p in names for o in OUTCOMES}
        self.failures: dict[tuple[str, ...], int] = {}
        self._reasons: dict[str, set[str]] = {}
        self.provider_seconds: dict[tuple[str, ...], IntHistogram] = {(p,): IntHistogram() for p in names}
        self.entries: dict[tuple[str, ...], int] = {(r,): 0 for r in RESULTS}
        self.redeliveries = 0
        self.registrations: dict[tuple[str, ...], int] = {(p,): 0 for p in names}
        # Set by the service from the consumer's info every few seconds.
        self.queue_pending = 0
        self.queue_ack_pending = 0
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(self))

    def sent(self, provider: str, outcome: str, reason: str, seconds: float | None) -> None:
        """One device's answer from ``provider`` (``seconds`` None: no call was made)."""
        key = (provider, outcome)
        self.notifications[key] = self.notifications.get(key, 0) + 1
        if seconds is not None:
            h = self.provider_seconds.get((provider,))
            if h is None:
                h = self.provider_seconds[(provider,)] = IntHistogram()
            h.observe(seconds)
        if outcome not in ("ok", "disabled"):
            fkey = (provider, self._reason(provider, reason))
            self.failures[fkey] = self.failures.get(fkey, 0) + 1

    def entry(self, result: str, deliveries: int) -> None:
        """One PUSH entry handled: ``result`` one of :data:`RESULTS`."""
        self.entries[(result,)] = self.entries.get((result,), 0) + 1
        if deliveries > 1:
            self.redeliveries += 1

    def registered(self, platform: str) -> None:
        self.registrations[(platform,)] = self.registrations.get((platform,), 0) + 1

    def _reason(self, provider: str, reason: str) -> str:
        if not _PLAIN_REASON.fullmatch(reason or ""):
            return "other" if reason else "none"
        known = self._reasons.setdefault(provider, set())
        if reason in known:
            return reason
        if len(known) >= MAX_REASONS:
            return "other"
        known.add(reason)
        return reason


class _Collector:
    def __init__(self, m: PusherMetrics) -> None:
        self._m = m

    def collect(self) -> Iterator[Metric]:
        m = self._m
        pre = "switchboard_pusher_"
        yield counter(pre + "notifications", "Notifications handed to a provider, by provider and outcome",
                      m.notifications, ["provider", "outcome"])
        yield counter(pre + "failures", "Notifications not accepted (every outcome but ok), by provider and "
                      "the provider's reason code", m.failures, ["provider", "reason"])
        yield histogram(pre + "provider_seconds", "Time of one provider call (one device)", m.provider_seconds,
                        ["provider"])
        yield counter(pre + "entries", "PUSH entries handled: sent (every device done), no_device (the user has "
                      "none), read_elsewhere (already read: nothing sent), retry (redelivered later), dead_letter",
                      m.entries, ["result"])
        yield counter(pre + "redeliveries", "PUSH entries handled on a second or later delivery", m.redeliveries)
        yield counter(pre + "registrations", "Device tokens registered (push.register), by platform",
                      m.registrations, ["platform"])
        yield gauge(pre + "queue_pending", "PUSH entries not yet delivered to the pusher (consumer num_pending)",
                    m.queue_pending)
        yield gauge(pre + "queue_ack_pending", "PUSH entries delivered and not yet acked (being sent or waiting "
                    "for a retry)", m.queue_ack_pending)
