"""NATS subjects, all under one configurable prefix (default ``sb``).

Ids are checked here, so a malformed id can never reach a subject, whichever
path it took. See DESIGN.md for who publishes and who listens on each.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

from switchboard import ids

_PREFIX = re.compile(r"[A-Za-z0-9_-]{1,32}")


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
        """What a user's edges listen to: INBOX republished after storage
        (with Nats-Sequence headers) and ephemeral events (typing, presence,
        receipts), never stored."""
        return f"{self.prefix}.user.{ids.check(user, 'user')}.live"

    @property
    def live_republish_dest(self) -> str:
        return f"{self.prefix}.user.{{{{wildcard(1)}}}}.live"

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
