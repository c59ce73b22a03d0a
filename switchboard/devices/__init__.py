"""Device tokens for push notifications, per user.

A device is (platform, token). Platforms: ``apns`` (hex device token),
``fcm`` (FCM registration token), ``webpush`` (the browser's
PushSubscription as JSON: ``{"endpoint": "https://…", "keys": {"p256dh": …,
"auth": …}}``). Tokens are validated and normalised by :func:`check_token`
before they are stored; a bad one is a coded error, nothing is stored.

The request/reply of ``sb.api.push.register`` (called by the edge for the
``push.register`` frame, answered by the pusher) lives here too, so the edge
and the pusher share it without importing each other.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Literal, Protocol, get_args, runtime_checkable
from urllib.parse import urlsplit

import msgspec

from switchboard.errors import SwitchboardError
from switchboard.events import ErrorBody

Platform = Literal["apns", "fcm", "webpush"]
PLATFORMS: tuple[str, ...] = get_args(Platform)

_APNS = re.compile(r"[0-9a-fA-F]{64,200}")  # 32 bytes today; Apple says the length may grow
_FCM = re.compile(r"[A-Za-z0-9_:\-.]{20,4096}")  # registration tokens are ~150-200 such chars
_B64URL = re.compile(r"[A-Za-z0-9_\-]+=*")
# 8 KiB: a real subscription JSON is ~300-700 bytes; bounds what one user can make us store.
MAX_WEBPUSH_TOKEN = 8192


class UnknownPlatform(SwitchboardError):
    """The push platform is not one of apns, fcm, webpush."""

    code = "unknown_platform"


class BadToken(SwitchboardError):
    """The device token is malformed for its platform."""

    code = "bad_token"


class Device(msgspec.Struct, frozen=True):
    platform: str
    token: str  # normalised (see check_token)

    @property
    def short(self) -> str:
        """What logs show instead of the token: a short hash."""
        return token_hash(self.token)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:10]


def check_token(platform: object, token: object) -> str:
    """Return the normalised token, or raise UnknownPlatform / BadToken.

    APNs tokens are lower-cased hex; Web Push subscriptions are re-serialised
    as compact JSON with only endpoint and keys, so the same subscription sent
    twice is stored once.
    """
    if platform not in PLATFORMS:
        raise UnknownPlatform(f"platform {str(platform)[:20]!r} is not one of {', '.join(PLATFORMS)}")
    if not isinstance(token, str):
        raise BadToken("token must be a string")
    if platform == "apns":
        if not _APNS.fullmatch(token):
            raise BadToken("apns token must be 64 or more hex characters")
        return token.lower()
    if platform == "fcm":
        if not _FCM.fullmatch(token):
            raise BadToken("fcm token must be 20..4096 characters of [A-Za-z0-9_:.-]")
        return token
    return _check_webpush(token)


def _check_webpush(token: str) -> str:
    if len(token) > MAX_WEBPUSH_TOKEN:
        raise BadToken("webpush subscription is too long")
    try:
        sub = json.loads(token)
    except ValueError:
        raise BadToken("webpush token must be the subscription JSON") from None
    if not isinstance(sub, dict):
        raise BadToken("webpush token must be a JSON object")
    endpoint, keys = sub.get("endpoint"), sub.get("keys")
    if not isinstance(endpoint, str) or urlsplit(endpoint).scheme != "https" or not urlsplit(endpoint).hostname:
        raise BadToken("webpush endpoint must be an https URL")
    if not isinstance(keys, dict):
        raise BadToken("webpush subscription needs keys {p256dh, auth}")
    p256dh, auth = _webpush_key(keys, "p256dh"), _webpush_key(keys, "auth")
    # p256dh is an uncompressed P-256 point (65 bytes -> 87 chars), auth 16 bytes (22 chars)
    if len(p256dh.rstrip("=")) != 87 or len(auth.rstrip("=")) != 22:
        raise BadToken("webpush keys have the wrong length")
    return json.dumps({"endpoint": endpoint, "keys": {"p256dh": p256dh, "auth": auth}},
                      separators=(",", ":"), sort_keys=True)


def _webpush_key(keys: dict[str, object], name: str) -> str:
    value = keys.get(name)
    if not isinstance(value, str) or not _B64URL.fullmatch(value):
        raise BadToken(f"webpush keys.{name} must be base64url")
    return value


@runtime_checkable
class DeviceStore(Protocol):
    """Device tokens per user.

    Contract (tests/unit/test_push_devices.py runs it against every backend):

    - ``register`` validates (``check_token``) and stores (user, platform,
      token); registering the same device again is a no-op. A token belongs to
      one user: registering it for another user moves it (a phone changed
      hands, or the app logged in as someone else).
    - ``tokens_of`` lists a user's devices, oldest registration first.
    - ``remove`` deletes one device (a dead token); removing an unknown one is
      a no-op.
    """

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def register(self, user: str, platform: str, token: str) -> Device: ...

    async def tokens_of(self, user: str) -> list[Device]: ...

    async def remove(self, platform: str, token: str) -> None: ...


class RegisterRequest(msgspec.Struct):
    """``sb.api.push.register``: store a device token for ``user``."""

    user: str
    platform: str
    token: str


class RegisterReply(msgspec.Struct, omit_defaults=True):
    ok: bool = False
    error: ErrorBody | None = None


def open_device_store(url: str) -> DeviceStore:
    """``memory://``, ``sqlite:///path`` (may be the same file as the store) or
    ``cassandra://h1,h2/keyspace?…`` (same URL form as the store; several pushers)."""
    scheme, _, rest = url.partition("://")
    if scheme == "memory":
        from switchboard.devices.memory import MemoryDeviceStore

        return MemoryDeviceStore()
    if scheme == "sqlite":
        from switchboard.devices.sqlite import SqliteDeviceStore

        return SqliteDeviceStore(path=rest[1:] if rest.startswith("/") else rest)
    if scheme == "cassandra":
        from switchboard.devices.cassandra import CassandraDeviceStore

        return CassandraDeviceStore(url=url)
    from switchboard.errors import ConfigError

    raise ConfigError(f"unknown device store URL scheme {scheme!r}; use memory://, sqlite:// or cassandra://")
