"""The SDK's per-conversation order, without I/O.

Messages reach a client live (with an INBOX cursor), from a large group's
subject, and from history (gap fills, resync ranges), in any interleaving
and with duplicates. :class:`Ordering` hands each conversation's messages to
the application once each, in seq order; switchboard_client/client.py feeds it and
does what it asks (as websockets' ``protocol.py`` is driven by its
``asyncio/connection.py``):

- :meth:`Ordering.receive` takes any message; afterwards
  :meth:`~Ordering.take_ready` holds what the application gets now and
  :meth:`~Ordering.take_waits` the conversations where a gap opened: the
  client waits ``gap_wait`` for the missing ones to arrive live (several
  sequencers may fan a conversation out slightly out of order), then calls
  :meth:`~Ordering.expire` and fetches the :class:`Fill` it returns from
  history (feeding each message to ``receive``), then :meth:`~Ordering.filled`
  and its next fill while one is returned (gaps that opened meanwhile), then
  :meth:`~Ordering.skip` (what is still missing is given up) and
  :meth:`~Ordering.repair_over`.
- ``synced`` (large groups) and ``resync`` (ranges) return the fills to run.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from switchboard_client import frames

# Messages held per conversation at most; beyond it the gap is skipped.
MAX_HELD = 10_000


class Fill(NamedTuple):
    """Fetch ``conv``'s messages with after < seq <= upto (None: to the end) from history."""

    conv: str
    after: int
    upto: int | None


class _Conv:
    __slots__ = ("seq", "held", "repairing")

    def __init__(self, seq: int = 0) -> None:
        self.seq = seq  # highest seq handed to the application (0: none yet)
        self.held: dict[int, frames.Msg] = {}  # arrived ahead of a gap
        self.repairing = False  # a gap deadline (and maybe its fill) is under way


class Ordering:
    def __init__(self, conv_seqs: dict[str, int] | None = None, *, fill_gaps: bool = True,
                 max_held: int = MAX_HELD) -> None:
        self.fill_gaps = fill_gaps
        self.max_held = max_held
        self._convs = {c: _Conv(s) for c, s in (conv_seqs or {}).items()}
        self._ready: list[frames.Msg] = []
        self._waits: list[str] = []

    def conv_seqs(self) -> dict[str, int]:
        """Last seq handed to the application, per conversation (persist it)."""
        return {c: st.seq for c, st in self._convs.items() if st.seq}

    def take_ready(self) -> list[frames.Msg]:
        """Messages for the application, in order (each once)."""
        out, self._ready = self._ready, []
        return out

    def take_waits(self) -> list[str]:
        """Conversations where a gap opened: call :meth:`expire` after ``gap_wait``."""
        out, self._waits = self._waits, []
        return out

    # -- messages -------------------------------------------------------------------------
    def receive(self, m: frames.Msg) -> None:
        st = self._convs.get(m.conv)
        if st is None:
            st = self._convs[m.conv] = _Conv()
        if st.seq == 0 and m.seq > 1:
            # First sight of a conversation mid-stream: where it starts for this
            # client is the lowest seq arriving before the deadline.
            if m.seq not in st.held:
                st.held[m.seq] = m
                self._wait(m.conv, st)
            return
        if m.seq <= st.seq or m.seq in st.held:
            return  # duplicate
        if m.seq != st.seq + 1:
            st.held[m.seq] = m
            if len(st.held) > self.max_held:
                self._skip(st)
            else:
                self._wait(m.conv, st)
            return
        self._ready.append(m)
        st.seq = m.seq
        self._release(st)

    def _wait(self, conv: str, st: _Conv) -> None:
        if not st.repairing:
            st.repairing = True
            self._waits.append(conv)

    def _release(self, st: _Conv) -> None:
        while st.seq + 1 in st.held:
            st.seq += 1
            self._ready.append(st.held.pop(st.seq))

    def _skip(self, st: _Conv) -> None:
        for seq in sorted(st.held):
            self._ready.append(st.held.pop(seq))
            st.seq = seq

    # -- a gap's deadline ------------------------------------------------------------------
    def expire(self, conv: str) -> Fill | None:
        """The gap deadline of ``conv`` passed: what to fetch from history, if anything."""
        st = self._convs[conv]
        if st.seq == 0 and st.held:  # first sight: start at the lowest seq seen
            st.seq = min(st.held) - 1
            self._release(st)
        return self._fill(conv, st)

    def filled(self, conv: str, fill: Fill) -> Fill | None:
        """``fill`` was fetched: what it did not bring is given up; returns
        the next fill if messages arrived meanwhile beyond a new gap."""
        st = self._convs[conv]
        assert fill.upto is not None
        for seq in sorted(s for s in st.held if s <= fill.upto + 1):
            self._ready.append(st.held.pop(seq))
            st.seq = seq
        self._release(st)
        return self._fill(conv, st)

    def _fill(self, conv: str, st: _Conv) -> Fill | None:
        # Up to the last one held: every gap among them (the held ones that
        # history sends again are dropped as duplicates).
        if st.held and self.fill_gaps:
            return Fill(conv, st.seq, max(st.held) - 1)
        return None

    def skip(self, conv: str) -> None:
        """After the fill: give up on what is still missing, release what is held."""
        st = self._convs[conv]
        if st.held:
            self._skip(st)

    def repair_over(self, conv: str) -> None:
        """The repair ended (or was cancelled): a later gap starts a new one."""
        self._convs[conv].repairing = False

    # -- what the edge says at connection -------------------------------------------------
    def synced(self, groups: Iterable[frames.ResyncRange]) -> list[Fill]:
        """Large groups read directly, with how far each is: a group never
        seen starts from now; one seen before fetches what was missed."""
        fills = []
        for g in groups:
            st = self._convs.get(g.conv)
            if st is None:
                st = self._convs[g.conv] = _Conv()
            if st.seq == 0:
                st.seq = g.upto
            elif g.upto > st.seq and self.fill_gaps:
                fills.append(Fill(g.conv, st.seq, g.upto))
        return fills

    def resync(self, ranges: Iterable[frames.ResyncRange]) -> list[Fill]:
        """A resync's ranges, less what this client already has."""
        fills = []
        for r in ranges:
            st = self._convs.get(r.conv)
            after = max(r.after, st.seq if st is not None else 0)
            if not r.upto or r.upto > after:
                fills.append(Fill(r.conv, after, r.upto or None))
        return fills
