"""TLS contexts from settings: the edge's server side (``wss://``) and the
client side of every NATS connection (nats-py and the lean bus).

Edge (``tls_cert`` + ``tls_key``): one server context for the listening
socket. :func:`reload_server` loads a renewed certificate and key into that
same context: handshakes after it present the new certificate, connections
already open keep the session they negotiated (nothing is dropped). The pair
is first loaded into a scratch context, so a bad file (missing, unreadable,
key not matching the certificate) leaves the live context untouched and the
edge keeps serving the old certificate.

NATS (``nats_tls_ca``, ``nats_tls_cert`` + ``nats_tls_key``): any of them set
means TLS is required on every NATS connection of the process; the server is
verified against ``nats_tls_ca`` (else the system's CAs) and its host name,
and ``nats_tls_cert``/``nats_tls_key`` are the client certificate for servers
that verify clients (mutual TLS). A server that does not offer TLS is refused
(no silent downgrade to plain text).
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

from switchboard.compat import natspy
from switchboard.config import Settings
from switchboard.errors import ConfigError

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

# TLS 1.2 is the oldest version without known protocol breaks that every
# current client (browsers, mobile OSes, nats-server) speaks.
MIN_VERSION = ssl.TLSVersion.TLSv1_2


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """A server context for ``wss://`` with ``cert`` (PEM chain) and ``key``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = MIN_VERSION
    ctx.set_alpn_protocols(["http/1.1"])  # WebSocket upgrades are HTTP/1.1
    _load_pair(ctx, cert, key)
    return ctx


def reload_server(ctx: ssl.SSLContext, cert: str, key: str) -> None:
    """Load a renewed pair into the live ``ctx`` (new handshakes use it).

    Raises :class:`ConfigError` and leaves ``ctx`` as it was if the pair does
    not load."""
    _load_pair(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), cert, key)  # check first: ctx must stay whole
    _load_pair(ctx, cert, key)


def _load_pair(ctx: ssl.SSLContext, cert: str, key: str) -> None:
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"TLS certificate {cert!r} / key {key!r}: {exc}") from None


def nats_wants_tls(settings: Settings) -> bool:
    return bool(settings.nats_tls_ca or settings.nats_tls_cert)


def nats_client_context(settings: Settings) -> ssl.SSLContext | None:
    """The client context of NATS connections, or None when no ``nats_tls_*``
    is set (then a ``tls://`` URL or a server requiring TLS still gets TLS,
    verified against the system's CAs)."""
    if not nats_wants_tls(settings):
        return None
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.nats_tls_ca or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"nats_tls_ca {settings.nats_tls_ca!r}: {exc}") from None
    ctx.minimum_version = MIN_VERSION
    if settings.nats_tls_cert:
        _load_pair(ctx, settings.nats_tls_cert, settings.nats_tls_key)
    return ctx


def nats_py_options(settings: Settings) -> dict[str, ssl.SSLContext]:
    """Keyword arguments for ``nats.connect`` (nats-py): the client context."""
    ctx = nats_client_context(settings)
    return {"tls": ctx} if ctx is not None else {}


def require_tls(nc: NATS, settings: Settings) -> None:
    """After ``nats.connect``: refuse a server that did not require TLS when
    ``nats_tls_*`` is set. nats-py upgrades only when the server's INFO says
    ``tls_required`` and otherwise goes on in plain text, so a server (or a
    man in the middle) that leaves it out would get the connection
    unencrypted. The lean bus refuses that itself."""
    if not nats_wants_tls(settings):
        return
    if not natspy.server_info(nc).get("tls_required"):  # no public accessor: switchboard/compat/natspy.py
        raise ConfigError("NATS server did not require TLS, but nats_tls_* is set: refusing to talk to it in "
                          "plain text (configure tls {} on every nats-server, without allow_non_tls)")
