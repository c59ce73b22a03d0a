"""Web Push: VAPID (RFC 8292) and aes128gcm payload encryption (RFC 8291).

Each send generates a fresh ECDH key pair and salt (RFC 8291 section 3.4),
encrypts the JSON payload to the subscription's p256dh/auth keys with
``http_ece``, and POSTs it to the subscription's endpoint with
``Authorization: vapid t=<ES256 JWT>, k=<our public key>``. The JWT's ``aud``
is the endpoint's origin and ``exp`` is 12 hours ahead (RFC 8292 allows at
most 24); it is cached per origin and renewed an hour before it expires.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import http_ece
import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pusher.notification import Notification, PayloadTooLarge, fit
from pusher.providers import Outcome, SendResult, http_client, transient
from switchboard.config import WebPushSettings
from switchboard.devices import Device

# RFC 8291 section 4: a push message is at most 4096 octets with one record, so
# the plaintext is at most 4096 - 86 (header) - 16 (tag) - 1 (delimiter) = 3993.
MAX_PLAINTEXT = 3993
RECORD_SIZE = 4096
JWT_LIFETIME_SEC = 12 * 3600  # RFC 8292: no more than 24 hours
JWT_RENEW_SEC = 3600  # renew this long before exp


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def build_payload(note: Notification) -> bytes:
    def build(body: str) -> bytes:
        doc = {"title": note.title, "body": body, "conv": note.conv, "seq": note.seq, "id": note.id}
        if note.badge is not None:
            doc["badge"] = note.badge
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()

    return fit(build, note.body, MAX_PLAINTEXT)


def encrypt(plaintext: bytes, *, p256dh: str, auth: str) -> bytes:
    """RFC 8291 aes128gcm body: header (salt, rs, our public key) + one record."""
    ephemeral = ec.generate_private_key(ec.SECP256R1())
    body: bytes = http_ece.encrypt(plaintext, salt=os.urandom(16), private_key=ephemeral, dh=b64url_decode(p256dh),
                                   auth_secret=b64url_decode(auth), version="aes128gcm", rs=RECORD_SIZE)
    return body


class Vapid:
    """VAPID JWTs per push-service origin, cached until an hour before exp."""

    def __init__(self, *, key_pem: bytes, subject: str, clock: Callable[[], float] = time.time) -> None:
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ValueError("the VAPID key must be a P-256 EC private key")
        self._key: ec.EllipticCurvePrivateKey = key
        self.public_key = b64url(self._key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint))
        self._subject, self._clock = subject, clock
        self._cache: dict[str, tuple[str, float]] = {}

    def header(self, endpoint: str) -> str:
        parts = urlsplit(endpoint)
        aud = f"{parts.scheme}://{parts.netloc}"
        now = self._clock()
        token, exp = self._cache.get(aud, ("", 0.0))
        if now >= exp - JWT_RENEW_SEC:
            exp = int(now) + JWT_LIFETIME_SEC
            token = jwt.encode({"aud": aud, "exp": exp, "sub": self._subject}, self._key, algorithm="ES256")
            self._cache[aud] = (token, exp)
        return f"vapid t={token}, k={self.public_key}"


class WebPushProvider:
    platform = "webpush"

    def __init__(self, *, config: WebPushSettings, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        with open(config.vapid_private_key_file, "rb") as fh:
            self.vapid = Vapid(key_pem=fh.read(), subject=config.subject, clock=clock)
        # no base_url: every subscription names its own push service
        self._http = http_client(base_url="", ca_file=config.ca_file, timeout=config.timeout)

    async def send(self, device: Device, note: Notification) -> SendResult:
        sub = json.loads(device.token)  # validated when it was registered
        if not self.config.allows(sub["endpoint"]):
            return SendResult(Outcome.DEAD_TOKEN, "push service host not in webpush.allowed_hosts")
        try:
            body = encrypt(build_payload(note), p256dh=sub["keys"]["p256dh"], auth=sub["keys"]["auth"])
        except PayloadTooLarge as exc:
            return SendResult(Outcome.TOO_LARGE, str(exc))
        except (ValueError, http_ece.ECEException) as exc:  # keys that are not a P-256 point
            return SendResult(Outcome.DEAD_TOKEN, f"bad subscription keys: {type(exc).__name__}")
        headers = {
            "authorization": self.vapid.header(sub["endpoint"]),
            "content-encoding": "aes128gcm",
            "content-type": "application/octet-stream",
            "ttl": str(self.config.ttl),
            "urgency": self.config.urgency,
            # RFC 8030 5.4: a newer message with the same topic replaces a pending one (<= 32 base64url chars)
            "topic": b64url(hashlib.sha256(note.conv.encode()).digest()[:24]),
        }
        try:
            resp = await self._http.post(sub["endpoint"], content=body, headers=headers)
        except httpx.HTTPError as exc:
            return SendResult(Outcome.RETRY, f"network: {type(exc).__name__}")
        status = resp.status_code
        if status in (200, 201, 202):
            return SendResult.ok()
        if status in (404, 410):
            return SendResult(Outcome.DEAD_TOKEN, f"HTTP {status}")
        if status == 413:
            return SendResult(Outcome.TOO_LARGE, "HTTP 413")
        if status == 429 or status >= 500:
            return transient(resp, f"HTTP {status}")
        return SendResult(Outcome.FAILED, f"HTTP {status}")

    async def close(self) -> None:
        await self._http.aclose()
