"""The DeviceStore contract, on every backend: memory, SQLite, Cassandra."""

from __future__ import annotations

import uuid

import pytest

from switchboard.devices import BadToken, check_token, open_device_store
from switchboard.errors import InvalidId
from tests.unit.test_push_devices import sub


@pytest.fixture(params=["memory", "sqlite", pytest.param("cassandra", marks=[pytest.mark.cassandra,
                                                                           pytest.mark.timeout(420)])])
async def store(request, tmp_path):
    if request.param == "cassandra":
        # A keyspace per test: the contract cases reuse the same tokens.
        base = request.getfixturevalue("cassandra_url")
        head, _, query = base.partition("?")
        url = f"{head.rsplit('/', 1)[0]}/sb_dev_{uuid.uuid4().hex[:8]}?{query}"
    else:
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
