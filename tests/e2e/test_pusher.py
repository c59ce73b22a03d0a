"""The pusher end to end: real nats-server (JetStream PUSH stream), the
service with real providers, and local HTTP/2 fakes of APNs / FCM / Web Push
that verify what they receive (JWT signatures, headers, decrypted payloads).

Each scenario runs for each platform: success, dead token, throttling,
server errors, and the dead-letter path.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
import nats
import pytest
import structlog.testing

from pusher.service import PusherService
from pusher.worker import PushDeadLetter
from sbctl.init import init_fabric
from switchboard.bus import streams
from switchboard.config import ApnsSettings, FcmSettings, Settings, WebPushSettings
from switchboard.devices import RegisterReply, check_token, token_hash
from switchboard.devices.memory import MemoryDeviceStore
from switchboard.events import PushEntry
from tests.e2e.helpers import until
from tests.fakes.apns import apns_error
from tests.fakes.creds import Creds, make_creds
from tests.fakes.fcm import fcm_error
from tests.fakes.h2server import Response
from tests.fakes.services import running_fakes
from tests.fakes.tls import Cert, make_cert

MAX_DELIVER = 3
_n = itertools.count()


# Deliveries go through provider retries with backoff: more room than STEP.
WAIT = 15.0


@dataclass
class Platform:
    """How one platform is exercised: its fake, a device token, and its documented error answers."""

    name: str
    fake: object
    new_token: Callable[[], str]
    throttled: Response  # 429 with Retry-After: 1
    server_error: Response
    permanent: Response  # a 4xx that no retry will fix
    dead_key: Callable[[str], str]  # registered token -> what the fake's `dead` set holds


@pytest.fixture(scope="module")
def material(tmp_path_factory) -> tuple[Cert, Creds]:
    d = tmp_path_factory.mktemp("push-creds")
    return make_cert(d), make_creds(d)


@pytest.fixture
async def fakes(material):
    async with running_fakes(*material) as fakes:
        yield fakes


def platform(name: str, fakes: dict) -> Platform:
    retry1 = {"retry-after": "1"}
    if name == "apns":
        return Platform(name, fakes[name], lambda: uuid.uuid4().hex + uuid.uuid4().hex,
                        apns_error(429, "TooManyRequests", retry1), apns_error(503, "ServiceUnavailable"),
                        apns_error(400, "BadCollapseId"), lambda t: t)
    if name == "fcm":
        return Platform(name, fakes[name], lambda: "fcm:" + uuid.uuid4().hex * 3,
                        fcm_error(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", retry1),
                        fcm_error(503, "UNAVAILABLE", "UNAVAILABLE"),
                        fcm_error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT"), lambda t: t)
    web = fakes[name]
    return Platform(name, web, lambda: web.subscribe()[1], Response(429, headers=retry1), Response(503),
                    Response(400), lambda t: json.loads(t)["endpoint"].rsplit("/", 1)[1])


class Harness:
    def __init__(self, nats_url: str, material, fakes, **service_kw) -> None:
        cert, creds = material
        n = next(_n)
        self.settings = Settings(
            nats_url=nats_url, subject_prefix=f"pt{n}", stream_prefix=f"PT{n}_", push_provider="apns,fcm,webpush",
            # backoff_base small so retries take tenths of a second, not seconds
            push_max_deliver=MAX_DELIVER, push_backoff_base=0.05, push_backoff_max=1.0, push_ack_wait=10.0,
            push_device_store="memory://",
            push_apns=ApnsSettings(key_file=creds.apns_key_file, key_id=creds.apns_key_id, team_id=creds.apns_team_id,
                                   topic="com.example.chat", base_url=fakes["apns"].base_url, ca_file=cert.cert_file),
            push_fcm=FcmSettings(service_account_file=creds.fcm_account_file, base_url=fakes["fcm"].base_url,
                                 token_uri=fakes["fcm"].token_uri, ca_file=cert.cert_file),
            push_webpush=WebPushSettings(vapid_private_key_file=creds.vapid_key_file, subject="mailto:ops@example.com",
                                         ca_file=cert.cert_file, allowed_hosts=("127.0.0.1",)))
        self.devices = MemoryDeviceStore()
        self.service = PusherService(settings=self.settings, devices=self.devices, **service_kw)
        self.dlq: list[PushDeadLetter] = []

    async def __aenter__(self) -> Harness:
        self.nc = await nats.connect(self.settings.nats_url)
        self.js = self.nc.jetstream()
        await init_fabric(self.nc, self.settings)  # switchboard init's job
        await self.service.start()

        async def on_dlq(msg):
            self.dlq.append(msgspec.json.decode(msg.data, type=PushDeadLetter))

        await self.nc.subscribe(self.settings.subjects.dead_letter("push"), cb=on_dlq)
        await self.nc.flush()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.nc.drain()
        await self.service.stop()

    async def publish(self, user: str, *, conv: str = "c1", seq: int = 1, body: str = "hello") -> PushEntry:
        entry = PushEntry(user=user, conv=conv, seq=seq, id=f"m{seq}", sender="bob", body=body, ts=1, title="Bob")
        await self.js.publish(self.settings.subjects.push(user), msgspec.json.encode(entry))
        return entry

    async def drained(self) -> bool:
        """Every entry acked or terminated: the work queue is empty."""
        info = await self.js.stream_info(streams.names(self.settings)[2])
        return info.state.messages == 0


@pytest.fixture(params=["apns", "fcm", "webpush"])
def plat(request, fakes) -> Platform:
    return platform(request.param, fakes)


async def test_success_payload_and_auth(nats_server, material, fakes, plat):
    async with Harness(nats_server.url, material, fakes, unread_count=lambda user: 7) as h:
        token = plat.new_token()
        await h.devices.register("alice", plat.name, token)
        await h.publish("alice", conv="c42", seq=5, body="see you at 6")
        await until(lambda: len(plat.fake.received) == 1, WAIT)
        await until(h.drained, WAIT)  # acked: gone from the work queue
        got = plat.fake.received[0]
        assert plat.fake.problems == []  # signatures, headers and payload checked out
        if plat.name == "apns":
            assert got.payload["aps"]["alert"] == {"title": "Bob", "body": "see you at 6"}
            assert got.payload["aps"]["badge"] == 7 and got.payload["aps"]["thread-id"] == "c42"
            assert (got.payload["conv"], got.payload["seq"]) == ("c42", 5)
            assert got.headers["apns-collapse-id"] == "c42" and got.headers["apns-priority"] == "10"
            assert got.jwt_claims["iss"] == h.settings.push_apns.team_id
        elif plat.name == "fcm":
            assert got.message["notification"] == {"title": "Bob", "body": "see you at 6"}
            assert got.message["data"] == {"conv": "c42", "seq": "5", "id": "m5"}
            assert got.message["android"]["notification"]["notification_count"] == 7
            assert plat.fake.assertions[0]["scope"] == "https://www.googleapis.com/auth/firebase.messaging"
        else:
            assert got.payload == {"title": "Bob", "body": "see you at 6", "conv": "c42", "seq": 5, "id": "m5",
                                   "badge": 7}
            assert got.headers["urgency"] == "high" and got.headers["ttl"] == "86400"
        assert h.dlq == []


async def test_dead_token_is_removed(nats_server, material, fakes, plat):
    with structlog.testing.capture_logs() as logs:
        async with Harness(nats_server.url, material, fakes) as h:
            dead, alive = plat.new_token(), plat.new_token()
            await h.devices.register("alice", plat.name, dead)
            await h.devices.register("alice", plat.name, alive)
            plat.fake.dead.add(plat.dead_key(dead))
            await h.publish("alice")
            await until(h.drained, WAIT)
            assert [d.token for d in await h.devices.tokens_of("alice")] == [check_token(plat.name, alive)]
            assert len(plat.fake.received) == 1  # the live device still got it
            assert h.dlq == [] and plat.fake.problems == []
    # the removal is logged with a hash of the token, never the token itself
    removed = [e["device"] for e in logs if e["event"] == "push.token_removed"]
    assert removed == [token_hash(check_token(plat.name, dead))]
    assert not any(plat.dead_key(dead) in str(v) for e in logs for v in e.values())


async def test_throttled_then_delivered_once_after_retry_after(nats_server, material, fakes, plat):
    async with Harness(nats_server.url, material, fakes) as h:
        await h.devices.register("alice", plat.name, plat.new_token())
        plat.fake.script = [plat.throttled]
        start = time.monotonic()
        await h.publish("alice")
        await until(lambda: len(plat.fake.received) == 1, WAIT)
        # Retry-After: 1 was honoured (the backoff alone would be ~0.05 s)
        assert time.monotonic() - start >= 0.9
        await until(h.drained, WAIT)
        await asyncio.sleep(0.3)
        assert len(plat.fake.received) == 1 and h.dlq == []


async def test_server_errors_retried_then_delivered(nats_server, material, fakes, plat):
    async with Harness(nats_server.url, material, fakes) as h:
        await h.devices.register("alice", plat.name, plat.new_token())
        plat.fake.script = [plat.server_error] * (MAX_DELIVER - 1)
        await h.publish("alice")
        await until(lambda: len(plat.fake.received) == 1, WAIT)
        await until(h.drained, WAIT)
        assert h.dlq == [] and plat.fake.script == []


async def test_persistent_errors_go_to_dead_letter_after_max_deliver(nats_server, material, fakes, plat):
    async with Harness(nats_server.url, material, fakes) as h:
        await h.devices.register("alice", plat.name, plat.new_token())
        plat.fake.script = [plat.server_error] * (MAX_DELIVER + 2)
        entry = await h.publish("alice", seq=9)
        await until(lambda: len(h.dlq) == 1, WAIT)
        letter = h.dlq[0]
        assert letter.entry == entry and letter.deliveries == MAX_DELIVER
        assert "gave up after 3 deliveries" in letter.reason
        await until(h.drained, WAIT)  # terminated, not left in the queue
        assert len(plat.fake.script) == 2  # exactly MAX_DELIVER attempts were made
        assert plat.fake.received == []


async def test_permanent_error_goes_to_dead_letter_at_once(nats_server, material, fakes, plat):
    async with Harness(nats_server.url, material, fakes) as h:
        await h.devices.register("alice", plat.name, plat.new_token())
        plat.fake.script = [plat.permanent, plat.permanent]
        await h.publish("alice")
        await until(lambda: len(h.dlq) == 1, WAIT)
        assert h.dlq[0].deliveries == 1 and "failed" in h.dlq[0].reason
        assert len(plat.fake.script) == 1  # not retried: a 400 will not get better
        await until(h.drained, WAIT)


async def test_partial_progress_not_resent(nats_server, material, fakes):
    """Two devices, one throttled: the one that accepted is not sent to again on the redelivery."""
    async with Harness(nats_server.url, material, fakes) as h:
        apns, fcm = platform("apns", fakes), platform("fcm", fakes)
        await h.devices.register("alice", "apns", apns.new_token())
        await h.devices.register("alice", "fcm", fcm.new_token())
        fcm.fake.script = [fcm.server_error]
        await h.publish("alice")
        await until(lambda: len(fcm.fake.received) == 1, WAIT)
        await until(h.drained, WAIT)
        assert len(apns.fake.received) == 1


async def test_already_read_is_skipped(nats_server, material, fakes):
    async def read_upto(user: str, conv: str) -> int:
        return 5 if (user, conv) == ("alice", "c1") else 0

    async with Harness(nats_server.url, material, fakes, read_upto=read_upto) as h:
        apns = platform("apns", fakes)
        await h.devices.register("alice", "apns", apns.new_token())
        await h.publish("alice", conv="c1", seq=5)  # read on another device: skipped
        await h.publish("alice", conv="c1", seq=6)  # newer than what was read: sent
        await until(h.drained, WAIT)
        await until(lambda: len(apns.fake.received) == 1, WAIT)
        assert apns.fake.received[0].payload["seq"] == 6


@pytest.mark.parametrize("platform_name, token, code", [
    ("sms", "x" * 64, "unknown_platform"),
    ("apns", "not-hex", "bad_token"),
    ("fcm", "short", "bad_token"),
    ("webpush", '{"endpoint":"http://insecure.example/x","keys":{}}', "bad_token"),
    ("webpush", "not json", "bad_token"),
])
async def test_register_endpoint_rejects_bad_input(nats_server, material, fakes, platform_name, token, code):
    async with Harness(nats_server.url, material, fakes) as h:
        req = {"user": "alice", "platform": platform_name, "token": token}
        msg = await h.nc.request(h.settings.subjects.api("push", "register"), json.dumps(req).encode(), timeout=5)
        reply = msgspec.json.decode(msg.data, type=RegisterReply)
        assert not reply.ok and reply.error.code == code
        assert await h.devices.tokens_of("alice") == []  # nothing stored


async def test_register_endpoint_stores_and_is_idempotent(nats_server, material, fakes):
    async with Harness(nats_server.url, material, fakes) as h:
        token = "AB" * 32
        for _ in range(2):
            req = {"user": "alice", "platform": "apns", "token": token}
            msg = await h.nc.request(h.settings.subjects.api("push", "register"), json.dumps(req).encode(), timeout=5)
            assert msgspec.json.decode(msg.data, type=RegisterReply).ok
        assert [(d.platform, d.token) for d in await h.devices.tokens_of("alice")] == [("apns", token.lower())]
        bad = {"user": "a.>", "platform": "apns", "token": token}  # a wildcard must never be a user id
        msg = await h.nc.request(h.settings.subjects.api("push", "register"), json.dumps(bad).encode(), timeout=5)
        assert msgspec.json.decode(msg.data, type=RegisterReply).error.code == "invalid_id"


async def test_log_provider_acks_without_network(nats_server, tmp_path):
    n = next(_n)
    settings = Settings(nats_url=nats_server.url, subject_prefix=f"pt{n}", stream_prefix=f"PT{n}_",
                        data_dir=str(tmp_path))  # the device store: SQLite in data_dir
    admin = await nats.connect(settings.nats_url)
    await init_fabric(admin, settings)  # switchboard init's job
    await admin.close()
    async with PusherService(settings=settings) as svc:
        assert svc.settings.push_device_store == f"sqlite:///{tmp_path}/devices.db"
        await svc.devices.register("alice", "apns", "ab" * 32)
        nc = await nats.connect(settings.nats_url)
        js = nc.jetstream()
        entry = PushEntry(user="alice", conv="c1", seq=1, id="m1", sender="bob", body="hi", ts=1)
        await js.publish(settings.subjects.push("alice"), msgspec.json.encode(entry))

        async def empty() -> bool:
            return (await js.stream_info(streams.names(settings)[2])).state.messages == 0

        await until(empty, WAIT)
        await nc.drain()


async def test_undecodable_entry_is_dead_lettered(nats_server, material, fakes):
    async with Harness(nats_server.url, material, fakes) as h:
        await h.js.publish(h.settings.subjects.push("alice"), b'{"user": "alice"}')  # not a PushEntry
        got = await h.nc.subscribe(h.settings.subjects.dead_letter("push"))
        await h.nc.flush()
        msg = await got.next_msg(timeout=10)
        assert msg.headers["Sb-Dlq-Reason"] == "undecodable entry" and msg.data == b'{"user": "alice"}'
        await until(h.drained, WAIT)


async def test_stop_returns_when_nats_server_is_gone(make_nats, tmp_path):
    """nats-py turns the cancel of a pending fetch into its own TimeoutError,
    which the consume loop took for an empty fetch and looped on: with the
    server gone, stop() never returned and a stopped `up` left the process
    behind. Now it returns within the fetch timeout."""
    srv = make_nats()
    settings = Settings(nats_url=srv.url, subject_prefix="pstop", stream_prefix="PSTOP_", push_provider="log",
                        push_device_store="memory://")
    nc = await nats.connect(srv.url)
    await init_fabric(nc, settings)  # switchboard init's job
    await nc.close()
    service = PusherService(settings=settings, devices=MemoryDeviceStore())
    await service.start()
    await asyncio.sleep(0.2)  # a fetch is pending
    srv.kill()
    t0 = time.monotonic()
    await asyncio.wait_for(service.stop(), 10)
    assert time.monotonic() - t0 < 5
