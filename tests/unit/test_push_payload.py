"""Payload building and trimming per provider, retry timing, provider selection (no sockets).

The [pusher] settings themselves are checked in tests/unit/test_config.py."""

from __future__ import annotations

import json

import pytest

from pusher.notification import ELLIPSIS, Notification, PayloadTooLarge, fit
from pusher.providers import apns, fcm, retry_after, webpush
from pusher.providers.log import LogProvider
from pusher.providers.select import providers_for
from pusher.worker import backoff
from switchboard.config import PusherSettings, WebPushSettings
from switchboard.devices import Device
from switchboard.errors import ConfigError


def note(body: str = "hi", title: str = "Bob", badge: int | None = 3) -> Notification:
    return Notification(conv="c1", seq=7, id="m7", sender="bob", title=title, body=body, badge=badge)


@pytest.mark.parametrize("body", ["short", "x" * 5000, "é" * 3000, "🙂" * 2000, "word " * 2000])
@pytest.mark.parametrize("limit", [100, 1000, 4096])
def test_fit_keeps_longest_prefix_that_fits(body, limit):
    def build(b: str) -> bytes:
        return json.dumps({"b": b}, ensure_ascii=False).encode()

    out = fit(build, body, limit)
    assert len(out) <= limit
    kept = json.loads(out)["b"]
    if len(build(body)) <= limit:
        assert kept == body  # never trimmed when it fits
    else:
        assert kept == "" or (kept.endswith(ELLIPSIS) and body.startswith(kept[:-1].rstrip()))
        # one more character would not have fitted: the cut is as late as possible
        n = len(kept) - 1 if kept else 0
        assert len(build(body[:n + 1].rstrip() + ELLIPSIS)) > limit or body[:n + 1].rstrip() == body[:n].rstrip()


def test_fit_raises_when_nothing_fits():
    with pytest.raises(PayloadTooLarge):
        fit(lambda b: b"x" * 200 + b.encode(), "body", 100)


@pytest.mark.parametrize("build, limit", [
    (lambda n: apns.build_payload(n), apns.MAX_PAYLOAD),
    (lambda n: fcm.build_message(Device("fcm", "t" * 180), n), fcm.MAX_PAYLOAD),
    (lambda n: webpush.build_payload(n), webpush.MAX_PLAINTEXT),
])
def test_each_provider_trims_a_long_preview_to_its_limit(build, limit):
    small, big = build(note("hello")), build(note("🙂 long " * 3000))
    assert len(small) < limit and len(big) <= limit
    assert len(big) > limit - 16  # trimmed, not emptied: within one 4-byte char + ellipsis of the limit


def test_a_title_too_long_for_any_preview_is_too_large():
    with pytest.raises(PayloadTooLarge):
        apns.build_payload(note(title="T" * 5000))


def test_apns_payload_shape():
    p = json.loads(apns.build_payload(note("hi", badge=4)))
    assert p["aps"]["alert"] == {"title": "Bob", "body": "hi"}
    assert p["aps"]["badge"] == 4 and p["aps"]["thread-id"] == "c1"
    assert (p["conv"], p["seq"], p["id"]) == ("c1", 7, "m7")
    assert "badge" not in json.loads(apns.build_payload(note(badge=None)))["aps"]  # None: leave badge alone


def test_fcm_message_shape():
    m = json.loads(fcm.build_message(Device("fcm", "tok"), note(badge=2)))["message"]
    assert m["token"] == "tok"
    assert m["data"] == {"conv": "c1", "seq": "7", "id": "m7"}  # FCM rejects non-string data values
    assert m["android"]["collapse_key"] == "c1"
    assert m["apns"]["payload"]["aps"]["badge"] == 2


def test_webpush_payload_shape():
    assert json.loads(webpush.build_payload(note(badge=None))) == {
        "title": "Bob", "body": "hi", "conv": "c1", "seq": 7, "id": "m7"}


@pytest.mark.parametrize("header, expected", [
    (None, None), ("", None), ("120", 120.0), ("0", 0.0), ("soon", None),
    ("Wed, 21 Oct 2015 07:28:00 GMT", 60.0),  # an HTTP date: seconds from "now"
    ("Wed, 21 Oct 2015 07:26:00 GMT", 0.0),  # in the past: now
])
def test_retry_after_parsing(header, expected):
    now = 1445412420.0  # 2015-10-21 07:27:00 UTC
    assert retry_after(header, now=now) == expected


@pytest.mark.parametrize("deliveries, retry, lo, hi", [
    (1, None, 1.6, 2.4), (2, None, 3.2, 4.8), (3, None, 6.4, 9.6),
    (20, None, 200.0, 250.0),  # capped at backoff_max, still jittered below it (never above)
    (1, 30.0, 30.0, 30.0),  # Retry-After longer than the backoff wins
    (20, 3600.0, 3600.0, 3600.0),  # ... even beyond backoff_max
])
def test_backoff(deliveries, retry, lo, hi):
    cfg = PusherSettings(push_backoff_base=2.0, push_backoff_max=250.0)
    for r in (0.0, 0.5, 0.999):
        assert lo <= backoff(deliveries, cfg, retry, rand=lambda r=r: r) <= hi


def test_providers_selection():
    providers = providers_for(PusherSettings())
    assert set(providers) == {"apns", "fcm", "webpush"} and all(isinstance(p, LogProvider) for p in providers.values())
    # a provider without its section cannot even be configured (so the pusher never starts without it)
    with pytest.raises(ConfigError, match=r"no \[pusher.apns\] section"):
        PusherSettings(push_provider="apns")
    with pytest.raises(ConfigError, match="unknown push provider"):
        PusherSettings(push_provider="sms")


# A Web Push subscription is a URL chosen by the user: only push services on
# the list may be POSTed to (no requests to internal hosts).
@pytest.mark.parametrize("endpoint, allowed", [
    ("https://fcm.googleapis.com/fcm/send/abc", True),
    ("https://updates.push.services.mozilla.com/wpush/v2/x", True),
    ("https://wns2-par02p.notify.windows.com/w/?token=x", True),
    ("https://web.push.apple.com/QGuQ", True),
    ("https://googleapis.com.evil.example/x", False),
    ("https://evilgoogleapis.com/x", False),
    ("https://10.0.0.5/x", False),
    ("https://localhost/x", False),
])
def test_webpush_allowed_hosts(endpoint, allowed):
    cfg = WebPushSettings(vapid_private_key_file="k", subject="mailto:ops@example.com")
    assert cfg.allows(endpoint) is allowed
