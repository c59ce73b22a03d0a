"""A fake FCM HTTP v1 API plus the OAuth2 token endpoint of its service account."""

from __future__ import annotations

import itertools
import json
import re
import time
from dataclasses import dataclass
from urllib.parse import parse_qs

import jwt

from tests.fakes.base import FakePushService
from tests.fakes.h2server import Request, Response
from tests.fakes.tls import Cert

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"


@dataclass
class FcmRequest:
    access_token: str
    message: dict
    size: int


def fcm_error(http: int, status: str, error_code: str | None = None,
              headers: dict[str, str] | None = None) -> Response:
    err: dict = {"code": http, "message": f"fake {status}", "status": status}
    if error_code:
        err["details"] = [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": error_code}]
    return Response(http, json.dumps({"error": err}).encode(), {"content-type": "application/json", **(headers or {})})


class FakeFcm(FakePushService):
    def __init__(self, *, cert: Cert, project_id: str, client_email: str, public_key_pem: bytes) -> None:
        super().__init__(cert=cert)
        self.project_id, self.client_email, self.public_key_pem = project_id, client_email, public_key_pem
        self.issued: set[str] = set()
        self.assertions: list[dict] = []  # decoded claims of every accepted token request
        self._n = itertools.count(1)

    @property
    def token_uri(self) -> str:
        return f"{self.base_url}/token"

    def handle(self, req: Request) -> Response:
        if req.method == "POST" and req.path == "/token":
            return self._token(req)
        if req.method != "POST" or not re.fullmatch(rf"/v1/projects/{self.project_id}/messages:send", req.path):
            return self.reject(404, f"bad path {req.method} {req.path}", {"error": {"code": 404}})
        auth = req.headers.get("authorization", "")
        access = auth[len("Bearer "):] if auth.startswith("Bearer ") else ""
        if access not in self.issued:
            self.problems.append("send without a valid access token")
            return fcm_error(401, "UNAUTHENTICATED")
        try:
            message = json.loads(req.body)["message"]
            token = message["token"]
            assert all(isinstance(v, str) for v in message.get("data", {}).values())
        except (ValueError, KeyError, TypeError, AssertionError):
            self.problems.append("malformed message")
            return fcm_error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT")
        if len(req.body) > 4096:
            self.problems.append(f"message of {len(req.body)} bytes")
            return fcm_error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT")
        if token in self.dead:
            return fcm_error(404, "NOT_FOUND", "UNREGISTERED")
        scripted = self.next_scripted()
        if scripted is not None:
            return scripted
        self.received.append(FcmRequest(access, message, len(req.body)))
        name = f"projects/{self.project_id}/messages/{next(self._n)}"
        return Response(200, json.dumps({"name": name}).encode(), {"content-type": "application/json"})

    def _token(self, req: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs(req.body.decode()).items()}
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return self.reject(400, f"bad grant_type {form.get('grant_type')}", {"error": "unsupported_grant_type"})
        try:
            claims = jwt.decode(form.get("assertion", ""), self.public_key_pem, algorithms=["RS256"],
                                audience=self.token_uri, options={"require": ["iat", "exp", "iss", "aud"]})
        except jwt.PyJWTError as exc:
            return self.reject(400, f"bad assertion: {exc}", {"error": "invalid_grant"})
        if claims["iss"] != self.client_email or claims.get("scope") != SCOPE:
            return self.reject(400, f"wrong iss/scope {claims}", {"error": "invalid_scope"})
        if claims["exp"] - claims["iat"] > 3600 or claims["exp"] < time.time():
            return self.reject(400, "assertion lifetime", {"error": "invalid_grant"})
        self.assertions.append(claims)
        token = f"ya29.fake-{next(self._n)}"
        self.issued.add(token)
        return Response(200, json.dumps({"access_token": token, "expires_in": 3599,
                                         "token_type": "Bearer"}).encode(), {"content-type": "application/json"})
