"""JWT (HS256) tokens: ``sub`` is the user id, ``exp`` is honoured.

The time claims are checked here, not by PyJWT: it truncates ``exp`` to an
integer (a leeway of 4-5 s instead of 5) and accepts numeric strings
(``"exp": "99999999999"``). ``exp`` (required), ``iat`` and ``nbf`` (when
present) must be JSON numbers; a token is valid from ``nbf - LEEWAY_SEC``
(and not issued after ``now + LEEWAY_SEC``) until ``exp + LEEWAY_SEC``.
:func:`authenticate` returns the expiry too: the edge ends a socket when its
token expires.

A token never reaches a log: errors say what was wrong, not what was sent.
"""

from __future__ import annotations

import math
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt

from switchboard import ids
from switchboard.errors import AuthError, InvalidId

if TYPE_CHECKING:
    from jwt.types import Options

ALGORITHM = "HS256"
LEEWAY_SEC = 5  # clock skew between the token issuer and the edge
# Time claims checked here (PyJWT is told to skip them, see the docstring).
_NO_TIME_CHECKS: Options = {"verify_exp": False, "verify_nbf": False, "verify_iat": False, "require": ["sub", "exp"]}


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
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], options=_NO_TIME_CHECKS)
    except jwt.InvalidSignatureError:
        raise AuthError("token signature invalid") from None
    except jwt.MissingRequiredClaimError as exc:  # absent, or null
        raise AuthError(f"token invalid: {exc.claim} is missing") from None
    except jwt.PyJWTError as exc:
        raise AuthError(f"token invalid: {type(exc).__name__}") from None
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
