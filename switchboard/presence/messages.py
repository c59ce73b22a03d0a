"""Bus payloads of presence (not the client wire; that is frames.Presence).

- ``sb.presence.hb.<edge>``: :class:`Heartbeat` (every interval, the whole
  list of the edge's users) and :class:`Events` (immediately, on a user's
  first connect / last disconnect on that edge). Decode with
  :data:`decode_report`.
- ``sb.api.presence.query``: :class:`QueryRequest` -> :class:`PresenceReply`.
- ``sb.api.presence.watch``: :class:`WatchRequest` -> :class:`PresenceReply`.
- ``sb.api.conv.contacts`` (served by the sequencer, which knows the
  conversations): :class:`ContactsRequest` -> :class:`ContactsReply`, the
  users whose presence a watcher may see (docs/presence.md, "Who may watch").

The three endpoints are described in switchboard/api.py and called with
switchboard/rpc/ (which encodes, decodes and checks errors).
"""

from __future__ import annotations

import msgspec

from switchboard.events import ErrorBody
from switchboard.frames import Presence


class _Report(msgspec.Struct, tag_field="kind", omit_defaults=True):
    pass


class Heartbeat(_Report, tag="hb"):
    """The users held by ``edge``; each entry stays alive ``ttl_ms`` more.

    One message per edge per interval. An edge with more users than fit in
    one NATS message (``max_payload``) sends several heartbeats in the same
    interval, each with a slice of the list.
    """

    edge: str
    users: list[str]
    ttl_ms: int


class Events(_Report, tag="ev"):
    """Users that just connected to / disconnected from ``edge``."""

    edge: str
    connected: list[str] = []
    disconnected: list[str] = []
    ttl_ms: int = 0  # TTL of the new entries (the edge's heartbeat TTL)


Report = Heartbeat | Events

decode_report = msgspec.json.Decoder(Report).decode


class QueryRequest(msgspec.Struct):
    users: list[str]


class WatchRequest(msgspec.Struct):
    watcher: str
    users: list[str]


class ContactsRequest(msgspec.Struct):
    user: str
    users: list[str]


class ContactsReply(msgspec.Struct, omit_defaults=True):
    """Those of the users asked for who share a conversation with ``user``, in request order."""

    users: list[str] = []
    error: ErrorBody | None = None


# Users per query, watch or contacts request: a contact list is far smaller;
# the cap bounds the work and the reply size (1000 frames ~ 60 KB) of one request.
MAX_USERS_PER_REQUEST = 1000


class PresenceReply(msgspec.Struct, omit_defaults=True):
    """The current state of the users asked for, in request order, or an error."""

    users: list[Presence] = []
    error: ErrorBody | None = None


encode = msgspec.json.Encoder().encode
