"""switchboard.tls and the TLS settings, without sockets (handshakes over
memory BIOs).

What it protects: the settings refuse half a certificate pair; the edge's
server context presents the configured certificate; a reload switches what
new handshakes present, and a pair that does not load (a missing file, a key
of another certificate) leaves the live context presenting the old one; the
NATS client context verifies the server and carries the client certificate."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from switchboard import tls
from switchboard.config import Settings
from switchboard.errors import ConfigError
from tests.e2e.certs import CA, issue, make_ca


def presented(server: ssl.SSLContext, ca: CA) -> bytes:
    """DER of the certificate ``server`` presents to a client trusting ``ca``."""
    client = ssl.create_default_context(cafile=ca.path)
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    c = client.wrap_bio(c_in, c_out, server_hostname="localhost")
    s = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"c": False, "s": False}
    for _ in range(20):
        for name, obj in (("c", c), ("s", s)):
            if not done[name]:
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return c.getpeercert(binary_form=True)
    raise AssertionError("handshake did not finish")


@pytest.fixture
def pair(tmp_path: Path) -> tuple[CA, Path, Path, bytes]:
    ca = make_ca(tmp_path / "ca")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    return ca, cert, key, issue(ca, cert, key, cn="first")


@pytest.mark.parametrize("values", [
    {"tls_cert": "c.pem"}, {"tls_key": "k.pem"}, {"nats_tls_cert": "c.pem"}, {"nats_tls_key": "k.pem"},
], ids=["edge-cert-only", "edge-key-only", "nats-cert-only", "nats-key-only"])
def test_half_a_pair_is_a_config_error(values: dict) -> None:
    with pytest.raises(ConfigError, match="set both or neither"):
        Settings(**values)


def test_server_context_presents_the_certificate_and_reload_switches_it(pair, tmp_path) -> None:
    ca, cert, key, first = pair
    ctx = tls.server_context(str(cert), str(key))
    assert presented(ctx, ca) == first
    second = issue(ca, cert, key, cn="second")
    tls.reload_server(ctx, str(cert), str(key))
    assert presented(ctx, ca) == second


@pytest.mark.parametrize("breakage", ["missing-key", "key-of-another-cert", "garbage-cert"])
def test_a_reload_that_fails_keeps_the_old_certificate(pair, tmp_path, breakage: str) -> None:
    ca, cert, key, first = pair
    ctx = tls.server_context(str(cert), str(key))
    if breakage == "missing-key":
        key.unlink()
    elif breakage == "key-of-another-cert":
        issue(ca, tmp_path / "other.pem", key, cn="other")  # new key, cert.pem unchanged
    else:
        cert.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(ConfigError):
        tls.reload_server(ctx, str(cert), str(key))
    assert presented(ctx, ca) == first


def test_server_context_refuses_a_missing_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match="no-such"):
        tls.server_context(str(tmp_path / "no-such.pem"), str(tmp_path / "no-such.key"))


def test_nats_client_context(pair, tmp_path) -> None:
    ca, cert, key, _ = pair
    assert tls.nats_client_context(Settings()) is None
    assert tls.nats_py_options(Settings()) == {}
    ctx = tls.nats_client_context(Settings(nats_tls_ca=ca.path))
    assert ctx is not None and ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    # With a client certificate (mutual TLS), and a server context that checks it.
    ccert, ckey = tmp_path / "client.pem", tmp_path / "client.key"
    issue(ca, ccert, ckey, cn="roles", client=True)
    mutual = tls.nats_client_context(Settings(nats_tls_ca=ca.path, nats_tls_cert=str(ccert),
                                              nats_tls_key=str(ckey)))
    server = tls.server_context(str(cert), str(key))
    server.verify_mode = ssl.CERT_REQUIRED
    server.load_verify_locations(ca.path)
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    c = mutual.wrap_bio(c_in, c_out, server_hostname="127.0.0.1")
    s = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(20):
        for obj in (c, s):
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    assert s.getpeercert()["subject"] == ((("commonName", "roles"),),)
    with pytest.raises(ConfigError, match="nats_tls_ca"):
        tls.nats_client_context(Settings(nats_tls_ca=str(tmp_path / "no-such-ca.pem")))
