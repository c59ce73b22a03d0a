"""Identifiers: user ids, conversation ids and client message ids.

Every id matches ``[A-Za-z0-9_-]{1,64}``. Ids become NATS subject tokens, so
anything else (a dot, ``*``, ``>``, whitespace) must be rejected before it gets
near a subject: a user id of ``a.>`` must never become a wildcard.
"""

from __future__ import annotations

import hashlib
import re
from typing import TypeGuard

from switchboard_client.errors import InvalidId

ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
DM_PREFIX = "dm-"


def is_valid(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and ID_PATTERN.fullmatch(value) is not None


def check(value: object, what: str = "id") -> str:
    """Return ``value`` if it is a valid id, else raise :class:`InvalidId`."""
    if not is_valid(value):
        shown = repr(value)[:80]
        raise InvalidId(f"{what} {shown} is not a valid id ([A-Za-z0-9_-]{{1,64}})")
    return value


def dm_conv(a: str, b: str) -> str:
    """The deterministic conversation id of the 1:1 conversation of ``a`` and ``b``.

    Derived from the sorted pair, so both sides compute the same id. Hashed
    because two 64-character user ids would not fit in one 64-character id.
    """
    check(a, "user")
    check(b, "user")
    lo, hi = sorted((a, b))
    digest = hashlib.sha256(f"{lo}\n{hi}".encode()).hexdigest()[:40]
    return DM_PREFIX + digest


def is_dm(conv: str) -> bool:
    return conv.startswith(DM_PREFIX) and len(conv) == len(DM_PREFIX) + 40
