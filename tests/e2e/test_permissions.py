"""The committed NATS accounts (nats/accounts.conf) under a real deployment.

One nats-server runs ``nats/single.conf`` (port, monitoring port and store dir
overridden by flags); ``python -m sbctl init`` creates the streams,
consumers and KV bucket as the ``admin`` user, then each role runs as its own
``python -m sbctl <role>`` process that logs in as its own NATS user. A
client then uses every feature through the SDK, so a permission the services
need but the accounts lack fails here, not in production. Then the
restrictions that matter are checked, table-driven, with each role's real
credentials: nobody but the server's republish may publish a user's live
subject, each event kind only by its role, no role may manage JetStream
(purge, delete, create streams or consumers) or read what is not its own
(other mailboxes, another role's consumer), the ``operator`` user can read
JetStream state but cannot send.

A denied publish or subscribe is observed the way nats-py reports it: the
server answers ``-ERR 'Permissions Violation ...'``, which reaches the
connection's ``error_cb`` (the connection stays open).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import nats
import nats.errors
import pytest

from sbctl.embedded import free_port, nats_server_binary
from switchboard import frames
from switchboard.bus import streams
from switchboard.config import Settings
from switchboard.events import SendReply, SendRequest
from switchboard.subjects import partition_of
from switchboard_client import Client
from tests.e2e.helpers import PYTHON, REPO, STEP, Events, settings_env, until

if TYPE_CHECKING:
    from tests.e2e.conftest import Deployment

ROLES = ("edge", "sequencer", "archiver", "presence", "pusher")
USERS = ROLES + ("service", "operator", "admin", "sys")
PASSWORDS = {u: f"pw-{u}-{secrets.token_hex(4)}" for u in USERS}
SECRET = secrets.token_urlsafe(32)
# Who may publish each ephemeral event kind (sb.user.<uid>.ev.<kind>).
EVENT_OWNERS = {"typing": "edge", "presence": "presence", "receipt": "sequencer", "conv": "sequencer"}
# Issue 12: the roles that record hops of traced messages (sb.trace.<conv>.<sender>.<id>).
TRACE_WRITERS = ("edge", "sequencer", "archiver", "pusher")
TRACE_SUBJECT = "sb.trace.c1.alice.m1"


def password_env() -> dict[str, str]:
    """The SB_<ROLE>_PASSWORD variables that accounts.conf expands."""
    return {f"SB_{u.upper()}_PASSWORD": pw for u, pw in PASSWORDS.items()}


class Server:
    def __init__(self, base: Path) -> None:
        self.port, self.http_port = free_port(), free_port()
        # -p and -m override single.conf's listen/http ports. -sd cannot:
        # nats-server 2.15 rejects it next to the file's store_dir ("Duplicate
        # 'store_dir' configuration"), so the relative "./data/jetstream" is
        # placed by the working directory instead.
        self.store_dir = base / "data" / "jetstream"
        self.log = base / "nats-server.log"
        args = [nats_server_binary(), "-c", str(REPO / "nats" / "single.conf"), "-p", str(self.port),
                "-m", str(self.http_port), "-l", str(self.log)]
        self.p = subprocess.Popen(args, cwd=base, env={**os.environ, **password_env()}, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def url(self, user: str) -> str:
        return f"nats://{user}:{PASSWORDS[user]}@127.0.0.1:{self.port}"

    async def wait(self, timeout: float = 20.0) -> None:
        """Until it accepts connections; fails at once if it exited."""

        def listening() -> bool:
            if self.p.poll() is not None:
                tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
                raise AssertionError(f"nats-server exited with {self.p.returncode}: {tail}")
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True

        await until(listening, timeout, "nats-server to listen", every=0.05, ignore=(OSError,))

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


@pytest.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    s = Server(tmp_path_factory.mktemp("perm-nats"))
    try:
        await s.wait()
        yield s
    finally:
        s.stop()


def role_flags(role: str, tmp: Path, *, port: int) -> list[str]:
    """The flags of ``switchboard <role>`` beyond --nats/--data: each role
    command takes only the flags it reads (sbctl/cli.py)."""
    return {"edge": ["--port", str(port), "--host", "127.0.0.1"],
            "sequencer": ["--store", f"sqlite:///{tmp}/sb.db"], "archiver": ["--store", f"sqlite:///{tmp}/sb.db"],
            "presence": ["--presence", "memory://"], "pusher": []}[role]


@pytest.fixture(scope="module")
async def deployment(server: Server, deploy_module) -> Deployment:
    """`switchboard init` as the admin user, then every role in its own
    process, each logged in as its own NATS user (default prefixes: the
    accounts are written for them)."""
    d = await deploy_module(roles=(), mode="processes", init=False, nats_url=server.url("admin"),
                            subject_prefix="sb", stream_prefix="", jwt_secret=SECRET)
    init = subprocess.run([PYTHON, "-m", "sbctl", "init", "--nats", server.url("admin")], cwd=REPO,
                          env=settings_env(d.settings), capture_output=True, text=True, timeout=60)
    assert init.returncode == 0, init.stdout + init.stderr
    assert "ok: consumer MESSAGES/archiver" in init.stdout and "ok: kv bucket sb_partitions" in init.stdout
    # No role may create streams, consumers or the KV bucket: init made them; roles only check they exist.
    await asyncio.gather(*(d.start(role, nats_url=server.url(role)) for role in ROLES))
    return d


@contextlib.asynccontextmanager
async def clients(d: Deployment, *users: str) -> AsyncIterator[list[Client]]:
    made = [await d.sdk(u, connect=False, request_timeout=STEP) for u in users]
    try:
        for c in made:
            await c.connect(timeout=STEP)
        yield made
    finally:
        for c in made:
            with contextlib.suppress(Exception):
                await c.close()


def uid(name: str) -> str:
    return f"{name}{uuid.uuid4().hex[:6]}"


async def next_event(c: Client, kind: type, timeout: float = STEP, **match: object):
    """The client's next event frame of type ``kind`` (with those fields)."""
    return await Events(c).expect(lambda ev: isinstance(ev, kind)
                                  and all(getattr(ev, k) == v for k, v in match.items()), timeout)


# ---------------------------------------------------------------- everything works under per-role users


async def test_direct_message_is_delivered(deployment: Deployment) -> None:
    a, b = uid("alice"), uid("bob")
    async with clients(deployment, a, b) as (ca, cb):
        sent = await ca.send(to=b, body="hello under accounts")
        m = await cb.next_message(STEP)
        assert (m.conv, m.seq, m.body, m.from_) == (sent.conv, sent.seq, "hello under accounts", a)


async def test_group_history_receipts_typing(deployment: Deployment) -> None:
    a, b, c = uid("alice"), uid("bob"), uid("carol")
    async with clients(deployment, a, b, c) as (ca, cb, cc):
        conv = await ca.create_conversation([b, c], title="perm")
        assert sorted(conv.members) == sorted([a, b, c])
        sent = await ca.send(conv=conv.conv, body="to the group")
        for rcpt in (cb, cc):
            m = await rcpt.next_message(STEP)
            assert (m.conv, m.seq) == (conv.conv, sent.seq)

        # history: archiver endpoint (and its direct get on MESSAGES)
        page = await ca.history(conv.conv)
        assert [m.body for m in page.messages] == ["to the group"]

        # receipts: bob's auto-ack makes "delivered", his read frame "read"
        await cb.send_frame(frames.Read(conv=conv.conv, seq=sent.seq))
        r = await next_event(ca, frames.Receipt, user=b, read=sent.seq)
        assert r.conv == conv.conv

        # typing: published by the edge on members' live subjects
        await cc.send_frame(frames.Typing(conv=conv.conv))
        t = await next_event(ca, frames.TypingEvent, user=c)
        assert t.conv == conv.conv


async def test_conversation_list(deployment: Deployment) -> None:
    """conv.list: the sequencer reads the last message of each conversation
    with a batch direct get on MESSAGES (its user needs DIRECT.GET there)."""
    a, b = uid("alice"), uid("bob")
    async with clients(deployment, a) as (ca,):
        sent = await ca.send(to=b, body="listed")
        (entry,) = await ca.list_conversations()
        assert (entry.conv, entry.last_seq, entry.read, entry.last.body) == (sent.conv, sent.seq, sent.seq, "listed")


async def test_presence_watch_and_change(deployment: Deployment) -> None:
    a, b = uid("alice"), uid("bob")
    async with clients(deployment, a) as (ca,):
        # presence is shared with conversation members only: the edge asks the
        # sequencer (sb.api.conv.contacts) before it asks the tracker
        await ca.create_conversation([b])
        await ca.send_frame(frames.PresenceWatch(users=[b]))
        p = await next_event(ca, frames.Presence, user=b)
        assert p.online is False
        async with clients(deployment, b):
            # the change travels tracker -> sb.presence.changed / live -> alice's edge
            p = await next_event(ca, frames.Presence, user=b, online=True)


async def test_push_register_and_push_for_offline_user(deployment: Deployment) -> None:
    a, d = uid("alice"), uid("dave")
    async with clients(deployment, d) as (cd,):
        await cd.send_frame(frames.PushRegister(platform="fcm", token="f" * 40, id="reg1"))
        # no answer frame on success; an error frame would carry ref "reg1"
        await Events(cd).nothing(lambda ev: isinstance(ev, frames.Error), wait=1.0)
    async with clients(deployment, a) as (ca,):
        sent = await ca.send(to=d, body="are you there")
    pusher = deployment.unit("pusher")
    await pusher.wait_output("push.would_send", STEP)
    assert sent.conv in pusher.output()


async def test_service_sends_a_system_message(deployment: Deployment, server: Server) -> None:
    a, b = uid("alice"), uid("bob")
    async with clients(deployment, a, b) as (ca, cb):
        conv = await ca.create_conversation([b], title="sys")
        nc = await nats.connect(server.url("service"), max_reconnect_attempts=0)
        try:
            req = SendRequest(sender="system", id=uid("sys"), conv=conv.conv, body="maintenance at 5", kind="system")
            msg = await nc.request("sb.api.system.send", msgspec.json.encode(req), timeout=STEP)
            reply = msgspec.json.decode(msg.data, type=SendReply)
            assert reply.error is None and reply.seq == 1
        finally:
            await nc.close()
        for c in (ca, cb):
            m = await c.next_message(STEP)
            assert (m.conv, m.seq, m.body) == (conv.conv, 1, "maintenance at 5")


async def test_edge_send_subject_carries_user_messages_only(deployment: Deployment, server: Server) -> None:
    """Issue 8 item 1: the ``edge`` NATS user sends on ``sb.send.<P>.<conv>``,
    where the sequencer forces kind=user whatever the payload says, and the
    membership check applies to the sender the edge claims. (A system message
    needs ``sb.api.system.send``, denied to the edge: DENIED_PUBLISH.)"""
    a, b, outsider = uid("alice"), uid("bob"), uid("mallory")
    partitions = Settings().partitions
    async with clients(deployment, a, b) as (ca, cb):
        conv = await ca.create_conversation([b], title="kind")
        subject = f"sb.send.{partition_of(conv.conv, partitions)}.{conv.conv}"
        nc = await nats.connect(server.url("edge"), max_reconnect_attempts=0)
        try:
            forged = SendRequest(sender=a, id=uid("m"), conv=conv.conv, body="pretend system", kind="system")
            reply = msgspec.json.decode((await nc.request(subject, msgspec.json.encode(forged), timeout=STEP)).data,
                                        type=SendReply)
            assert reply.error is None and reply.seq == 1, reply
            stranger = SendRequest(sender=outsider, id=uid("m"), conv=conv.conv, body="let me in", kind="system")
            reply = msgspec.json.decode((await nc.request(subject, msgspec.json.encode(stranger), timeout=STEP)).data,
                                        type=SendReply)
            assert reply.error is not None and reply.error.code == "not_member", reply
        finally:
            await nc.close()
        m = await cb.next_message(STEP)
        assert (m.conv, m.seq, m.from_, m.kind, m.body) == (conv.conv, 1, a, "user", "pretend system")
        page = await cb.history(conv.conv)
        assert [(x.seq, x.kind, x.from_) for x in page.messages] == [(1, "user", a)]


@pytest.mark.parametrize("role", TRACE_WRITERS)
async def test_recording_roles_may_publish_trace_records(server: Server, role: str) -> None:
    async with watched(server, role) as w:
        await w.nc.publish(TRACE_SUBJECT, b"{}")
        await w.nc.flush()
        await asyncio.sleep(0.3)
        assert not [e for e in w.errors if "violation" in e.lower()], w.errors


async def test_traced_message_is_recorded_by_every_role_under_accounts(deployment: Deployment,
                                                                      server: Server) -> None:
    """Issue 12 under the committed accounts, each role its own process and
    NATS user: a traced message to an offline user with a push device gets
    the hops of the edge, the sequencer, the pusher and the archiver into
    SB_TRACE (a denied publish would be silently missing here, and logged
    for test_no_role_hit_a_permission_violation). Admin reads them; the
    sequencer may read SB_TRACE for its trace endpoint."""
    from switchboard.trace import decode_record

    a, d = uid("alice"), uid("dave")
    async with clients(deployment, d) as (cd,):
        await cd.register_push("fcm", "f" * 40)
    await asyncio.sleep(0.5)  # dave's going offline reaches the sequencer's presence view
    mid = uid("m")
    async with clients(deployment, a) as (ca,):
        sent = await ca.send(to=d, body="traced under accounts", id=mid, trace=True)
    want = {"edge.received", "sequencer.stored", "sequencer.fanout", "push.enqueued", "push.sent",
            "archiver.stored"}
    got: dict[str, str] = {}
    async with watched(server, "admin") as w:
        sub = await w.nc.jetstream(timeout=STEP).subscribe(f"sb.trace.{sent.conv}.{a}.{mid}", ordered_consumer=True)
        async def recorded() -> bool:
            with contextlib.suppress(nats.errors.TimeoutError):
                r = decode_record((await sub.next_msg(timeout=0.5)).data)
                got[r.stage] = r.role
            return want <= set(got)

        await until(recorded, STEP, lambda: f"stages {sorted(want)}; got {got}; pusher: "
                                            f"{deployment.unit('pusher').output()[-3000:]}", every=0)
        assert {got[s] for s in want} == set(TRACE_WRITERS)
        assert not [e for e in w.errors if "violation" in e.lower()], w.errors
    async with watched(server, "sequencer") as w:
        reply = await w.nc.request("$JS.API.DIRECT.GET.SB_TRACE",
                                   json.dumps({"next_by_subj": f"sb.trace.{sent.conv}.{a}.{mid}"}).encode(),
                                   timeout=STEP)
        assert decode_record(reply.data).id == mid
        assert not w.errors


def _edge_dropped(d: Deployment, subject_kind: str) -> float:
    """switchboard_edge_bus_frames_dropped_total{subject=...} of the edge."""
    import httpx

    page = httpx.get(f"http://127.0.0.1:{d.port}/metrics", timeout=STEP).text
    needle = f'switchboard_edge_bus_frames_dropped_total{{subject="{subject_kind}"}} '
    return float(next(ln for ln in page.splitlines() if ln.startswith(needle)).split()[-1])


FORGED_MSG = {"type": "msg", "conv": "c1", "seq": 999, "id": "forged", "from": "alice", "body": "never stored"}
# One frame of each event kind, all naming "marker" (the legitimate one a test publishes last).
EVENT_FRAMES = {
    "typing": {"type": "typing", "conv": "c1", "user": "marker"},
    "presence": {"type": "presence", "user": "marker", "online": True},
    "receipt": {"type": "receipt", "conv": "c1", "user": "marker", "delivered": 1, "read": 0},
    "conv": {"type": "conv", "conv": "c1", "members": ["marker"]},
}
OWN_EVENTS = [(owner, kind) for kind, owner in EVENT_OWNERS.items()]


@pytest.mark.parametrize("role,kind", OWN_EVENTS, ids=[f"{r}-{k}" for r, k in OWN_EVENTS])
async def test_roles_cannot_push_forged_messages_to_sockets(deployment: Deployment, server: Server, role: str,
                                                            kind: str) -> None:
    """Issue 8 item 2: a role with credentials to publish one event kind can
    put only that kind of frame in front of a user. A never-stored ``msg``
    frame on the user's live subject is refused by the server (only INBOX's
    republish may use it); on the role's own event subject, a ``msg``,
    another kind, a frame whose ``type`` key is repeated (escaped: JSON
    parsers keep the last one) or junk is dropped by the edge and counted;
    the legitimate frame published after them arrives, alone."""
    victim = uid("victim")
    raw = await deployment.raw(victim)
    try:
        dropped_before = _edge_dropped(deployment, "event")
        before = len(raw.frames)
        async with watched(server, role) as w:
            forged = json.dumps(FORGED_MSG).encode()
            await w.nc.publish(f"sb.user.{victim}.live", forged, headers={"Nats-Sequence": "999999"})
            await w.nc.flush()
            await w.violation(f"sb.user.{victim}.live")
            other = "typing" if kind != "typing" else "presence"
            twice = (json.dumps(EVENT_FRAMES[kind])[:-1] + ', "\\u0074ype": "msg", "seq": 998, "id": "f2", '
                     '"from": "alice", "body": "b"}').encode()
            bad = [forged, json.dumps(EVENT_FRAMES[other]).encode(), twice, b"not json"]
            subject = f"sb.user.{victim}.ev.{kind}"
            for data in bad:
                await w.nc.publish(subject, data)
            await w.nc.publish(subject, json.dumps(EVENT_FRAMES[kind]).encode())
            await w.nc.flush()
            assert not [e for e in w.errors if "violation" in e.lower() and "ev." in e], w.errors
            got = await raw.expect(kind, user="marker") if kind != "conv" else await raw.expect("conv", conv="c1")
        await asyncio.sleep(0.3)
        assert raw.frames[before:] == [got], raw.frames[before:]
        await until(lambda: _edge_dropped(deployment, "event") >= dropped_before + len(bad), STEP,
                    lambda: f"{len(bad)} dropped frames counted: {_edge_dropped(deployment, 'event') - dropped_before}")
    finally:
        await raw.close()


# ---------------------------------------------------------------- what each user must NOT do


class Watched:
    """A NATS connection that records the permission violations the server reports."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.nc: nats.NATS | None = None

    async def connect(self, url: str) -> Watched:
        async def on_error(exc: Exception) -> None:
            self.errors.append(str(exc))

        self.nc = await nats.connect(url, error_cb=on_error, max_reconnect_attempts=0, allow_reconnect=False)
        return self

    async def violation(self, what: str, timeout: float = 3.0) -> str:
        [e] = await until(lambda: [e for e in self.errors
                                   if "permissions violation" in e.lower() and what.lower() in e.lower()][:1],
                          timeout, lambda: f"a permissions violation for {what!r}; errors: {self.errors}")
        return e

    async def close(self) -> None:
        if self.nc is not None:
            await self.nc.close()


@contextlib.asynccontextmanager
async def watched(server: Server, user: str) -> AsyncIterator[Watched]:
    w = await Watched().connect(server.url(user))
    try:
        yield w
    finally:
        await w.close()


# Managing JetStream: what `switchboard init` does, and worse. Before item 3
# the archiver, pusher and sequencer held `$JS.API.>`: any of them could
# purge INBOX, delete a stream, or create a consumer on INBOX and read every
# mailbox.
JS_MANAGEMENT = [
    "$JS.API.STREAM.CREATE.EVIL",
    "$JS.API.STREAM.UPDATE.INBOX",
    "$JS.API.STREAM.DELETE.MESSAGES",
    "$JS.API.STREAM.PURGE.INBOX",
    "$JS.API.STREAM.MSG.DELETE.INBOX",
    "$JS.API.CONSUMER.CREATE.INBOX",  # an ephemeral consumer: every mailbox
    "$JS.API.CONSUMER.CREATE.INBOX.peek.sb.user.victim.inbox",
    "$JS.API.CONSUMER.DURABLE.CREATE.INBOX.peek",
    "$JS.API.CONSUMER.CREATE.MESSAGES.archiver",  # changing a role's consumer
    "$JS.API.CONSUMER.DELETE.PUSH.sb-pusher",
    "$JS.API.STREAM.CREATE.KV_sb_partitions",
]
# Reads and consumers with their only users (the edge reads mailboxes for
# catch-up; each consumer is its role's; partition leases are the sequencers').
JS_READS = {
    "$JS.API.DIRECT.GET.INBOX": ("edge",),
    "$JS.API.STREAM.MSG.GET.INBOX": (),
    # the sequencer: last messages of many conversations at once (conv.list,
    # resync ranges); it reads MESSAGES by STREAM.MSG.GET already
    "$JS.API.DIRECT.GET.MESSAGES": ("archiver", "sequencer"),
    "$JS.API.CONSUMER.MSG.NEXT.MESSAGES.archiver": ("archiver",),
    "$JS.ACK.MESSAGES.archiver.1.1.1.1.0": ("archiver",),
    "$JS.API.CONSUMER.MSG.NEXT.PUSH.sb-pusher": ("pusher",),
    "$JS.ACK.PUSH.sb-pusher.1.1.1.1.0": ("pusher",),
    "$KV.sb_partitions.p.0": ("sequencer",),
    "$JS.API.DIRECT.GET.KV_sb_partitions": ("sequencer",),
    "$JS.API.DIRECT.GET.SB_TRACE": ("sequencer",),
    "$JS.API.STREAM.MSG.GET.SB_TRACE": ("sequencer",),
}

DENIED_PUBLISH = [
    # (user, subject): forging a stored message, an inbox entry, or a send
    ("service", "sb.msg.forged"),
    ("service", "sb.user.victim.inbox"),
    ("service", "sb.push.victim"),
    ("edge", "sb.msg.forged"),
    ("edge", "sb.user.victim.inbox"),
    ("operator", "sb.send.anyconv"),
    ("operator", "sb.msg.forged"),
    ("presence", "sb.msg.forged"),
    ("pusher", "sb.user.victim.inbox"),
    ("archiver", "sb.send.anyconv"),
    # operators may read through a consumer on DEADLETTER only (nats stream view)
    ("operator", "$JS.API.CONSUMER.CREATE.MESSAGES.peek"),
    # Issue 8 item 2: what an edge delivers. Stored entries come only from the
    # server's INBOX republish (no user may publish a live subject); each
    # ephemeral event kind only from its role; large groups' messages only
    # from the sequencer.
    *[(u, "sb.user.victim.live") for u in USERS if u != "sys"],
    # Issue 8 item 1: system messages only via sb.api.system.send (service),
    # forwarded to a partition's owner by sequencers only.
    *[(u, "sb.seq.0.system") for u in USERS if u not in ("sequencer", "sys")],
    *[(u, "sb.api.system.send") for u in USERS if u not in ("service", "sys")],
    *[(u, "sb.conv.anyconv.live") for u in USERS if u not in ("sequencer", "sys")],
    *[(u, f"sb.user.victim.ev.{kind}") for kind, owner in EVENT_OWNERS.items()
      for u in USERS if u not in (owner, "sys")],
    # Issue 8 item 3: only `admin` (switchboard init) manages JetStream; each
    # role has the API subjects of its own reads and consumers only.
    *[(u, subject) for subject in JS_MANAGEMENT for u in ROLES + ("service", "operator")],
    *[(u, subject) for subject, owners in JS_READS.items() for u in ROLES + ("service",) if u not in owners],
    # Issue 12: trace records are written by the roles with hops only, and
    # read (SB_TRACE) by the sequencer's trace endpoint and admin only: not
    # even the operator user reads who wrote to whom.
    *[(u, TRACE_SUBJECT) for u in USERS if u not in TRACE_WRITERS + ("sys",)],
    ("operator", "$JS.API.DIRECT.GET.SB_TRACE"),
    ("operator", f"$JS.API.DIRECT.GET.SB_TRACE.{TRACE_SUBJECT}"),
    ("operator", "$JS.API.STREAM.MSG.GET.SB_TRACE"),
]


@pytest.mark.parametrize("user,subject", DENIED_PUBLISH, ids=[f"{u}-{s}" for u, s in DENIED_PUBLISH])
async def test_publish_denied(server: Server, user: str, subject: str) -> None:
    async with watched(server, user) as w:
        await w.nc.publish(subject, b"{}")
        await w.nc.flush()
        await w.violation(subject)


async def _inbox_messages(server: Server) -> int:
    """Users' entries in INBOX (not the path tick, which the sequencer adds
    twice a second: sequencer/pathtick.py)."""
    async with watched(server, "operator") as w:
        info = await w.nc.jetstream(timeout=STEP).stream_info("INBOX", subjects_filter="sb.user.*.inbox")
        return sum(n for subject, n in (info.state.subjects or {}).items() if subject != "sb.user.~tick.inbox")


# (role, what it tries with nats-py's JetStream API)
JS_ABUSE = [
    ("pusher", "purge INBOX", lambda js: js.purge_stream("INBOX")),
    ("pusher", "delete MESSAGES", lambda js: js.delete_stream("MESSAGES")),
    ("archiver", "read every mailbox", lambda js: js.pull_subscribe("sb.user.*.inbox", stream="INBOX")),
    ("pusher", "read every mailbox", lambda js: js.pull_subscribe("sb.user.*.inbox", durable="peek", stream="INBOX")),
    ("sequencer", "purge INBOX", lambda js: js.purge_stream("INBOX")),
    ("archiver", "delete the pusher's consumer", lambda js: js.delete_consumer("PUSH", "sb-pusher")),
]


@pytest.mark.parametrize("role,what,action", JS_ABUSE, ids=[f"{r}-{w}" for r, w, _ in JS_ABUSE])
async def test_roles_cannot_manage_jetstream(server: Server, deployment: Deployment, role: str, what: str,
                                             action) -> None:
    """Issue 8 item 3, with each role's real credentials and the real
    JetStream API: refused (the server answers nothing: a timeout), and the
    stream is as it was."""
    a, b = uid("alice"), uid("bob")
    async with clients(deployment, a, b) as (ca, cb):
        await ca.send(to=b, body="keep me")  # something in INBOX
        await cb.next_message(STEP)
    before = await _inbox_messages(server)
    assert before > 0
    async with watched(server, role) as w:
        with pytest.raises(nats.errors.TimeoutError):
            await action(w.nc.jetstream(timeout=1.0))
        await w.violation("$JS.API.")
    assert await _inbox_messages(server) == before
    async with watched(server, "operator") as w:
        js = w.nc.jetstream(timeout=STEP)
        assert {c.name for c in await js.consumers_info("INBOX")} == set()
        assert "sb-pusher" in {c.name for c in await js.consumers_info("PUSH")}
        assert (await js.stream_info("MESSAGES")).config.name == "MESSAGES"


NOT_INITIALIZED = [
    # (what exists before the role starts, role, the one line it stops with)
    ("nothing", "edge", "JetStream stream INBOX does not exist"),
    ("nothing", "sequencer", "JetStream stream MESSAGES does not exist"),
    ("nothing", "archiver", "JetStream stream MESSAGES does not exist"),
    ("nothing", "pusher", "JetStream stream PUSH does not exist"),
    ("streams", "sequencer", "JetStream KV bucket sb_partitions does not exist"),
    ("streams", "archiver", "JetStream consumer MESSAGES/archiver does not exist"),
    ("streams", "pusher", "JetStream consumer PUSH/sb-pusher does not exist"),
    # Issue 12: every role that records trace hops checks SB_TRACE too
    *[("no-trace", role, "JetStream stream SB_TRACE does not exist") for role in TRACE_WRITERS],
]


@pytest.mark.parametrize("setup,role,line", NOT_INITIALIZED, ids=[f"{s}-{r}" for s, r, _ in NOT_INITIALIZED])
async def test_roles_do_not_create_jetstream_state(make_nats, tmp_path: Path, setup: str, role: str,
                                                   line: str) -> None:
    """Issue 8 item 3: a role only checks that what it uses exists (before,
    the sequencer, archiver and pusher created streams, consumers and the
    KV bucket themselves, which needs the JetStream management API); if not,
    it stops with one line naming `switchboard init`, and creates nothing."""
    srv = make_nats()
    nc = await nats.connect(srv.url)
    try:
        if setup in ("streams", "no-trace"):
            await streams.ensure_streams(nc.jetstream(), Settings())
        if setup == "no-trace":
            await nc.jetstream().delete_stream(streams.trace_name(Settings()))
        before = await nc.jetstream().streams_info()
        env = {**os.environ, "SWITCHBOARD_JWT_SECRET": SECRET, "PYTHONUNBUFFERED": "1"}
        env.pop("SWITCHBOARD_CONFIG", None)
        args = ["--nats", srv.url, "--data", str(tmp_path), *role_flags(role, tmp_path, port=free_port())]
        p = subprocess.run([PYTHON, "-m", "sbctl", role, *args], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=60)
        assert p.returncode == 2, p.stdout + p.stderr
        assert "Traceback" not in p.stderr, p.stderr
        last = p.stderr.strip().splitlines()[-1]
        assert last.startswith(f"switchboard {role}: " + line) and "run `switchboard init` first" in last, p.stderr
        after = await nc.jetstream().streams_info()
        assert sorted(i.config.name for i in after) == sorted(i.config.name for i in before)
        for i in after:
            assert i.state.consumer_count == 0, i.config.name
    finally:
        await nc.close()


async def test_init_needs_the_admin_user(server: Server, deployment: Deployment) -> None:
    """`switchboard init` with a role's credentials is refused by the server
    and says so in one line; with admin's (the deployment fixture) it works,
    and a second run changes nothing."""
    env = {**os.environ}
    env.pop("SWITCHBOARD_CONFIG", None)
    p = subprocess.run([PYTHON, "-m", "sbctl", "init", "--nats", server.url("pusher")], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "use a NATS user allowed $JS.API.> (admin in nats/accounts.conf)" in p.stderr
    assert PASSWORDS["pusher"] not in p.stdout + p.stderr
    p = subprocess.run([PYTHON, "-m", "sbctl", "init", "--nats", server.url("admin")], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count("ok: ") == 8  # 5 streams (SB_TRACE included), 2 consumers, the bucket


async def test_forged_stream_write_is_not_stored(server: Server) -> None:
    # The JetStream way of writing: a request that JetStream would ack. Denied,
    # it never reaches the stream, so the request gets no ack.
    async with watched(server, "service") as w:
        with pytest.raises(nats.errors.TimeoutError):
            await w.nc.jetstream(timeout=1.0).publish("sb.msg.forged", b"{}")
        await w.violation("sb.msg.forged")


DENIED_SUBSCRIBE = [
    ("service", "sb.user.*.live"),
    ("service", "sb.user.victim.live"),
    ("service", "sb.user.victim.inbox"),
    ("operator", "sb.user.victim.live"),
    ("edge", "sb.send.*"),
    # trace records are read from SB_TRACE (sequencer, admin), never live
    *[(u, "sb.trace.>") for u in ROLES + ("service", "operator", "admin")],
]


@pytest.mark.parametrize("user,subject", DENIED_SUBSCRIBE, ids=[f"{u}-{s}" for u, s in DENIED_SUBSCRIBE])
async def test_subscribe_denied(server: Server, user: str, subject: str) -> None:
    async with watched(server, user) as w:
        await w.nc.subscribe(subject)
        await w.nc.flush()
        await w.violation(subject)


async def test_operator_reads_jetstream_state_but_cannot_change_it(server: Server, deployment: Deployment) -> None:
    async with watched(server, "operator") as w:
        js = w.nc.jetstream(timeout=2.0)
        info = await js.stream_info("MESSAGES")
        assert info.config.subjects == ["sb.msg.*"]
        consumers = await js.consumers_info("MESSAGES")
        assert "archiver" in {c.name for c in consumers}
        with pytest.raises(nats.errors.TimeoutError):
            await js.delete_stream("MESSAGES")
        await w.violation("$JS.API.STREAM.DELETE.MESSAGES")
        # `nats stream view DEADLETTER` = an ephemeral pull consumer there
        psub = await js.pull_subscribe("sb.dlq.>", stream="DEADLETTER")
        with pytest.raises(nats.errors.TimeoutError):  # empty, but readable
            await psub.fetch(1, timeout=0.5)
        await psub.unsubscribe()
        assert not [e for e in w.errors if "violation" in e.lower() and "delete" not in e.lower()], w.errors
    async with watched(server, "sequencer") as w:  # still there
        assert (await w.nc.jetstream().stream_info("MESSAGES")).config.name == "MESSAGES"


async def test_config_flags_override_the_file(server: Server) -> None:
    # single.conf says 4222 / 8222; the test passed -p / -m, and operators
    # rely on the same precedence in containers. The store dir is relative to
    # the working directory.
    import httpx

    varz = httpx.get(f"http://127.0.0.1:{server.http_port}/varz", timeout=STEP).json()
    assert varz["port"] == server.port
    assert varz["server_name"] == "sb-1"
    jsz = httpx.get(f"http://127.0.0.1:{server.http_port}/jsz", timeout=STEP).json()
    assert jsz["config"]["store_dir"].endswith("data/jetstream/jetstream")  # relative, as in the file
    assert any((server.store_dir / "jetstream").iterdir())  # ... so it landed in the test's directory


@pytest.mark.parametrize("path", sorted((REPO / "nats" / "consumers").glob("*.json")), ids=lambda p: p.name)
async def test_committed_consumer_matches_the_running_one(server: Server, deployment: Deployment, path: Path) -> None:
    # nats/consumers/*.json are for operators who pre-create consumers with the
    # nats CLI; they must say what the archiver and pusher really create.
    import json

    stream, durable = path.name.removesuffix(".json").split(".", 1)
    want = json.loads(path.read_text())
    async with watched(server, "operator") as w:
        real = (await w.nc.jetstream(timeout=STEP).consumer_info(stream, durable)).config.as_dict()
    assert {k: real.get(k) for k in want} == want


async def test_operator_sees_every_role_as_a_micro_service(server: Server, deployment: Deployment) -> None:
    # What `nats micro ls` does: PING on $SRV and collect every answer. Proves
    # each role could register under its own user and operators can list them.
    import json

    async with watched(server, "operator") as w:
        inbox = w.nc.new_inbox()
        sub = await w.nc.subscribe(inbox)
        await w.nc.publish("$SRV.PING", b"", reply=inbox)
        names: set[str] = set()

        async def every_role() -> bool:
            with contextlib.suppress(nats.errors.TimeoutError):
                names.add(json.loads((await sub.next_msg(timeout=0.5)).data)["name"])
            return names >= {f"sb-{r}" for r in ROLES}

        await until(every_role, STEP, lambda: f"a PING answer of every role; got {names}", every=0)
        assert not w.errors


async def test_no_role_hit_a_permission_violation(server: Server, deployment: Deployment) -> None:
    # Runs last in this module: after every feature above, the server log may
    # hold violations only from this test's own probing connections (which
    # have no name), never from a service (named "switchboard-<role>",
    # "sb-pusher", or "sb-<role>..." for the lean connections of the edge,
    # sequencer and archiver: their large-group publishes, leases and acks).
    # A fire-and-forget publish a service is denied shows here and nowhere
    # else.
    lines = [ln for ln in server.log.read_text(errors="replace").splitlines() if "Violation" in ln]
    assert lines, "the probes above should have been logged"
    from_roles = [ln for ln in lines if ("switchboard-" in ln or ":sb-" in ln)
                  and "switchboard-init" not in ln]  # test_init_needs_the_admin_user's probe
    assert not from_roles, "\n".join(from_roles)
