"""switchboard.bus.conn + replies against a real nats-server (loopback, free
ports): pub/sub, queue groups, headers, request/reply, JetStream acks,
reconnect, auth, TLS and a 3-node cluster."""

from __future__ import annotations

import itertools
import json
import time

import nats
import pytest

from switchboard.bus.conn import BusConnection, BusError, BusMsg, BusUnavailable, connect, encode_headers
from switchboard.bus.replies import Replies
from tests.e2e.helpers import CuttableProxy, until

_ids = itertools.count()


def uniq(prefix: str) -> str:
    return f"{prefix}.{time.monotonic_ns()}.{next(_ids)}"


def collector(conn: BusConnection, subject: str, queue: str | None = None) -> tuple[int, list[BusMsg]]:
    got: list[BusMsg] = []
    return conn.subscribe(subject, got.append, queue=queue), got


@pytest.fixture
async def bus(nats_server):
    conns: list[BusConnection] = []

    async def make(**kw) -> BusConnection:
        c = await connect([nats_server.url], **kw)
        conns.append(c)
        return c

    yield make
    for c in conns:
        await c.close()


# --- pub/sub ----------------------------------------------------------------------

async def test_pub_sub_wildcards_unsubscribe(bus) -> None:
    a, b = await bus(name="a"), await bus(name="b")
    base = uniq("t.ps")
    sid_star, star = collector(b, f"{base}.*")
    _, gt = collector(b, f"{base}.>")
    _, exact = collector(b, f"{base}.x")
    await b.flush()
    a.publish(f"{base}.x", b"one")
    a.publish(f"{base}.y.z", b"two")
    a.publish(f"{base}.x", b"", reply="r.1")
    plain = uniq("t.plain")
    _, plain_got = collector(b, plain)
    await b.flush()
    a.publish(plain, b"p", reply="", headers=b"")  # empty reply/headers: a plain PUB
    await until(lambda: len(plain_got) == 1)
    assert (plain_got[0].reply, plain_got[0].hdr) == ("", b"")
    await until(lambda: len(gt) == 3)
    assert [(m.subject, m.data, m.reply) for m in star] == [(f"{base}.x", b"one", ""), (f"{base}.x", b"", "r.1")]
    assert [m.data for m in gt] == [b"one", b"two", b""]
    assert [m.data for m in exact] == [b"one", b""]
    b.unsubscribe(sid_star)
    b.unsubscribe(sid_star)  # twice is harmless
    await b.flush()
    a.publish(f"{base}.x", b"three")
    await until(lambda: len(exact) == 3)
    await a.flush()
    await b.flush()
    assert len(star) == 2
    assert a.stats.out_msgs == 5 and b.stats.in_msgs == 10  # 7 + "three" to > and x


async def test_queue_group_shares_messages(bus) -> None:
    pub, q1, q2, plain = await bus(), await bus(), await bus(), await bus()
    subject = uniq("t.q")
    _, g1 = collector(q1, subject, queue="workers")
    _, g2 = collector(q2, subject, queue="workers")
    _, all_ = collector(plain, subject)
    for c in (q1, q2, plain):
        await c.flush()
    for i in range(200):
        pub.publish(subject, str(i).encode())
    await until(lambda: len(g1) + len(g2) == 200 and len(all_) == 200)
    assert g1 and g2  # both members got some (random split; 2^-199 to fail)
    assert sorted(int(m.data) for m in g1 + g2) == list(range(200))


async def test_headers_big_payload_and_order(bus) -> None:
    a, b = await bus(), await bus()
    subject = uniq("t.h")
    _, got = collector(b, subject)
    await b.flush()
    hdr = encode_headers({"Nats-Msg-Id": "m-1", "X-Trace": "a b c"})
    big = bytes(range(256)) * 3500  # 896,000 bytes: under the 1 MiB max_payload
    a.publish(subject, b"with headers", headers=hdr, reply="some.reply")
    a.publish(subject, big)
    for i in range(1000):
        a.publish(subject, b"%d" % i)
    await until(lambda: len(got) == 1002)
    m = got[0]
    assert (m.data, m.reply, m.headers, m.status) == (
        b"with headers", "some.reply", {"Nats-Msg-Id": "m-1", "X-Trace": "a b c"}, None)
    assert got[1].data == big and got[1].headers is None
    assert [int(m.data) for m in got[2:]] == list(range(1000))
    with pytest.raises(BusError, match="max_payload"):
        a.publish(subject, b"x" * (2 * 1024 * 1024))


async def test_a_failing_handler_does_not_stop_delivery(bus) -> None:
    c = await bus()
    subject = uniq("t.err")
    ok: list[bytes] = []

    def bad(m: BusMsg) -> None:
        raise RuntimeError("handler bug")

    c.subscribe(subject, bad)
    c.subscribe(subject, lambda m: ok.append(m.data))
    await c.flush()
    for i in range(3):
        c.publish(subject, b"%d" % i)
    await until(lambda: len(ok) == 3)
    assert c.is_connected


async def test_close_flushes_then_refuses(bus) -> None:
    a, b = await bus(), await bus()
    subject = uniq("t.close")
    _, got = collector(b, subject)
    await b.flush()
    a.publish(subject, b"last words")
    await a.close()  # publish was only queued: close must write it
    await until(lambda: len(got) == 1)
    assert not a.is_connected and a.is_closed
    with pytest.raises(BusError):
        a.publish(subject, b"too late")
    with pytest.raises(BusError):
        a.subscribe(subject, got.append)
    await a.close()  # idempotent


async def test_connect_refused_everywhere_is_unavailable() -> None:
    from sbctl.embedded import free_port
    with pytest.raises(BusUnavailable, match="could not connect"):
        await connect(f"nats://127.0.0.1:{free_port()}, 127.0.0.1:{free_port()}", connect_timeout=0.5)


# --- request/reply ----------------------------------------------------------------

async def test_request_reply_no_responders_timeout(bus) -> None:
    server, client = await bus(name="svc"), await bus(name="cli")
    svc = uniq("t.svc")
    server.subscribe(svc, lambda m: server.publish(m.reply, b"echo:" + m.data, headers=m.hdr))  # b"" = no headers
    silent = uniq("t.silent")
    server.subscribe(silent, lambda m: None)
    await server.flush()
    r = Replies(client, sweep_interval=0.02)
    r.start()
    await client.flush()

    msg = await r.call(svc, b"hi", timeout=2)
    assert msg.data == b"echo:hi"
    msg = await r.call(svc, b"h", headers=encode_headers({"K": "v"}), timeout=2)
    assert (msg.data, msg.headers) == (b"echo:h", {"K": "v"})

    # 300 callback requests in flight, each answered exactly once
    answers: list[tuple[bytes | None, BaseException | None]] = []
    for i in range(300):
        r.request(svc, b"%d" % i, lambda m, e: answers.append((m.data if m else None, e)), timeout=2)
    await until(lambda: len(answers) == 300)
    assert sorted(a for a, _ in answers) == sorted(b"echo:%d" % i for i in range(300))
    assert r.pending == 0

    t0 = time.monotonic()
    with pytest.raises(BusUnavailable, match="no responders"):
        await r.call(uniq("t.nobody"), b"x", timeout=2)
    assert time.monotonic() - t0 < 1.0  # failed at once, not at the timeout

    t0 = time.monotonic()
    with pytest.raises(BusUnavailable, match="in time"):
        await r.call(silent, b"x", timeout=0.2)
    assert 0.2 <= time.monotonic() - t0 < 1.0

    # mixed timeouts: the sweep must not stop at a long one before a short one
    outcome: dict[str, BaseException | None] = {}
    r.request(silent, b"", lambda m, e: outcome.__setitem__("long", e), timeout=30)
    r.request(silent, b"", lambda m, e: outcome.__setitem__("short", e), timeout=0.1)
    await until(lambda: "short" in outcome, timeout=2)
    assert isinstance(outcome["short"], BusUnavailable) and "long" not in outcome

    # a callback that raises is logged, the next reply still arrives
    r.request(svc, b"a", lambda m, e: 1 / 0, timeout=2)
    assert (await r.call(svc, b"b", timeout=2)).data == b"echo:b"

    r.stop()
    assert isinstance(outcome["long"], BusUnavailable)
    with pytest.raises(BusError):
        r.request(svc, b"", lambda m, e: None, timeout=1)


async def test_jetstream_publish_ack_via_replies(nats_server, bus) -> None:
    nc = await nats.connect(nats_server.url)
    stream = "T_BUS_" + uniq("s").replace(".", "_")
    subject = uniq("t.js")
    js = nc.jetstream()
    await js.add_stream(name=stream, subjects=[subject])
    try:
        c = await bus()
        r = Replies(c)
        r.start()
        await c.flush()
        acks: list[dict] = []
        for i in range(50):
            r.request(subject, b"m%d" % i, lambda m, e: acks.append(json.loads(m.data) if m else {"err": e}),
                      headers=encode_headers({"Nats-Msg-Id": f"id-{i}"}), timeout=5)
        await until(lambda: len(acks) == 50)
        assert sorted(a["seq"] for a in acks) == list(range(1, 51))
        assert {a["stream"] for a in acks} == {stream}
        dup = json.loads((await r.call(subject, b"again", headers=encode_headers({"Nats-Msg-Id": "id-7"}),
                                       timeout=5)).data)
        assert dup.get("duplicate") is True and dup["seq"] == 8
        info = await js.stream_info(stream)
        assert info.state.messages == 50
        r.stop()
    finally:
        await js.delete_stream(stream)
        await nc.close()


# --- reconnect --------------------------------------------------------------------

async def test_reconnect_after_restart_on_same_port(make_nats) -> None:
    server = make_nats()
    events: list[str] = []
    c = await connect([server.url], reconnect_wait=0.1, on_disconnected=lambda: events.append("down"),
                      on_reconnected=lambda: events.append("up"))
    other = await connect([server.url], reconnect_wait=0.1)
    try:
        subject = uniq("t.rc")
        _, mine = collector(c, subject)
        _, theirs = collector(other, subject)
        r = Replies(c)
        r.start()
        other.subscribe(subject + ".svc", lambda m: other.publish(m.reply, b"ok"))
        await c.flush()
        await other.flush()
        c.publish(subject, b"before")
        await until(lambda: len(mine) == 1 and len(theirs) == 1)

        server.kill()
        await until(lambda: not c.is_connected and not other.is_connected, what="disconnect")
        assert events == ["down"]
        for i in range(100):
            c.publish(subject, b"while-down-%d" % i)  # buffered
        with pytest.raises(BusUnavailable):
            await c.flush()
        server.start()
        await until(lambda: c.is_connected and other.is_connected, timeout=10, what="reconnect")
        assert events == ["down", "up"]
        # c re-subscribed before sending what it buffered, so it gets its own:
        await until(lambda: len(mine) == 101, what="buffered publishes")
        assert [m.data for m in mine[1:]] == [b"while-down-%d" % i for i in range(100)]
        await other.flush()
        c.publish(subject, b"after")
        await until(lambda: len(theirs) >= 2 and theirs[-1].data == b"after", what="restored subscription")
        assert (await r.call(subject + ".svc", b"", timeout=2)).data == b"ok"  # reply sub restored too
        assert c.stats.reconnects == 1
    finally:
        await c.close()
        await other.close()


async def test_pending_limit_while_disconnected(make_nats) -> None:
    server = make_nats()
    c = await connect([server.url], reconnect_wait=5, pending_limit=10_000)
    try:
        server.kill()
        await until(lambda: not c.is_connected)
        c.publish("t.pending", b"x" * 5000)
        with pytest.raises(BusUnavailable, match="reconnecting"):
            for _ in range(3):
                c.publish("t.pending", b"x" * 5000)
    finally:
        await c.close()


async def test_max_reconnect_attempts_closes(make_nats) -> None:
    server = make_nats()
    c = await connect([server.url], reconnect_wait=0.05, max_reconnect_attempts=2)
    server.kill()
    await until(lambda: c.is_closed, timeout=5, what="give up")
    with pytest.raises(BusError):
        c.publish("t.x", b"")


async def test_keepalive_detects_a_frozen_server(make_nats) -> None:
    """A server that stops answering (SIGSTOP: the TCP connection stays up)
    is declared stale after max_pings_out unanswered PINGs; once it answers
    again the client is back, subscriptions included."""
    import os
    import signal

    server = make_nats()
    events: list[str] = []
    c = await connect([server.url], reconnect_wait=0.1, connect_timeout=0.3, ping_interval=0.1, max_pings_out=2,
                      on_disconnected=lambda: events.append("down"), on_reconnected=lambda: events.append("up"))
    try:
        subject = uniq("t.ka")
        _, got = collector(c, subject)
        await c.flush()
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            await until(lambda: events == ["down"], timeout=3, what="stale detection")
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        await until(lambda: c.is_connected, timeout=5, what="reconnect")
        c.publish(subject, b"alive")
        await until(lambda: len(got) == 1)
    finally:
        await c.close()


# --- auth -------------------------------------------------------------------------

def _b64(b: bytes) -> str:
    import base64
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def _keypair(prefix: int):
    import os

    import nkeys
    return nkeys.from_seed(nkeys.encode_seed(os.urandom(32), prefix))


def _jwt(issuer, subject_pub: str, name: str, nats_claims: dict) -> str:
    """A NATS JWT v2: base64url(header).base64url(claims).base64url(ed25519 sig
    by the issuer's nkey over the first two parts)."""
    import base64
    import hashlib
    claims = {"iat": int(time.time()), "iss": issuer.public_key.decode(), "name": name, "sub": subject_pub,
              "nats": nats_claims}
    claims["jti"] = base64.b32encode(hashlib.sha256(json.dumps(claims).encode()).digest()).decode().rstrip("=")
    head = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = _b64(json.dumps(claims).encode())
    return f"{head}.{body}.{_b64(issuer.sign(f'{head}.{body}'.encode()))}"


def operator_setup(tmp_path, *, user_name: str = "u") -> tuple[str, str, str]:
    """(server config, .creds path of an allowed user, .creds path of a user
    signed by an account the server does not know)."""
    import nkeys
    unlimited = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True,
                 "conn": -1, "leaf": -1}
    op = _keypair(nkeys.PREFIX_BYTE_OPERATOR)
    acc, sys_acc, rogue = (_keypair(nkeys.PREFIX_BYTE_ACCOUNT) for _ in range(3))
    pub = {k: k.public_key.decode() for k in (op, acc, sys_acc, rogue)}
    op_jwt = _jwt(op, pub[op], "op", {"type": "operator", "version": 2})
    acc_jwt = _jwt(op, pub[acc], "app", {"type": "account", "version": 2, "limits": unlimited})
    sys_jwt = _jwt(op, pub[sys_acc], "SYS", {"type": "account", "version": 2, "limits": unlimited})
    conf = (f"operator: {op_jwt}\nsystem_account: {pub[sys_acc]}\nresolver: MEMORY\n"
            f"resolver_preload: {{\n  {pub[acc]}: {acc_jwt}\n  {pub[sys_acc]}: {sys_jwt}\n}}\n")

    def creds(account, name: str) -> str:
        usr = _keypair(nkeys.PREFIX_BYTE_USER)
        user_jwt = _jwt(account, usr.public_key.decode(), name,
                        {"type": "user", "version": 2, "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1})
        path = tmp_path / f"{name}.creds"
        path.write_text(
            f"-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n"
            "************************* IMPORTANT *************************\n"
            "NKEY Seed printed below can be used to sign and prove identity.\n\n"
            f"-----BEGIN USER NKEY SEED-----\n{usr.seed.decode()}\n------END USER NKEY SEED------\n")
        return str(path)

    return conf, creds(acc, user_name), creds(rogue, "rogue")


def _user_nkey() -> tuple[str, str]:
    import nkeys
    kp = _keypair(nkeys.PREFIX_BYTE_USER)
    return kp.seed.decode(), kp.public_key.decode()


NKEY_SEED, NKEY_PUB = _user_nkey()
OTHER_NKEY_SEED, _ = _user_nkey()

USERS_CONF = """authorization {
  users = [
    {user: alice, password: "s3cret", permissions: {publish: {deny: ["t.denied.>"]}}}
  ]
}
"""
TOKEN_CONF = 'authorization { token: "t0ken-xyz" }\n'
NKEY_CONF = f"authorization {{ users = [ {{nkey: {NKEY_PUB}}} ] }}\n"

# (case, server config, URL credentials, connect() keyword arguments, accepted)
AUTH_CASES = [
    ("user-password", USERS_CONF, "", {"user": "alice", "password": "s3cret"}, True),
    ("user-password-url", USERS_CONF, "alice:s3cret@", {}, True),
    ("user-password-wrong", USERS_CONF, "", {"user": "alice", "password": "nope"}, False),
    ("user-password-none", USERS_CONF, "", {}, False),
    ("token", TOKEN_CONF, "", {"token": "t0ken-xyz"}, True),
    ("token-url", TOKEN_CONF, "t0ken-xyz@", {}, True),
    ("token-wrong", TOKEN_CONF, "", {"token": "other"}, False),
    ("nkey", NKEY_CONF, "", {"nkey_seed": NKEY_SEED}, True),
    ("nkey-unknown", NKEY_CONF, "", {"nkey_seed": OTHER_NKEY_SEED}, False),
    ("creds", "OPERATOR", "", {"creds": "GOOD"}, True),
    ("creds-unknown-account", "OPERATOR", "", {"creds": "ROGUE"}, False),
]


@pytest.mark.parametrize("case, conf, in_url, kwargs, accepted", AUTH_CASES, ids=[c[0] for c in AUTH_CASES])
async def test_auth(make_nats, tmp_path, case, conf, in_url, kwargs, accepted) -> None:
    if conf == "OPERATOR":
        conf, good, rogue = operator_setup(tmp_path)
        kwargs = {"creds": good if kwargs["creds"] == "GOOD" else rogue}
    path = tmp_path / "server.conf"
    path.write_text(conf)
    server = make_nats(extra_args=["-c", str(path)])
    url = f"nats://{in_url}{server.host}:{server.port}"
    if not accepted:
        with pytest.raises(BusError, match="refused the credentials") as info:
            await connect([url], **kwargs)
        assert info.value.code == "bus_auth" and not isinstance(info.value, BusUnavailable)
        return
    c = await connect([url], reconnect_wait=0.1, **kwargs)
    try:
        subject = uniq("t.auth")
        _, got = collector(c, subject)
        await c.flush()
        c.publish(subject, b"authenticated")
        await until(lambda: len(got) == 1)
        # credentials are re-sent on reconnect (the .creds file is read again)
        server.kill()
        await until(lambda: not c.is_connected)
        server.start()
        await until(lambda: c.is_connected, timeout=10, what="reconnect with credentials")
        c.publish(subject, b"again")
        await until(lambda: len(got) == 2)
    finally:
        await c.close()


async def test_permissions_violation_is_counted_and_connection_stays(make_nats, tmp_path) -> None:
    path = tmp_path / "server.conf"
    path.write_text(USERS_CONF)
    server = make_nats(extra_args=["-c", str(path)])
    c = await connect([server.url], user="alice", password="s3cret")
    try:
        _, got = collector(c, "t.ok")
        _, denied = collector(c, "t.denied.x")
        await c.flush()
        c.publish("t.denied.x", b"forbidden")
        await c.flush()
        await until(lambda: c.stats.permission_errors == 1, what="-ERR Permissions Violation")
        c.publish("t.ok", b"fine")
        await until(lambda: len(got) == 1)
        assert c.is_connected and c.stats.reconnects == 0 and denied == []
    finally:
        await c.close()


# --- TLS --------------------------------------------------------------------------

def make_ca_and_server_cert(tmp_path) -> tuple[str, str, str]:
    """(ca.pem, server cert.pem, server key.pem): a throwaway CA and a server
    certificate for 127.0.0.1 / localhost signed by it."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "switchboard test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = (tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return tuple(str(p) for p in paths)  # type: ignore[return-value]


@pytest.fixture
def tls_server(make_nats, tmp_path):
    ca, cert, key = make_ca_and_server_cert(tmp_path)
    path = tmp_path / "tls.conf"
    path.write_text(f'tls {{\n  cert_file: "{cert}"\n  key_file: "{key}"\n}}\n')
    return make_nats(extra_args=["-c", str(path)]), ca


# (case, URL scheme, give the CA context, expected error or None)
TLS_CASES = [
    ("context", "nats", True, None),
    ("tls-scheme", "tls", True, None),
    ("tls-required-no-context", "nats", False, "CERTIFICATE_VERIFY_FAILED"),
]


@pytest.mark.parametrize("case, scheme, with_ca, error", TLS_CASES, ids=[c[0] for c in TLS_CASES])
async def test_tls(tls_server, case, scheme, with_ca, error) -> None:
    import ssl
    server, ca = tls_server
    ctx = ssl.create_default_context(cafile=ca) if with_ca else None
    url = f"{scheme}://127.0.0.1:{server.port}"
    if error:
        with pytest.raises(BusUnavailable, match=error):
            await connect([url], tls=ctx)
        return
    c = await connect([url], tls=ctx, reconnect_wait=0.1)
    try:
        assert c.server_info.get("tls_required") is True
        subject = uniq("t.tls")
        _, got = collector(c, subject)
        await c.flush()
        big = b"z" * 300_000  # several TLS records
        c.publish(subject, big)
        await until(lambda: len(got) == 1)
        assert got[0].data == big
        server.kill()
        await until(lambda: not c.is_connected)
        server.start()
        await until(lambda: c.is_connected, timeout=10, what="TLS reconnect")
        c.publish(subject, b"again")
        await until(lambda: len(got) == 2)
    finally:
        await c.close()


async def test_tls_context_but_server_without_tls(nats_server) -> None:
    import ssl
    with pytest.raises(BusUnavailable, match="does not offer TLS"):
        await connect([nats_server.url], tls=ssl.create_default_context())


# --- cluster ----------------------------------------------------------------------

@pytest.mark.parametrize("failure", ["kill", "lame_duck"])
async def test_cluster_failover_keeps_subscriptions(make_nats, tmp_path, failure) -> None:
    """3 nodes on loopback with routes. The subscriber knows only node 1 (the
    others come from INFO connect_urls), the publisher uses node 3. Node 1
    dies (SIGKILL) or enters lame-duck mode: the subscriber moves to another
    node with its subscriptions."""
    import os
    import signal

    from sbctl.embedded import free_port
    cluster_ports = [free_port() for _ in range(3)]
    routes = ",".join(f"nats://127.0.0.1:{p}" for p in cluster_ports)
    conf = tmp_path / "ldm.conf"
    # lame duck: the 30 s duration is the server's minimum; with one client
    # the server closes it right after the grace period.
    conf.write_text('lame_duck_duration: "30s"\nlame_duck_grace_period: "100ms"\n')
    nodes = [make_nats(name=f"sb-cluster-{i}", extra_args=[
        "-c", str(conf), "--cluster", f"nats://127.0.0.1:{cluster_ports[i]}", "--cluster_name", "sbtest",
        "--routes", routes]) for i in range(3)]
    events: list[str] = []
    sub = await connect([nodes[0].url], name="sub", reconnect_wait=0.1,
                        on_disconnected=lambda: events.append("down"), on_reconnected=lambda: events.append("up"))
    pub = await connect([nodes[2].url], name="pub")
    try:
        subject = uniq("t.cluster")
        _, got = collector(sub, subject)
        await sub.flush()
        # Routes between three fresh servers retry every second: on a loaded
        # machine the cluster (and so connect_urls) can take several seconds.
        await until(lambda: len(sub.servers) == 3, timeout=30.0, what="connect_urls of the other nodes")
        assert sub.connected_url == nodes[0].url

        async def delivered(body: bytes) -> None:  # routes and interest propagate asynchronously
            def arrived() -> bool:
                if any(m.data == body for m in got):
                    return True
                pub.publish(subject, body)  # again, until interest has crossed the routes
                return False

            await until(arrived, 10, f"{body!r} crossing the cluster", every=0.05)

        await delivered(b"via routes")
        if failure == "kill":
            nodes[0].kill()
        else:
            os.kill(nodes[0].process.pid, signal.SIGUSR2)  # lame-duck mode
        await until(lambda: events == ["down", "up"], timeout=10, what="failover")
        assert sub.connected_url in (nodes[1].url, nodes[2].url)
        await delivered(b"after failover")
        assert sub.stats.reconnects == 1
    finally:
        await sub.close()
        await pub.close()


# --- uvloop (what the services run on) --------------------------------------------

def test_under_uvloop(tls_server) -> None:
    """The same client on uvloop: TLS (start_tls), pub/sub with headers,
    Replies, and a dropped socket reconnecting with its subscriptions. Run in
    a thread with its own loop (the tests' session loop is asyncio's)."""
    import ssl
    import threading
    uvloop = pytest.importorskip("uvloop")
    server, ca = tls_server
    errors: list[BaseException] = []

    async def scenario() -> None:
        ctx = ssl.create_default_context(cafile=ca)
        events: list[str] = []
        proxy = CuttableProxy(int(server.url.rsplit(":", 1)[1]))  # on this loop: the reset is real TCP
        await proxy.start()
        c = await connect([f"nats://127.0.0.1:{proxy.port}"], tls=ctx, reconnect_wait=0.05,
                          on_reconnected=lambda: events.append("up"))
        try:
            subject = uniq("t.uv")
            _, got = collector(c, subject)
            c.subscribe(subject + ".svc", lambda m: c.publish(m.reply, m.data.upper()))
            r = Replies(c)
            r.start()
            await c.flush()
            c.publish(subject, b"hdr", headers=encode_headers({"K": "v"}))
            assert (await r.call(subject + ".svc", b"abc", timeout=2)).data == b"ABC"
            await until(lambda: len(got) == 1)
            assert got[0].headers == {"K": "v"}
            proxy.cut()  # the connection is reset under the client
            proxy.heal()  # and the server is there again
            await until(lambda: events == ["up"], what="reconnect on uvloop")
            c.publish(subject, b"again")
            await until(lambda: len(got) == 2)
            assert (await r.call(subject + ".svc", b"x", timeout=2)).data == b"X"
        finally:
            await c.close()
            await proxy.close()

    def run() -> None:
        try:
            uvloop.run(scenario())
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread below
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join(30)
    assert not t.is_alive(), "uvloop scenario hung"
    if errors:
        raise errors[0]
