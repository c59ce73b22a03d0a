"""Push providers: one per platform, behind :class:`PushProvider`.

A provider turns the platform's answer into a :class:`SendResult`, following
the platform's documentation; the worker decides what to do with it (ack,
remove the token, retry later, dead-letter).
"""

from __future__ import annotations

import email.utils
import enum
import ssl
import time
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import httpx

from pusher.notification import Notification
from switchboard.devices import Device


class Outcome(enum.Enum):
    OK = "ok"  # the provider accepted it
    DEAD_TOKEN = "dead_token"  # the token will never work again: remove it
    RETRY = "retry"  # transient (throttled, server error, network): try again later
    TOO_LARGE = "too_large"  # rejected for size even after trimming: permanent
    FAILED = "failed"  # permanent for this entry (bad request, bad credentials)


@dataclass(frozen=True, slots=True)
class SendResult:
    outcome: Outcome
    reason: str = ""  # the provider's reason code, e.g. "Unregistered", "QUOTA_EXCEEDED"
    retry_after: float | None = None  # seconds, from Retry-After when the provider sent one

    @classmethod
    def ok(cls) -> SendResult:
        return cls(Outcome.OK)


@runtime_checkable
class PushProvider(Protocol):
    """Sends one notification to one device of its platform.

    ``send`` never raises for a provider answer or a network failure: it
    returns a :class:`SendResult`. It never logs a credential or a full token.
    """

    platform: str

    async def send(self, device: Device, note: Notification) -> SendResult: ...

    async def close(self) -> None: ...


def retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Parse a Retry-After header: delay-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def http_client(*, base_url: str, ca_file: str | None, timeout: float) -> httpx.AsyncClient:
    """An HTTP/2 client (ALPN over TLS). ``ca_file``: trust this CA (tests' self-signed fakes)."""
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_file) if ca_file else True
    return httpx.AsyncClient(base_url=base_url, http2=True, verify=verify, timeout=timeout,
                             limits=httpx.Limits(max_connections=4, max_keepalive_connections=4))


def transient(resp: httpx.Response, reason: str) -> SendResult:
    return SendResult(Outcome.RETRY, reason, retry_after(resp.headers.get("retry-after")))
