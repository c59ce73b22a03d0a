"""A socket's cursor, gap and replay decisions, without I/O.

The delivery state of a socket is one number, ``cursor``: the INBOX sequence
of the last entry sent down it. Entries come two ways: *live* (INBOX
republishes, each with its ``seq`` and the ``last`` entry of the same user
before it) and *replay* (batches read from INBOX after the cursor). This
class decides, for each, what to do; edge/session.py does the I/O (as
websockets' ``protocol.py`` is driven by ``asyncio/connection.py``):

- a live entry before hello, or at or below the cursor (the replay/live
  seam): DROP;
- a live entry while a read is running: DROP, and read once more when the
  read ends (it is in INBOX; nothing is buffered, so memory stays bounded);
- a live entry whose ``last`` is beyond the cursor: GAP (one was missed):
  start a read after the cursor;
- otherwise DELIVER, ``cursor = seq``.

A read (hello, gap, bus reconnect) fetches batches from ``cursor + 1`` until
nothing is pending, then again while live entries were seen meanwhile. At
most one read runs at a time: a gap or a reconnect during one asks it to
read once more (:meth:`want_read`).
"""

from __future__ import annotations

from typing import Final

# on_live() results.
DROP: Final = 0
DELIVER: Final = 1
GAP: Final = 2  # count it, and start a read (the core is now reading)

# hello() results that are not a resync reason.
FROM_NOW: Final = "from_now"  # a new device: read from INBOX's end
REPLAY: Final = "replay"  # read after the client's cursor, checking it was not trimmed


def stale_bounds(cursor: int | None, last_seq: int) -> bool:
    """A hello cursor ahead of INBOX's (cached) last sequence: read the
    bounds afresh, an entry stored since may have reached the client live."""
    return cursor is not None and cursor > last_seq


class Catchup:
    __slots__ = ("cursor", "live", "reading", "again", "max_per_user", "_check", "_first")

    def __init__(self, *, max_per_user: int) -> None:
        self.cursor = 0
        self.live = False  # hello's read has started: live entries count
        self.reading = False  # a read of INBOX is running (or about to)
        self.again = False  # read once more when this pass ends
        self.max_per_user = max_per_user  # INBOX's per-user limit (trimming)
        self._check = False  # this read checks for trimmed entries (hello replay)
        self._first = False  # the next batch is the first of a pass

    # -- hello ------------------------------------------------------------------------
    def hello(self, cursor: int | None, epoch: str | None, current_epoch: str, first_seq: int,
              last_seq: int) -> str:
        """Where a socket starts: FROM_NOW, REPLAY, or a resync reason
        (then live from ``last_seq``; the client fetches the rest from history)."""
        if epoch is not None and epoch != current_epoch:
            plan = "epoch_changed"
        elif cursor is None:
            plan = FROM_NOW  # a new device starts from now; history is fetched on demand
        elif cursor > last_seq:
            # Ahead of everything INBOX holds (another stream's cursor, or a
            # made-up one): taken as is, every live entry would look already
            # sent and be dropped.
            plan = "cursor_unknown"
        elif cursor + 1 < first_seq:
            plan = "cursor_expired"
        else:
            self.cursor = cursor
            return REPLAY
        self.cursor = last_seq
        return plan

    def resync(self, last_seq: int) -> None:
        """The client is told to fetch from history; live from ``last_seq``."""
        self.cursor = last_seq

    def close(self) -> None:
        self.live = False

    # -- live -------------------------------------------------------------------------
    def on_live(self, seq: int, last: int) -> int:
        """A live entry ``seq`` whose user's previous entry is ``last``."""
        if not self.live or seq <= self.cursor:
            return DROP
        if self.reading:
            self.again = True
            return DROP
        if last > self.cursor:
            self.reading = True
            return GAP
        self.cursor = seq
        return DELIVER

    def want_read(self) -> bool:
        """A gap or a bus reconnect asks for a read after the cursor: True if
        one should start now, False if the running one reads once more."""
        if self.reading:
            self.again = True
            return False
        self.reading = True
        return True

    def on_reconnect(self) -> bool:
        """The bus is back: entries republished meanwhile never arrived, and
        the last of them leaves no gap to notice. True: start a read now."""
        return self.live and self.want_read()

    # -- reads ------------------------------------------------------------------------
    def start_read(self, *, check_trimmed: bool = False) -> None:
        """A read begins (live entries count from now on); it fetches from ``cursor + 1``."""
        self.reading = self.live = True
        self.again = False
        self._check = self._first = check_trimmed

    def trimmed(self, first_seq: int, total_after: int) -> bool:
        """Checked on each batch (``first_seq``: its first entry, 0 if none;
        ``total_after``: its entries + those still pending): True if this is
        the first batch of a checking pass and the user's entries after the
        cursor may have been trimmed by the per-user limit (then nothing is sent)."""
        first, self._first = self._first, False
        return first and total_after >= self.max_per_user and first_seq > self.cursor + 1

    def on_replay(self, seq: int) -> bool:
        """An entry of a batch: True to send it (``cursor = seq``)."""
        if seq > self.cursor:
            self.cursor = seq
            return True
        return False

    def after_batch(self, count: int, pending: int) -> bool:
        """A batch of ``count`` entries was handled, ``pending`` more wait in
        INBOX: True to fetch the next one from ``cursor + 1``, False: the read is over."""
        if count and pending:
            return True
        if self.again:  # live entries beyond the cursor arrived meanwhile
            self.again = False
            self._first = self._check
            return True
        self.reading = False
        return False

    def end_read(self) -> None:
        """The read stopped (done, failed, socket closed, trimmed)."""
        self.reading = False
