"""APNs over HTTP/2 with token-based (ES256 JWT) authentication.

Apple's rules followed here: the provider token has header ``kid`` = key id
and claims ``iss`` = team id, ``iat``; APNs rejects a token older than one
hour (ExpiredProviderToken) and answers TooManyProviderTokenUpdates when it
is replaced more often than every 20 minutes, so it is reused and refreshed
every 50 minutes. ``apns-collapse-id`` = conversation: a newer notification
of the same conversation replaces the older one on the device.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import httpx
import jwt

from pusher.notification import Notification, PayloadTooLarge, fit
from pusher.providers import Outcome, SendResult, http_client, transient
from switchboard.config import ApnsSettings
from switchboard.devices import Device

MAX_PAYLOAD = 4096  # bytes, Apple's limit for a regular remote notification
# Refresh at 50 min: under the 60 min expiry, over the 20 min minimum interval.
TOKEN_REFRESH_SEC = 50 * 60
# 400 reasons that mean "this token is of no use to us": remove it.
DEAD_400 = {"BadDeviceToken", "DeviceTokenNotForTopic"}


class ProviderToken:
    """The ES256 provider JWT, reused until it is TOKEN_REFRESH_SEC old."""

    def __init__(self, *, key_pem: bytes, key_id: str, team_id: str,
                 clock: Callable[[], float] = time.time) -> None:
        self._key, self._key_id, self._team_id, self._clock = key_pem, key_id, team_id, clock
        self._token: str | None = None
        self._issued = 0.0

    def get(self) -> str:
        now = self._clock()
        if self._token is None or now - self._issued >= TOKEN_REFRESH_SEC:
            self._issued = now
            self._token = jwt.encode({"iss": self._team_id, "iat": int(now)}, self._key, algorithm="ES256",
                                     headers={"kid": self._key_id})
        return self._token

    def invalidate(self) -> None:
        """After ExpiredProviderToken: the next get() signs a new one."""
        self._token = None


def build_payload(note: Notification) -> bytes:
    def build(body: str) -> bytes:
        aps: dict[str, object] = {"alert": {"title": note.title, "body": body}, "thread-id": note.conv,
                                  "sound": "default"}
        if note.badge is not None:
            aps["badge"] = note.badge
        return json.dumps({"aps": aps, "conv": note.conv, "seq": note.seq, "id": note.id},
                          separators=(",", ":"), ensure_ascii=False).encode()

    return fit(build, note.body, MAX_PAYLOAD)


class ApnsProvider:
    platform = "apns"

    def __init__(self, *, config: ApnsSettings, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        with open(config.key_file, "rb") as fh:
            key = fh.read()
        self.tokens = ProviderToken(key_pem=key, key_id=config.key_id, team_id=config.team_id, clock=clock)
        self._http = http_client(base_url=config.base_url, ca_file=config.ca_file, timeout=config.timeout)

    async def send(self, device: Device, note: Notification) -> SendResult:
        try:
            payload = build_payload(note)
        except PayloadTooLarge as exc:
            return SendResult(Outcome.TOO_LARGE, str(exc))
        headers = {
            "authorization": f"bearer {self.tokens.get()}",
            "apns-topic": self.config.topic,
            "apns-push-type": "alert",
            "apns-priority": str(self.config.priority),
            "apns-collapse-id": note.conv,  # ids are <= 64 bytes, APNs' limit
            "content-type": "application/json",
        }
        try:
            resp = await self._http.post(f"/3/device/{device.token}", content=payload, headers=headers)
        except httpx.HTTPError as exc:
            return SendResult(Outcome.RETRY, f"network: {type(exc).__name__}")
        return self._result(resp)

    def _result(self, resp: httpx.Response) -> SendResult:
        status = resp.status_code
        if status == 200:
            return SendResult.ok()
        try:
            reason = str(resp.json().get("reason", ""))
        except ValueError:
            reason = ""
        reason = reason or f"HTTP {status}"
        if status == 410 or (status == 400 and reason in DEAD_400):
            return SendResult(Outcome.DEAD_TOKEN, reason)
        if status == 413 or reason == "PayloadTooLarge":
            return SendResult(Outcome.TOO_LARGE, reason)
        if status == 403 and reason == "ExpiredProviderToken":
            self.tokens.invalidate()
            return SendResult(Outcome.RETRY, reason)
        if status == 429 or status >= 500:
            return transient(resp, reason)
        return SendResult(Outcome.FAILED, reason)

    async def close(self) -> None:
        await self._http.aclose()
