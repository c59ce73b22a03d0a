"""One conversation's ordering and fence step, without I/O.

A conversation is written by one process at a time, one MESSAGES write in
flight: the next write's seq is ``last_seq + 1`` and its fence
(``Nats-Expected-Last-Subject-Sequence``) is ``last_stream_seq``, the stream
sequence of the message holding ``last_seq``, which only this write's ack
tells. Sends wait in a queue behind the write in flight (and behind a load:
members, last seq). A fence conflict means another process wrote the
conversation (around a partition handover): reload, then retry the refused
send first, so the conversation never forks.

:class:`ConvOrder` holds that state and makes those decisions;
sequencer/pipeline.py does the publishing and loading (its per-conversation
object is a subclass, so there is no extra object or allocation per message).
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Final, Generic, TypeVar

T = TypeVar("T")


class Step(enum.Enum):
    LOAD = "load"  # load the conversation (members, last seq) before its next write


LOAD: Final = Step.LOAD


class ConvOrder(Generic[T]):
    __slots__ = ("last_seq", "last_stream_seq", "busy", "queue", "loading", "reload")

    def __init__(self) -> None:
        self.last_seq: int | None = None  # None: load before the next write
        self.last_stream_seq = 0  # the fence of the next write (0: no message in the stream)
        self.busy = False  # a MESSAGES write is awaiting its ack
        self.queue: deque[T] = deque()  # sends waiting their turn
        self.loading = False
        self.reload = False  # ownership changed hands: re-read the stream first

    @property
    def ready(self) -> bool:
        """The last seq is known (the pipeline loads members before it)."""
        return self.last_seq is not None and not self.reload

    @property
    def idle(self) -> bool:
        """Nothing waits or runs: the state may be dropped (and reloaded later)."""
        return not self.busy and not self.queue and not self.loading

    def known(self) -> int | None:
        """The last seq, when it is known and no write is in flight."""
        return self.last_seq if self.ready and not self.busy else None

    def last_stored(self) -> int | None:
        """The last seq stored, when it is known, even with a write in
        flight: that write's seq is not stored yet (no copy of it is out)."""
        return self.last_seq if self.ready else None

    # -- sends ---------------------------------------------------------------------------
    def push(self, send: T) -> None:
        self.queue.append(send)

    def next(self) -> T | Step | None:
        """What to do now: the send to write next (refusing it is the
        caller's choice; writing it starts with :meth:`begin_write`), LOAD
        (the load is under way from now: one at a time, until
        :meth:`load_done`), or None (nothing waits, or a write or a load is
        under way)."""
        if not self.queue or self.busy or self.loading:
            return None
        if not self.ready:
            self.loading = True
            return LOAD
        return self.queue.popleft()

    def begin_write(self) -> int:
        """The send from :meth:`next` is written now: its seq (the fence is
        ``last_stream_seq``). Nothing else is written until its outcome."""
        assert self.last_seq is not None and not self.busy
        self.busy = True
        return self.last_seq + 1

    # -- the write's outcome ----------------------------------------------------------------
    def stored(self, seq: int, stream_seq: int) -> None:
        self.busy = False
        self.last_seq = seq
        self.last_stream_seq = stream_seq

    def duplicate(self) -> None:
        """A retried send stored earlier: nothing new in the conversation."""
        self.busy = False

    def conflict(self, send: T) -> None:
        """The fence refused the write: someone else wrote the conversation.
        Reload, then retry ``send`` before the others."""
        self.busy = False
        self.last_seq = None
        self.queue.appendleft(send)

    def failed(self) -> None:
        """Unknown outcome (no ack, an error): reload before the next write."""
        self.busy = False
        self.last_seq = None

    def aborted(self) -> None:
        """The write never left (the bus is gone): nothing changed."""
        self.busy = False

    # -- loads ------------------------------------------------------------------------
    def reacquired(self) -> None:
        """This process took the conversation's partition (again): another
        may have written it since, re-read the stream before writing."""
        self.reload = True

    def needs_last(self) -> bool:
        """Whether the load must read the last seq (a later reacquire asks again)."""
        if self.last_seq is None or self.reload:
            self.reload = False
            return True
        return False

    def loaded(self, last_seq: int, stream_seq: int) -> None:
        self.last_seq = last_seq
        self.last_stream_seq = stream_seq

    def drop_head(self) -> T:
        """The first waiting send is refused (its sender may not write here)."""
        return self.queue.popleft()

    def load_failed(self) -> list[T]:
        """Every waiting send is refused; the next one loads again."""
        self.last_seq = None
        refused = list(self.queue)
        self.queue.clear()
        return refused

    def load_done(self) -> None:
        self.loading = False
