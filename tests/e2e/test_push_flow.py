"""Push notifications end to end: a client registers its device over the
WebSocket (``push.register``), goes offline, a message to it becomes a PUSH
entry (the sequencer asks the presence tracker who is offline), and the pusher
role (configured by a push config TOML, as in production) sends it to a local
HTTP/2 fake of APNs / FCM / Web Push that checks JWTs, headers and payloads.

Real nats-server; sequencer, edge, presence tracker and pusher in-process; no
mocks besides the provider fakes (tests/fakes/).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sequencer.push import PREVIEW_CHARS
from switchboard import frames
from switchboard.config import PusherSettings
from switchboard.configload import load
from switchboard.devices import check_token
from tests.e2e.helpers import Events, PresenceChanges, kind, push_queue_len, unique, until
from tests.fakes.creds import make_creds
from tests.fakes.services import running_fakes
from tests.fakes.tls import make_cert


@dataclass
class Note:
    """What a fake received, the same for every platform."""

    key: str  # which device: the token (apns, fcm) or subscription id (webpush)
    title: str
    body: str
    badge: int | None
    conv: str
    seq: int


def notes(name: str, fake) -> list[Note]:
    out = []
    for r in fake.received:
        if name == "apns":
            aps = r.payload["aps"]
            out.append(Note(r.token, aps["alert"]["title"], aps["alert"]["body"], aps.get("badge"),
                            r.payload["conv"], r.payload["seq"]))
        elif name == "fcm":
            m = r.message
            out.append(Note(m["token"], m["notification"]["title"], m["notification"]["body"],
                            m["android"]["notification"].get("notification_count"), m["data"]["conv"],
                            int(m["data"]["seq"])))
        else:
            p = r.payload
            out.append(Note(r.subscription, p["title"], p["body"], p.get("badge"), p["conv"], p["seq"]))
    return out


@dataclass
class Plat:
    name: str
    fake: Any
    new: Callable[[], tuple[str, str]]  # -> (token to register, key the fake reports)

    def notes(self) -> list[Note]:
        return notes(self.name, self.fake)


@pytest.fixture(scope="module")
def material(tmp_path_factory):
    d = tmp_path_factory.mktemp("push-flow-creds")
    return make_cert(d), make_creds(d)


@pytest.fixture
async def fakes(material):
    async with running_fakes(*material) as fakes:
        yield fakes
    for f in fakes.values():
        assert f.problems == [], f"{type(f).__name__}: {f.problems}"  # JWTs, headers, sizes all checked out


def plat(name: str, fakes) -> Plat:
    if name == "apns":
        def new():
            t = uuid.uuid4().hex * 2
            return t, t
    elif name == "fcm":
        def new():
            t = "fcm:" + uuid.uuid4().hex * 3
            return t, t
    else:
        def new():
            sid, sub = fakes["webpush"].subscribe()
            return sub, sid
    return Plat(name, fakes[name], new)


def push_settings(path: Path, material, fakes) -> dict[str, Any]:
    """The [pusher] settings of these tests, written as an operator writes
    them (a TOML file, providers pointed at the local fakes) and read by the
    settings loader: the overrides for deploy()."""
    cert, creds = material
    q = json.dumps  # TOML basic strings are JSON-compatible for these values
    path.write_text(f"""
[pusher]
provider = "apns,fcm,webpush"
max_deliver = 3
backoff_base = 0.05
backoff_max = 1.0
ack_wait = 10.0
device_store = {q(f"sqlite:///{path.parent}/devices.db")}

[pusher.apns]
key_file = {q(creds.apns_key_file)}
key_id = {q(creds.apns_key_id)}
team_id = {q(creds.apns_team_id)}
topic = "com.example.chat"
base_url = {q(fakes["apns"].base_url)}
ca_file = {q(cert.cert_file)}

[pusher.fcm]
service_account_file = {q(creds.fcm_account_file)}
base_url = {q(fakes["fcm"].base_url)}
token_uri = {q(fakes["fcm"].token_uri)}
ca_file = {q(cert.cert_file)}

[pusher.webpush]
vapid_private_key_file = {q(creds.vapid_key_file)}
subject = "mailto:ops@example.com"
ca_file = {q(cert.cert_file)}
allowed_hosts = ["127.0.0.1"]
""")
    s = load(config_file=str(path), env={}).settings
    return {f.name: getattr(s, f.name) for f in dataclasses.fields(PusherSettings)}


@pytest.fixture
async def dep(deploy, tmp_path, material, fakes):
    push = push_settings(tmp_path / "push.toml", material, fakes)
    return await deploy(roles=("sequencer", "edge", "presence"), **push)


@contextlib.asynccontextmanager
async def pusher(dep):
    """The pusher role, started and stopped on its own (same deployment);
    yields its service, whose device store the tests read."""
    unit = await dep.start("pusher")
    try:
        yield unit.component("pusher")
    finally:
        await unit.stop()


async def register(dep, svc, user: str, platform: str, token: str) -> None:
    """Register over the WebSocket, wait until stored, then disconnect and
    wait until the tracker has announced the user offline."""
    async with PresenceChanges(dep.settings) as changes:
        c = await dep.sdk(user)
        await c.send_frame(frames.PushRegister(platform=platform, token=token))
        want = check_token(platform, token)

        async def stored() -> bool:
            return any(d.token == want for d in await svc.devices.tokens_of(user))

        await until(stored, what="device token stored")
        await c.close()
        await changes.wait(user, online=False)


async def work_queue_empty(dep) -> bool:
    return await push_queue_len(dep.settings) == 0


@pytest.mark.parametrize("name", ["apns", "fcm", "webpush"])
async def test_offline_recipient_is_notified_with_preview_and_badge(dep, fakes, name):
    p = plat(name, fakes)
    alice, bob = unique("alice"), unique("bob")
    token, key = p.new()
    async with pusher(dep) as svc:
        await register(dep, svc, bob, name, token)
        a = await dep.sdk(alice)
        await a.send(to=bob, body="see you at 6")
        long = "x" * (PREVIEW_CHARS * 3)
        sent = await a.send(to=bob, body=long)
        await until(lambda: any(n.seq == sent.seq for n in p.notes()), what="notification of seq 2")
    got = {n.seq: n for n in p.notes()}
    first, second = got[1], got[sent.seq]
    assert (first.key, first.conv, first.title, first.body) == (key, sent.conv, alice, "see you at 6")
    # the body is a preview, never the whole message
    assert second.body == long[: PREVIEW_CHARS - 1] + "…"
    # badge = unread count when it was sent: both messages were unread by then
    assert second.badge == 2 and first.badge in (1, 2)


async def test_online_recipient_gets_no_push(dep, fakes):
    p = plat("apns", fakes)
    alice, bob, carol = unique("alice"), unique("bob"), unique("carol")
    bob_token, bob_key = p.new()
    carol_token, carol_key = p.new()
    async with pusher(dep) as svc:
        await register(dep, svc, bob, "apns", bob_token)
        await register(dep, svc, carol, "apns", carol_token)
        async with PresenceChanges(dep.settings) as changes:
            b = await dep.sdk(bob)  # bob is back online
            await changes.wait(bob, online=True)
        a = await dep.sdk(alice)
        await a.send(to=bob, body="you are online")
        assert (await b.next_message(5)).body == "you are online"
        await a.send(to=carol, body="you are not")  # control: offline carol is notified
        await until(lambda: [n.key for n in p.notes()] == [carol_key], what="carol's notification")
    assert bob_key not in [n.key for n in p.notes()]


async def test_conversation_read_elsewhere_is_not_pushed(dep, fakes):
    """The entry waits in PUSH while no pusher runs; meanwhile the user reads
    the conversation on another device; the pusher, started afterwards, skips it."""
    p = plat("fcm", fakes)
    alice, bob = unique("alice"), unique("bob")
    token, key = p.new()
    async with pusher(dep) as svc:
        await register(dep, svc, bob, "fcm", token)
    a = await dep.sdk(alice)
    read_one = await a.send(to=bob, body="read me elsewhere")
    async with PresenceChanges(dep.settings) as changes:
        web = await dep.sdk(bob)  # bob's browser (no push device) reads it
        await web.send_frame(frames.Read(conv=read_one.conv, seq=read_one.seq))
        await Events(a).expect(kind("receipt", user=bob, read=read_one.seq))  # the read is applied
        await web.close()
        await changes.wait(bob, online=False)
    unread = await a.send(to=bob, body="not read yet")
    async with pusher(dep):
        await until(lambda: len(p.notes()) == 1, what="the unread message's notification")
        await until(lambda: work_queue_empty(dep), what="both entries handled")
    [n] = p.notes()
    assert (n.key, n.seq, n.body) == (key, unread.seq, "not read yet")
    assert n.badge == 1  # seq 1 was read: one unread message left


async def test_dead_token_is_removed(dep, fakes):
    apns, fcm = plat("apns", fakes), plat("fcm", fakes)
    alice, bob = unique("alice"), unique("bob")
    dead, dead_key = apns.new()
    alive, alive_key = fcm.new()
    apns.fake.dead.add(dead_key)  # APNs answers 410 Unregistered for it
    async with pusher(dep) as svc:
        await register(dep, svc, bob, "apns", dead)
        await register(dep, svc, bob, "fcm", alive)
        a = await dep.sdk(alice)
        await a.send(to=bob, body="anyone there?")
        await until(lambda: [n.key for n in fcm.notes()] == [alive_key], what="live device notified")

        async def removed() -> bool:
            return [(d.platform, d.token) for d in await svc.devices.tokens_of(bob)] == [("fcm", alive)]

        await until(removed, what="dead token removed")
    assert apns.notes() == []


async def test_badge_counts_only_messages_from_others(dep, fakes):
    """The badge is the user's unread count: messages of others not yet read
    (events.UnreadQuery). Bob's own message in the conversation is not unread
    for him, even though he never sends `read` for what he wrote himself."""
    p = plat("apns", fakes)
    alice, bob = unique("alice"), unique("bob")
    token, key = p.new()
    async with pusher(dep) as svc:
        b = await dep.sdk(bob)
        await b.send(to=alice, body="hi alice")  # bob's own message, seq 1
        await b.close()
        await register(dep, svc, bob, "apns", token)
        a = await dep.sdk(alice)
        reply = await a.send(to=bob, body="hi bob")  # seq 2: the only message bob has not read
        await until(lambda: any(n.seq == reply.seq for n in p.notes()), what="notification")
    [n] = p.notes()
    assert n.key == key
    assert n.badge == 1, f"badge {n.badge}: bob's own message counted as unread"


async def test_webpush_subscription_to_a_host_not_allowed_is_refused(dep, fakes):
    """A Web Push subscription is a URL the user chose; one pointing anywhere
    but an allowed push service (here: not the local fake) is refused at
    registration, so the pusher never POSTs to it."""
    p = plat("webpush", fakes)
    token, _ = p.new()
    sub = json.loads(token)
    sub["endpoint"] = "https://10.1.2.3/internal"
    bob = unique("bob")
    async with pusher(dep) as svc:
        c = await dep.sdk(bob)
        await c.send_frame(frames.PushRegister(platform="webpush", token=json.dumps(sub), id="r1"))
        err = await Events(c).expect(kind("error"))
        assert (err.code, err.ref, err.retry) == ("bad_token", "r1", False)
        assert await svc.devices.tokens_of(bob) == []


async def test_register_push_is_confirmed_with_ok(dep, fakes):
    """push.register with an id is answered `ok` once the token is stored
    (the SDK's register_push returns then), so a client can confirm it."""
    p = plat("fcm", fakes)
    token, _ = p.new()
    bob = unique("bob")
    async with pusher(dep) as svc:
        c = await dep.sdk(bob)
        ok = await c.register_push("fcm", token)
        assert isinstance(ok, frames.Ok)
        assert [d.token for d in await svc.devices.tokens_of(bob)] == [check_token("fcm", token)]
