"""A fake Web Push service (RFC 8030) that checks VAPID and decrypts (RFC 8291)."""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import time
from dataclasses import dataclass

import http_ece
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.fakes.base import FakePushService
from tests.fakes.h2server import Request, Response
from tests.fakes.tls import Cert


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class WebPushRequest:
    subscription: str  # the id in the endpoint path
    headers: dict[str, str]
    vapid_claims: dict
    payload: dict  # decrypted
    size: int


class FakeWebPush(FakePushService):
    def __init__(self, *, cert: Cert, vapid_public_key: str) -> None:
        super().__init__(cert=cert)
        self.vapid_public_key = vapid_public_key  # base64url uncompressed point, as the browser got it
        self._subs: dict[str, tuple[ec.EllipticCurvePrivateKey, bytes]] = {}
        self._n = itertools.count(1)

    def subscribe(self) -> tuple[str, str]:
        """What a browser would do: make keys, get an endpoint. Returns (id, subscription JSON)."""
        sid = f"sub{next(self._n)}"
        key, auth = ec.generate_private_key(ec.SECP256R1()), os.urandom(16)
        self._subs[sid] = (key, auth)
        pub = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        sub = {"endpoint": f"{self.base_url}/push/{sid}", "keys": {"p256dh": _b64(pub), "auth": _b64(auth)}}
        return sid, json.dumps(sub)

    def handle(self, req: Request) -> Response:
        m = re.fullmatch(r"/push/(\w+)", req.path)
        if req.method != "POST" or not m or m.group(1) not in self._subs:
            return self.reject(404, f"unknown subscription {req.path}", {})
        sid = m.group(1)
        vapid = re.fullmatch(r"vapid t=([^,\s]+),\s*k=([A-Za-z0-9_-]+)", req.headers.get("authorization", ""))
        if not vapid or vapid.group(2) != self.vapid_public_key:
            return self.reject(401, "missing or foreign VAPID authorization", {})
        pub = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), _unb64(vapid.group(2)))
        try:
            claims = jwt.decode(vapid.group(1), pub, algorithms=["ES256"], audience=self.base_url,
                                options={"require": ["exp", "aud", "sub"]})
        except jwt.PyJWTError as exc:
            return self.reject(403, f"bad VAPID JWT: {exc}", {})
        if claims["exp"] > time.time() + 86400 or not claims["sub"].startswith("mailto:"):
            return self.reject(403, f"VAPID exp/sub rejected: {claims}", {})
        if req.headers.get("content-encoding") != "aes128gcm" or not req.headers.get("ttl", "").isdigit():
            return self.reject(400, f"bad content-encoding/ttl {req.headers}", {})
        if len(req.body) > 4096:
            return self.reject(413, f"body of {len(req.body)} bytes", {})
        key, auth = self._subs[sid]
        try:
            payload = json.loads(http_ece.decrypt(req.body, private_key=key, auth_secret=auth, version="aes128gcm"))
        except Exception as exc:
            return self.reject(400, f"cannot decrypt: {exc!r}", {})
        if sid in self.dead:
            return Response(410)
        scripted = self.next_scripted()
        if scripted is not None:
            return scripted
        self.received.append(WebPushRequest(sid, req.headers, claims, payload, len(req.body)))
        return Response(201, b"", {"location": f"{self.base_url}/message/{next(self._n)}"})
