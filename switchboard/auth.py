"""JWT (HS256) tokens: ``sub`` is the user id, ``exp`` is honoured.

Tokens are verified here, not by PyJWT (which still signs them, in
:func:`issue`): its decode prepared the key on every call (a PEM check by
regular expression among others) and cost ~54 µs, a tenth of an edge's work
per connection in a reconnect storm; this HS256-only check costs ~16 µs
(authenticate as a whole) with the key prepared once per secret. Only ``alg`` HS256 is accepted (so
no algorithm confusion: ``none`` and public-key algorithms are refused
before anything else is read), the signature is checked before the claims
are parsed, and the claims must be a JSON object holding ``sub`` and ``exp``
(not null).

The time claims were checked here already (PyJWT truncated ``exp`` to an
integer, a leeway of 4-5 s instead of 5, and accepted numeric strings such
as ``"exp": "99999999999"``): ``exp`` (required), ``iat`` and ``nbf`` (when
present) must be JSON numbers; a token is valid from ``nbf - LEEWAY_SEC``
(and not issued after ``now + LEEWAY_SEC``) until ``exp + LEEWAY_SEC``.
:func:`authenticate` returns the expiry too: the edge ends a socket when its
token expires.

A token never reaches a log: errors say what was wrong, not what was sent.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import math
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from switchboard import ids
from switchboard.errors import AuthError, InvalidId

ALGORITHM = "HS256"
LEEWAY_SEC = 5  # clock skew between the token issuer and the edge
_REQUIRED = ("sub", "exp")


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a valid token names, and until when (seconds since the epoch,
    leeway included: the moment the token stops being accepted)."""

    user: str
    expires_at: float


def issue(secret: str, user: str, *, ttl_sec: int = 30 * 86400, now: float | None = None) -> str:
    ids.check(user, "user")
    now = time.time() if now is None else now
    return jwt.encode({"sub": user, "iat": int(now), "exp": int(now + ttl_sec)}, secret, algorithm=ALGORITHM)


def verify(secret: str, token: str | None, *, now: float | None = None) -> str:
    """The user id of a valid token; :class:`AuthError` otherwise."""
    return authenticate(secret, token, now=now).user


def authenticate(secret: str, token: str | None, *, now: float | None = None) -> Identity:
    """The user and expiry of a valid token; :class:`AuthError` otherwise."""
    if not token:
        raise AuthError("missing token")
    claims = _verified_claims(secret, token)
    now = time.time() if now is None else now
    exp = _time_claim(claims, "exp")
    if now > exp + LEEWAY_SEC:
        raise AuthError("token expired")
    if "nbf" in claims and _time_claim(claims, "nbf") > now + LEEWAY_SEC:
        raise AuthError("token not yet valid (nbf)")
    if "iat" in claims and _time_claim(claims, "iat") > now + LEEWAY_SEC:
        raise AuthError("token issued in the future (iat)")
    try:
        user = ids.check(claims.get("sub"), "user")
    except InvalidId:
        raise AuthError("token subject is not a valid user id") from None
    return Identity(user=user, expires_at=exp + LEEWAY_SEC)


@functools.lru_cache(maxsize=4)  # one secret in use, two while it is rotated
def _prepared(secret: str) -> hmac.HMAC:  # keyed once, copied per token
    return hmac.new(secret.encode(), digestmod=hashlib.sha256)


def _b64(part: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise AuthError("token invalid: not base64url") from None


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        raise AuthError(f"token invalid: {what} is not JSON") from None
    if not isinstance(value, dict):
        raise AuthError(f"token invalid: {what} is not a JSON object")
    return value


def _verified_claims(secret: str, token: str) -> dict[str, Any]:
    """The claims of an HS256 token signed with ``secret``; AuthError otherwise."""
    parts = token.split(".")
    if len(parts) != 3:
        raise AuthError("token invalid: not a JWS compact token")
    head, body, sig = parts
    header = _json_object(_b64(head), "header")
    if header.get("alg") != ALGORITHM:  # before the signature: HS256 or nothing
        raise AuthError(f"token invalid: alg must be {ALGORITHM}")
    mac = _prepared(secret).copy()
    try:
        mac.update(f"{head}.{body}".encode("ascii"))
    except UnicodeEncodeError:
        raise AuthError("token invalid: not base64url") from None
    if not hmac.compare_digest(mac.digest(), _b64(sig)):
        raise AuthError("token signature invalid")
    claims = _json_object(_b64(body), "payload")
    for name in _REQUIRED:
        if claims.get(name) is None:  # absent, or null
            raise AuthError(f"token invalid: {name} is missing")
    return claims


def _time_claim(claims: dict[str, Any], name: str) -> float:
    """A NumericDate claim: a finite JSON number (not a string, not a bool)."""
    value: Any = claims.get(name)  # any JSON value until the next line checks it
    if type(value) not in (int, float):
        raise AuthError(f"token invalid: {name} is not a number")
    try:
        seconds = float(value)
    except OverflowError:  # an int beyond any float
        seconds = math.inf
    if not math.isfinite(seconds):
        raise AuthError(f"token invalid: {name} is out of range")
    return seconds


def existing_dev_secret(data_dir: str | Path) -> str | None:
    """The development secret of a data dir, or None if it has none yet
    (never makes one: ``switchboard token`` must sign with the secret the
    running deployment checks, not a new one)."""
    path = Path(data_dir) / "jwt.secret"
    if not path.exists():
        return None
    return path.read_text().strip() or None


def dev_secret(data_dir: str | Path) -> str:
    """The development secret of a data dir, generated once (mode 0600)."""
    found = existing_dev_secret(data_dir)
    if found:
        return found
    path = Path(data_dir) / "jwt.secret"
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    path.touch(mode=0o600)
    path.write_text(secret + "\n")
    return secret
