"""Retry delays: exponential, capped, jittered; one helper for every retry loop.

Defined once, in the client distribution (``switchboard_client.backoff``: the
SDK's reconnect and resend use it, and it is pure standard library), and
re-exported here for the server's loops (archiver, pusher, sbctl's
supervisor). Its docstring says which loop uses which jitter, and why.
"""

from __future__ import annotations

from switchboard_client.backoff import FULL_JITTER, MAX_EXPONENT, Backoff, delay

__all__ = ["FULL_JITTER", "MAX_EXPONENT", "Backoff", "delay"]
