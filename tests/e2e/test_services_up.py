"""Smoke test of the service fixtures: if these fail, every end-to-end test
would fail for an environment reason, and this says which service it is."""

from __future__ import annotations

import nats
import pytest

from sbctl.embedded import EmbeddedNats


async def test_nats_server_serves_jetstream(nats_server: EmbeddedNats) -> None:
    nc = await nats.connect(nats_server.url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        info = await nc.jetstream().account_info()
        assert info.limits is not None  # JetStream is enabled on this server
    finally:
        await nc.close()


async def test_make_nats_restart_keeps_url_and_data(make_nats) -> None:
    # Restart tests rely on a stopped server coming back at the same URL with
    # its JetStream data.
    server = make_nats()
    url = server.url
    nc = await nats.connect(url, max_reconnect_attempts=0)
    js = nc.jetstream()
    await js.add_stream(name="SMOKE", subjects=["smoke.>"])
    await js.publish("smoke.x", b"1")
    await nc.close()

    server.stop()
    server.start()
    assert server.url == url
    nc = await nats.connect(url, max_reconnect_attempts=0)
    try:
        assert (await nc.jetstream().stream_info("SMOKE")).state.messages == 1
    finally:
        await nc.close()


@pytest.mark.redis
async def test_redis_answers_ping(redis_url: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url)
    try:
        assert await client.ping() is True
    finally:
        await client.aclose()


@pytest.mark.redis
async def test_redis_outage_and_restart_same_url(redis_server, redis_clean: str) -> None:
    # Outage tests stop Redis and start it again; it must come back on the same URL.
    import redis.asyncio as aioredis

    url = redis_server.url
    redis_server.stop()
    assert not redis_server.ping()
    redis_server.start()
    assert redis_server.url == url
    client = aioredis.from_url(url)
    try:
        assert await client.ping() is True
    finally:
        await client.aclose()


@pytest.mark.redis
async def test_redis_leaves_a_key_behind(redis_url: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url)
    try:
        await client.set("leftover", "1")
        assert await client.get("leftover") == b"1"
    finally:
        await client.aclose()


@pytest.mark.redis
async def test_redis_clean_empties_the_database(redis_server, redis_clean: str) -> None:
    # Runs after the test above (file order): the key it left must be gone.
    assert redis_server.command(b"DBSIZE") == b":0"
