"""TLS end to end, with certificates the tests make (tests/e2e/certs.py).

What it protects:
- ``wss://`` on the edge (``tls_cert``/``tls_key``): clients that trust the
  CA exchange messages; plain ``ws://`` and clients that do not trust it are
  refused at the handshake;
- certificate renewal without dropping anyone: after the files are replaced
  and the edge gets SIGHUP, a new connection is shown the new certificate
  while connections opened before keep working; a broken pair on reload
  leaves the old certificate in service;
- TLS to NATS (``nats_tls_*``): every role (nats-py and lean bus
  connections alike) runs against a TLS-only nats-server, also one that
  verifies client certificates; with ``nats_tls_*`` set, a server that does
  not require TLS is refused instead of spoken to in plain text.
"""

from __future__ import annotations

import os
import signal
import ssl
from pathlib import Path

import pytest
from websockets.exceptions import InvalidHandshake, InvalidMessage

from sbctl.embedded import free_port
from sbctl.fabric import ALL_ROLES
from switchboard import auth
from switchboard.bus.conn import BusUnavailable, connect as bus_connect
from switchboard.errors import ConfigError
from tests.e2e.certs import CA, issue, make_ca
from tests.e2e.helpers import STEP, Proc, Raw, procs, unique, until


def trusting(ca: CA) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca.path)


def peer_der(raw: Raw) -> bytes:
    return raw.ws.transport.get_extra_info("ssl_object").getpeercert(binary_form=True)


async def exchange(a: Raw, a_user: str, b: Raw, b_user: str, tag: str) -> None:
    """a -> b and b -> a, each delivered."""
    await a.send_msg(id=f"{tag}-ab", to=b_user, body=f"{tag} a to b")
    await until(lambda: any(m["id"] == f"{tag}-ab" for m in b.msgs()), what=f"{tag}-ab at b")
    await b.send_msg(id=f"{tag}-ba", to=a_user, body=f"{tag} b to a")
    await until(lambda: any(m["id"] == f"{tag}-ba" for m in a.msgs()), what=f"{tag}-ba at a")


@pytest.fixture
def edge_tls(tmp_path: Path) -> tuple[CA, Path, Path, bytes]:
    """(CA, cert file, key file, the certificate's DER) of an edge."""
    ca = make_ca(tmp_path / "ca")
    cert, key = tmp_path / "edge" / "cert.pem", tmp_path / "edge" / "key.pem"
    der = issue(ca, cert, key, cn="edge-first")
    return ca, cert, key, der


# ---------------------------------------------------------------- wss:// on the edge

async def test_wss_clients_exchange_messages_and_others_are_refused(deploy, edge_tls) -> None:
    ca, cert, key, der = edge_tls
    dep = await deploy(tls_cert=str(cert), tls_key=str(key))
    assert dep.url.startswith("wss://")
    alice, bob = unique("alice"), unique("bob")
    a = await dep.raw(alice, ssl=trusting(ca))
    b = await dep.raw(bob, ssl=trusting(ca))
    assert peer_der(a) == der
    await exchange(a, alice, b, bob, "tls")
    # A client that does not trust the CA, and a plain ws:// client, get nowhere.
    with pytest.raises(ssl.SSLCertVerificationError):
        await dep.raw(alice, ssl=ssl.create_default_context())
    with pytest.raises((InvalidHandshake, InvalidMessage, ConnectionError, EOFError, TimeoutError)):
        await Raw.open(f"ws://127.0.0.1:{dep.port}/ws", dep.token(alice))


async def test_sighup_reloads_the_certificate_for_new_connections_only(deploy, tmp_path, edge_tls) -> None:
    ca, cert, key, first = edge_tls
    dep = await deploy(tls_cert=str(cert), tls_key=str(key))
    alice, bob = unique("alice"), unique("bob")
    old_a = await dep.raw(alice, ssl=trusting(ca))
    old_b = await dep.raw(bob, ssl=trusting(ca))
    assert peer_der(old_a) == first
    # Renewal: new files in place, then SIGHUP (the edge is in this
    # process; its handler must be installed, or SIGHUP would end pytest).
    second = issue(ca, cert, key, cn="edge-second")
    assert signal.getsignal(signal.SIGHUP) not in (signal.SIG_DFL, signal.SIG_IGN, None)
    os.kill(os.getpid(), signal.SIGHUP)

    async def presented() -> Raw | None:  # the handler runs on the loop's next turn
        r = await dep.raw(alice, ssl=trusting(ca))
        if peer_der(r) == second:
            return r
        await r.close()
        return None

    new = await until(presented, STEP, "the new certificate presented", every=0.05)
    assert peer_der(old_a) == first and peer_der(old_b) == first  # old sessions keep theirs
    await exchange(old_a, alice, old_b, bob, "old")  # and keep working
    await exchange(new, alice, old_b, bob, "mixed")

    # A broken renewal (key of another certificate) is refused; the edge
    # keeps presenting the certificate it has.
    issue(ca, tmp_path / "other.pem", key, cn="stray")
    assert dep.component("edge").reload_tls() is False
    again = await dep.raw(bob, hello=False, ssl=trusting(ca))
    assert peer_der(again) == second


# ---------------------------------------------------------------- TLS to NATS

def tls_nats_server(make_nats, directory: Path, *, verify_clients: bool) -> tuple[object, CA]:
    """A nats-server (JetStream) that speaks TLS only; with ``verify_clients``
    it also requires a client certificate signed by the CA."""
    ca = make_ca(directory / "nats-ca", name="nats test CA")
    cert, key = directory / "nats" / "cert.pem", directory / "nats" / "key.pem"
    issue(ca, cert, key, cn="nats")
    extra = f'\n  ca_file: "{ca.path}"\n  verify: true' if verify_clients else ""
    conf = directory / "nats-tls.conf"
    conf.write_text(f'tls {{\n  cert_file: "{cert}"\n  key_file: "{key}"{extra}\n}}\n')
    return make_nats(extra_args=["-c", str(conf)]), ca


@pytest.mark.parametrize("verify_clients", [False, True], ids=["server-tls", "mutual-tls"])
async def test_every_role_runs_against_a_tls_only_nats_server(make_nats, deploy, tmp_path, verify_clients) -> None:
    server, ca = tls_nats_server(make_nats, tmp_path, verify_clients=verify_clients)
    extra = {}
    if verify_clients:
        client_cert, client_key = tmp_path / "client" / "cert.pem", tmp_path / "client" / "key.pem"
        issue(ca, client_cert, client_key, cn="switchboard-roles", client=True)
        extra = {"nats_tls_cert": str(client_cert), "nats_tls_key": str(client_key)}
    dep = await deploy(nats_url=server.url, roles=ALL_ROLES, nats_tls_ca=ca.path, **extra)
    assert dep.component("edge").bus.server_info.get("tls_required") is True  # the lean bus is on TLS
    alice, bob = unique("alice"), unique("bob")
    a, b = await dep.raw(alice), await dep.raw(bob)
    await exchange(a, alice, b, bob, "nats-tls")  # edge -> sequencer -> JetStream -> edge
    await a.send({"type": "history", "conv": a.msgs()[0]["conv"], "id": "h1"})  # the archiver answers
    hist = await a.reply("h1")
    assert hist["type"] == "history", hist
    if verify_clients:  # without a client certificate the server does not let a connection in
        with pytest.raises(BusUnavailable):
            await bus_connect([server.url], tls=trusting(ca), max_reconnect_attempts=0, connect_timeout=2.0)


async def test_nats_tls_settings_refuse_a_server_without_tls(deploy, tmp_path) -> None:
    """nats_tls_* set, but the server speaks plain text: the role stops at
    start instead of sending its credentials and traffic unencrypted."""
    ca = make_ca(tmp_path / "ca")
    with pytest.raises(ConfigError, match="did not require TLS"):
        await deploy(roles=("edge",), nats_tls_ca=ca.path)


async def test_edge_process_on_tls_nats_serves_wss_and_reloads_on_sighup(make_nats, deploy, tmp_path,
                                                                         edge_tls) -> None:
    """The real role process (uvloop, its own signal handling): an edge
    started with SWITCHBOARD_TLS_* and SWITCHBOARD_NATS_TLS_CA against a
    TLS-only nats-server serves wss://; after the files are replaced, `kill
    -HUP` makes new connections get the new certificate while the old ones
    keep exchanging messages, and the process keeps running."""
    ca, cert, key, first = edge_tls
    server, nats_ca = tls_nats_server(make_nats, tmp_path, verify_clients=False)
    dep = await deploy(roles=("sequencer",), nats_url=server.url, nats_tls_ca=nats_ca.path)
    edge = await dep.start("edge", mode="processes", tls_cert=str(cert), tls_key=str(key))
    assert f"Switchboard is up: wss://127.0.0.1:{edge.port}/ws" in edge.output()
    alice, bob = unique("alice"), unique("bob")
    old_a = await dep.raw(alice, ssl=trusting(ca))
    old_b = await dep.raw(bob, ssl=trusting(ca))
    assert peer_der(old_a) == first
    await exchange(old_a, alice, old_b, bob, "before")
    second = issue(ca, cert, key, cn="edge-renewed")
    edge.send_signal(signal.SIGHUP)
    await edge.wait_output("TLS certificate reloaded")
    new = await dep.raw(alice, ssl=trusting(ca))
    assert peer_der(new) == second and peer_der(old_a) == first
    await exchange(old_a, alice, old_b, bob, "after")
    await exchange(new, alice, old_b, bob, "renewed")
    assert edge.proc.running, edge.output()[-2000:]


async def test_up_with_tls_forwards_sighup_to_its_edge(tmp_path, edge_tls) -> None:
    """`switchboard up` with tls_cert: it serves wss://, and a SIGHUP to `up`
    (which would otherwise end it and all its children) reaches the edge
    child, which reloads its certificate; connections stay open."""
    ca, cert, key, first = edge_tls
    port = free_port()
    data = tmp_path / "up-data"
    env = {**os.environ, "SWITCHBOARD_TLS_CERT": str(cert), "SWITCHBOARD_TLS_KEY": str(key),
           "PYTHONUNBUFFERED": "1"}
    env.pop("SWITCHBOARD_CONFIG", None)
    with procs() as made:
        up = Proc(["up", "--data", str(data), "--port", str(port)], env=env, log=tmp_path / "up.log")
        made.append(up)
        await up.wait_output(f"Switchboard is up: wss://127.0.0.1:{port}/ws", timeout=60)
        secret = auth.dev_secret(data)
        url = f"wss://127.0.0.1:{port}/ws"
        old = await Raw.open(url, auth.issue(secret, unique("alice")), ssl=trusting(ca))
        new = None
        try:
            await old.hello()
            assert peer_der(old) == first
            second = issue(ca, cert, key, cn="edge-renewed-by-up")
            up.p.send_signal(signal.SIGHUP)
            await up.wait_output("TLS certificate reloaded")
            new = await Raw.open(url, auth.issue(secret, unique("bob")), ssl=trusting(ca))
            await new.hello()
            assert peer_der(new) == second
            assert not old.closed.is_set()  # the old socket was not dropped
            assert up.p.poll() is None
        finally:
            for r in (old, new):
                if r is not None:
                    await r.close()
