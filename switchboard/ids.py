"""Identifiers: user ids, conversation ids and client message ids.

Every id matches ``[A-Za-z0-9_-]{1,64}``; ids become NATS subject tokens, so
anything else is rejected before it gets near a subject. Defined once, in the
client distribution (``switchboard_client.ids``: an application computes
``dm_conv`` too), and re-exported here.
"""

from __future__ import annotations

from switchboard_client.ids import DM_PREFIX, ID_PATTERN, check, dm_conv, is_dm, is_valid

__all__ = ["DM_PREFIX", "ID_PATTERN", "check", "dm_conv", "is_dm", "is_valid"]
