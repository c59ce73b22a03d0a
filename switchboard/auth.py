"""JWT (HS256) tokens: ``sub`` is the user id, ``exp`` is honoured.

A token never reaches a log: errors say what was wrong, not what was sent.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import jwt

from switchboard import ids
from switchboard.errors import AuthError, InvalidId

ALGORITHM = "HS256"
LEEWAY_SEC = 5  # clock skew between the token issuer and the edge


def issue(secret: str, user: str, *, ttl_sec: int = 30 * 86400, now: float | None = None) -> str:
    ids.check(user, "user")
    now = time.time() if now is None else now
    return jwt.encode({"sub": user, "iat": int(now), "exp": int(now + ttl_sec)}, secret, algorithm=ALGORITHM)


def verify(secret: str, token: str | None) -> str:
    """The user id of a valid token; :class:`AuthError` otherwise."""
    if not token:
        raise AuthError("missing token")
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], leeway=LEEWAY_SEC,
                            options={"require": ["sub", "exp"]})
    except jwt.ExpiredSignatureError:
        raise AuthError("token expired") from None
    except jwt.InvalidSignatureError:
        raise AuthError("token signature invalid") from None
    except jwt.PyJWTError as exc:
        raise AuthError(f"token invalid: {type(exc).__name__}") from None
    try:
        return ids.check(claims.get("sub"), "user")
    except InvalidId:
        raise AuthError("token subject is not a valid user id") from None


def dev_secret(data_dir: str | Path) -> str:
    """The development secret of a data dir, generated once (mode 0600)."""
    path = Path(data_dir) / "jwt.secret"
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    path.touch(mode=0o600)
    path.write_text(secret + "\n")
    return secret
