"""Token validation and the DeviceStore contract, on every backend."""

from __future__ import annotations

import json

import pytest

from switchboard.devices import BadToken, UnknownPlatform, check_token, open_device_store
from switchboard.errors import InvalidId

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


@pytest.fixture(params=["memory", "sqlite"])
async def store(request, tmp_path):
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/devices.db"
    s = open_device_store(url)
    await s.open()
    yield s
    await s.close()


async def test_register_is_idempotent_and_ordered(store):
    a, b = "ab" * 32, "cd" * 32
    await store.register("alice", "apns", a)
    await store.register("alice", "fcm", "f" * 40)
    await store.register("alice", "apns", a.upper())  # same device, other spelling
    await store.register("alice", "webpush", sub())
    await store.register("bob", "apns", b)
    got = [(d.platform, d.token) for d in await store.tokens_of("alice")]
    assert got == [("apns", a), ("fcm", "f" * 40), ("webpush", check_token("webpush", sub()))]
    assert [d.token for d in await store.tokens_of("bob")] == [b]
    assert await store.tokens_of("nobody") == []


async def test_a_token_moves_to_its_new_user(store):
    await store.register("alice", "apns", "ab" * 32)
    await store.register("bob", "apns", "ab" * 32)  # the app logged in as bob on that phone
    assert await store.tokens_of("alice") == []
    assert [d.token for d in await store.tokens_of("bob")] == ["ab" * 32]


async def test_remove(store):
    await store.register("alice", "apns", "ab" * 32)
    await store.register("alice", "apns", "cd" * 32)
    await store.remove("apns", "ab" * 32)
    await store.remove("apns", "ef" * 32)  # unknown: no-op
    await store.remove("fcm", "cd" * 32)  # same token, other platform: not that device
    assert [d.token for d in await store.tokens_of("alice")] == ["cd" * 32]


@pytest.mark.parametrize("user", ["a.>", "", "x" * 65, "a b"])
async def test_register_rejects_bad_user_ids(store, user):
    with pytest.raises(InvalidId):
        await store.register(user, "apns", "ab" * 32)


async def test_bad_token_stores_nothing(store):
    with pytest.raises(BadToken):
        await store.register("alice", "apns", "nothex")
    assert await store.tokens_of("alice") == []
