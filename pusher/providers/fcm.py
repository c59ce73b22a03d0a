"""FCM HTTP v1 with a service-account OAuth2 access token.

The access token comes from the service account's ``token_uri``: an RS256
JWT assertion (iss = client_email, scope = firebase.messaging, aud =
token_uri, one hour) exchanged with grant_type jwt-bearer. It is cached until
five minutes before it expires, and dropped on a 401.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import httpx
import jwt

from pusher.notification import Notification, PayloadTooLarge, fit
from pusher.providers import Outcome, SendResult, http_client, transient
from switchboard.config import FcmSettings
from switchboard.devices import Device

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
MAX_PAYLOAD = 4096  # bytes, FCM's limit for a message (measured conservatively on the whole request)
# Renew this long before expiry: covers clock skew and a request in flight.
EXPIRY_MARGIN_SEC = 300
ASSERTION_LIFETIME_SEC = 3600  # Google's maximum
RETRY_CODES = {"QUOTA_EXCEEDED", "RESOURCE_EXHAUSTED", "UNAVAILABLE", "INTERNAL"}


class AccessTokens:
    """OAuth2 access tokens for a service account, cached until shortly before expiry."""

    def __init__(self, *, account: dict[str, str], token_uri: str, http: httpx.AsyncClient,
                 clock: Callable[[], float] = time.time) -> None:
        self._account, self._token_uri, self._http, self._clock = account, token_uri, http, clock
        self._token: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()

    def assertion(self) -> str:
        now = int(self._clock())
        claims = {"iss": self._account["client_email"], "scope": SCOPE, "aud": self._token_uri,
                  "iat": now, "exp": now + ASSERTION_LIFETIME_SEC}
        return jwt.encode(claims, self._account["private_key"], algorithm="RS256",
                          headers={"kid": self._account.get("private_key_id", "")})

    async def get(self) -> str:
        async with self._lock:  # one exchange at a time, however many sends wait
            if self._token is None or self._clock() >= self._expires - EXPIRY_MARGIN_SEC:
                resp = await self._http.post(self._token_uri, data={"grant_type": GRANT,
                                                                    "assertion": self.assertion()})
                resp.raise_for_status()
                body = resp.json()
                self._token = body["access_token"]
                self._expires = self._clock() + float(body.get("expires_in", 3600))
            return self._token

    def invalidate(self) -> None:
        self._token = None


def build_message(device: Device, note: Notification) -> bytes:
    def build(body: str) -> bytes:
        notification: dict[str, object] = {"tag": note.conv}
        android: dict[str, object] = {"collapse_key": note.conv, "priority": "high", "notification": notification}
        aps: dict[str, object] = {"thread-id": note.conv}
        if note.badge is not None:
            notification["notification_count"] = note.badge
            aps["badge"] = note.badge
        msg = {"token": device.token,
               "notification": {"title": note.title, "body": body},
               "data": {"conv": note.conv, "seq": str(note.seq), "id": note.id},  # FCM data values are strings
               "android": android,
               "apns": {"headers": {"apns-collapse-id": note.conv}, "payload": {"aps": aps}},
               "webpush": {"headers": {"Topic": note.conv[:32]}}}
        return json.dumps({"message": msg}, separators=(",", ":"), ensure_ascii=False).encode()

    return fit(build, note.body, MAX_PAYLOAD)


def _error_code(resp: httpx.Response) -> str:
    try:
        err = resp.json().get("error", {})
    except ValueError:
        return f"HTTP {resp.status_code}"
    for detail in err.get("details", []) or []:
        if isinstance(detail, dict) and detail.get("errorCode"):
            return str(detail["errorCode"])
    return str(err.get("status") or f"HTTP {resp.status_code}")


class FcmProvider:
    platform = "fcm"

    def __init__(self, *, config: FcmSettings, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        with open(config.service_account_file) as fh:
            account = json.load(fh)
        self.project_id = account["project_id"]
        self._http = http_client(base_url=config.base_url, ca_file=config.ca_file, timeout=config.timeout)
        self.tokens = AccessTokens(account=account, token_uri=config.token_uri or account["token_uri"],
                                   http=self._http, clock=clock)

    async def send(self, device: Device, note: Notification) -> SendResult:
        try:
            body = build_message(device, note)
        except PayloadTooLarge as exc:
            return SendResult(Outcome.TOO_LARGE, str(exc))
        try:
            token = await self.tokens.get()
            resp = await self._http.post(
                f"/v1/projects/{self.project_id}/messages:send", content=body,
                headers={"authorization": f"Bearer {token}", "content-type": "application/json"})
        except httpx.HTTPStatusError as exc:  # the token endpoint refused
            status = exc.response.status_code
            kind = Outcome.RETRY if status == 429 or status >= 500 else Outcome.FAILED
            return SendResult(kind, f"oauth token: HTTP {status}")
        except httpx.HTTPError as exc:
            return SendResult(Outcome.RETRY, f"network: {type(exc).__name__}")
        if resp.status_code == 200:
            return SendResult.ok()
        code = _error_code(resp)
        if code == "UNREGISTERED":
            return SendResult(Outcome.DEAD_TOKEN, code)
        if resp.status_code == 401 or code in ("UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR"):
            self.tokens.invalidate()
            return SendResult(Outcome.RETRY, code)
        if code in RETRY_CODES or resp.status_code == 429 or resp.status_code >= 500:
            return transient(resp, code)
        return SendResult(Outcome.FAILED, code)

    async def close(self) -> None:
        await self._http.aclose()
