"""NATS subjects, all under one configurable prefix (default ``sb``).

Ids are checked here, so a malformed id can never reach a subject, whichever
path it took. docs/architecture.md ("Subjects") says who publishes and who
listens on each.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

from switchboard import ids

_PREFIX = re.compile(r"[A-Za-z0-9_-]{1,32}")


# The last token of an event subject (sb.user.<uid>.ev.<kind>): the kind of
# frame it may carry, and the role that may publish it.
EV_TYPING = "typing"  # edge
EV_PRESENCE = "presence"  # presence tracker
EV_RECEIPT = "receipt"  # sequencer
EV_CONV = "conv"  # sequencer

# The user token of the path tick (sb.user.~tick.inbox, republished to
# sb.user.~tick.live): never a user id, which matches [A-Za-z0-9_-]{1,64}.
PATH_TICK = "~tick"


def partition_of(conv: str, partitions: int) -> int:
    """The partition of a conversation: stable across processes and versions
    (CRC-32 of the id), so every edge and sequencer agrees without talking."""
    return zlib.crc32(conv.encode()) % partitions


@dataclass(frozen=True, slots=True)
class Subjects:
    prefix: str = "sb"

    def __post_init__(self) -> None:
        if not _PREFIX.fullmatch(self.prefix):
            raise ValueError(f"subject prefix {self.prefix!r} must match [A-Za-z0-9_-]{{1,32}}")

    # -- messages -----------------------------------------------------------
    def send(self, conv: str) -> str:
        return f"{self.prefix}.send.{ids.check(conv, 'conv')}"

    @property
    def send_all(self) -> str:
        return f"{self.prefix}.send.*.*"

    def send_part(self, partition: int, conv: str) -> str:
        """A user's send, routed to the owner of the conversation's partition."""
        return f"{self.prefix}.send.{partition}.{ids.check(conv, 'conv')}"

    def send_partition_all(self, partition: int) -> str:
        """What the owner of ``partition`` subscribes to (no queue group)."""
        return f"{self.prefix}.send.{partition}.*"

    def system_send_part(self, partition: int) -> str:
        """System sends forwarded to a partition's owner by any sequencer
        (only the sequencer role may publish here)."""
        return f"{self.prefix}.seq.{partition}.system"

    def msg(self, conv: str) -> str:
        return f"{self.prefix}.msg.{ids.check(conv, 'conv')}"

    @property
    def msg_all(self) -> str:
        return f"{self.prefix}.msg.*"

    def conv_live(self, conv: str) -> str:
        """A large group's messages, published by the sequencer once stored:
        what edges of its members subscribe to (pull mode, no INBOX copies)."""
        return f"{self.prefix}.conv.{ids.check(conv, 'conv')}.live"

    # -- per user -----------------------------------------------------------
    def inbox(self, user: str) -> str:
        """Stored per-user mailbox entries (stream INBOX)."""
        return f"{self.prefix}.user.{ids.check(user, 'user')}.inbox"

    @property
    def inbox_all(self) -> str:
        return f"{self.prefix}.user.*.inbox"

    def live(self, user: str) -> str:
        """A user's stored entries: INBOX republished by the server after
        storage (with Nats-Sequence headers). Only that republish may use this
        subject: every NATS user is denied publishing here (nats/accounts.conf),
        so what an edge delivers as a stored message was stored."""
        return f"{self.prefix}.user.{ids.check(user, 'user')}.live"

    @property
    def tick_inbox(self) -> str:
        """The path tick the sequencers write to INBOX (edge/pathtick.py)."""
        return f"{self.prefix}.user.{PATH_TICK}.inbox"

    @property
    def tick_live(self) -> str:
        """The path tick as INBOX republishes it: what every edge subscribes to once."""
        return f"{self.prefix}.user.{PATH_TICK}.live"

    @property
    def live_republish_dest(self) -> str:
        return f"{self.prefix}.user.{{{{wildcard(1)}}}}.live"

    # Ephemeral events (never stored): one subject per kind, so that only the
    # role owning a kind may publish it (nats/accounts.conf), and the edge
    # forwards a frame only if its type is the one of its subject.
    def ev_typing(self, user: str) -> str:
        """Typing indicators (published by edges)."""
        return f"{self.prefix}.user.{ids.check(user, 'user')}.ev.{EV_TYPING}"

    def ev_presence(self, user: str) -> str:
        """Presence changes of watched users (published by the presence tracker)."""
        return f"{self.prefix}.user.{ids.check(user, 'user')}.ev.{EV_PRESENCE}"

    def ev_receipt(self, user: str) -> str:
        """Delivered/read receipts (published by the sequencer)."""
        return f"{self.prefix}.user.{ids.check(user, 'user')}.ev.{EV_RECEIPT}"

    def ev_conv(self, user: str) -> str:
        """Conversation notices (published by the sequencer)."""
        return f"{self.prefix}.user.{ids.check(user, 'user')}.ev.{EV_CONV}"

    def user_events(self, user: str) -> str:
        """What a user's edges subscribe to for every event kind."""
        return f"{self.prefix}.user.{ids.check(user, 'user')}.ev.*"

    # -- receipts, presence, push ------------------------------------------
    def receipt(self, conv: str) -> str:
        return f"{self.prefix}.receipt.{ids.check(conv, 'conv')}"

    @property
    def receipt_all(self) -> str:
        return f"{self.prefix}.receipt.*"

    def presence_hb(self, edge: str) -> str:
        return f"{self.prefix}.presence.hb.{ids.check(edge, 'edge')}"

    @property
    def presence_hb_all(self) -> str:
        return f"{self.prefix}.presence.hb.*"

    def presence_changed(self, user: str) -> str:
        return f"{self.prefix}.presence.changed.{ids.check(user, 'user')}"

    def push(self, user: str) -> str:
        return f"{self.prefix}.push.{ids.check(user, 'user')}"

    @property
    def push_all(self) -> str:
        return f"{self.prefix}.push.*"

    # -- service APIs (nats micro endpoints) --------------------------------
    def api(self, *path: str) -> str:
        for p in path:
            ids.check(p, "api path token")
        return ".".join((self.prefix, "api", *path))

    def dead_letter(self, what: str) -> str:
        return f"{self.prefix}.dlq.{ids.check(what, 'dlq name')}"
