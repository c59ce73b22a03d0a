"""Device token validation (the DeviceStore contract suite is tests/contract/test_devices.py)."""

from __future__ import annotations

import json

import pytest

from switchboard.devices import BadToken, UnknownPlatform, check_token

P256DH = "B" + "A" * 86  # 87 base64url chars: 65 bytes
AUTH = "A" * 22  # 16 bytes


def sub(endpoint="https://push.example/x", p256dh=P256DH, auth=AUTH, **extra) -> str:
    return json.dumps({"endpoint": endpoint, "keys": {"p256dh": p256dh, "auth": auth}, **extra})


@pytest.mark.parametrize("platform, token, error", [
    ("sms", "x", UnknownPlatform),
    (None, "x", UnknownPlatform),
    ("apns", "ab" * 31, BadToken),  # 62 hex chars: too short
    ("apns", "zz" * 32, BadToken),
    ("apns", 123, BadToken),
    ("fcm", "short", BadToken),
    ("fcm", "has space " * 5, BadToken),
    ("fcm", "x" * 5000, BadToken),
    ("webpush", "not json", BadToken),
    ("webpush", "[1]", BadToken),
    ("webpush", sub(endpoint="http://push.example/x"), BadToken),  # must be https
    ("webpush", sub(endpoint="https:///nohost"), BadToken),
    ("webpush", sub(p256dh="short"), BadToken),
    ("webpush", sub(auth="not/base64url!"), BadToken),
    ("webpush", json.dumps({"endpoint": "https://push.example/x"}), BadToken),
    ("webpush", sub(pad="x" * 9000), BadToken),
])
def test_bad_tokens_are_coded_errors(platform, token, error):
    with pytest.raises(error) as info:
        check_token(platform, token)
    assert info.value.code == error.code


def test_tokens_are_normalised():
    assert check_token("apns", "AB" * 32) == "ab" * 32
    fcm = "dGVzdA:APA91b" + "x" * 140
    assert check_token("fcm", fcm) == fcm
    # extra fields dropped, keys sorted, compact: the same subscription is one device
    a = check_token("webpush", sub(expirationTime=None))
    assert a == check_token("webpush", json.dumps(json.loads(sub()), indent=2))
    assert json.loads(a) == json.loads(sub())
