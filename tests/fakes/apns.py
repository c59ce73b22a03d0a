"""A fake APNs (HTTP/2 provider API, token-based authentication)."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass

import jwt

from tests.fakes.base import FakePushService
from tests.fakes.h2server import Request, Response
from tests.fakes.tls import Cert

_PATH = re.compile(r"/3/device/([0-9a-f]{64,200})")


@dataclass
class ApnsRequest:
    token: str
    headers: dict[str, str]
    payload: dict
    jwt_header: dict
    jwt_claims: dict
    size: int


def apns_error(status: int, reason: str, headers: dict[str, str] | None = None) -> Response:
    body = {"reason": reason}
    if status == 410:
        body["timestamp"] = int(time.time() * 1000)
    return Response(status, json.dumps(body).encode(), {"content-type": "application/json", **(headers or {})})


class FakeApns(FakePushService):
    def __init__(self, *, cert: Cert, public_key_pem: bytes, key_id: str, team_id: str, topic: str) -> None:
        super().__init__(cert=cert)
        self.public_key_pem, self.key_id, self.team_id, self.topic = public_key_pem, key_id, team_id, topic

    def handle(self, req: Request) -> Response:
        m = _PATH.fullmatch(req.path)
        if req.method != "POST" or not m:
            return self.reject(404, f"bad path {req.method} {req.path}", {"reason": "BadPath"})
        auth = req.headers.get("authorization", "")
        if not auth.startswith("bearer "):
            return self.reject(403, "no bearer token", {"reason": "MissingProviderToken"})
        token = auth[len("bearer "):]
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(token, self.public_key_pem, algorithms=["ES256"], options={"require": ["iat"]})
        except jwt.PyJWTError as exc:
            return self.reject(403, f"bad provider token: {exc}", {"reason": "InvalidProviderToken"})
        if header.get("kid") != self.key_id or claims.get("iss") != self.team_id:
            return self.reject(403, f"wrong kid/iss {header} {claims}", {"reason": "InvalidProviderToken"})
        if time.time() - claims["iat"] > 3600:
            return self.reject(403, "provider token older than 1 h", {"reason": "ExpiredProviderToken"})
        if req.headers.get("apns-topic") != self.topic:
            return self.reject(400, "wrong apns-topic", {"reason": "TopicDisallowed"})
        if req.headers.get("apns-push-type") != "alert":
            return self.reject(400, "apns-push-type is not alert", {"reason": "InvalidPushType"})
        if len(req.body) > 4096:
            return self.reject(413, f"payload of {len(req.body)} bytes", {"reason": "PayloadTooLarge"})
        try:
            payload = json.loads(req.body)
            assert isinstance(payload["aps"]["alert"]["body"], str)
        except (ValueError, KeyError, TypeError, AssertionError):
            return self.reject(400, "payload is not an alert JSON", {"reason": "BadPayload"})
        if m.group(1) in self.dead:
            return apns_error(410, "Unregistered")
        scripted = self.next_scripted()
        if scripted is not None:
            return scripted
        self.received.append(ApnsRequest(m.group(1), req.headers, payload, header, claims, len(req.body)))
        return Response(200, b"", {"apns-id": "00000000-0000-0000-0000-000000000001"})
