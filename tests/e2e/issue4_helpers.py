"""Helpers of the issue-4 end-to-end tests (receipts, typing, presence, push).

Builds on :mod:`tests.e2e.helpers` (not edited here):

- :class:`Events`: the non-message frames an SDK client got (receipt, typing,
  presence, error), buffered so a test can wait for one kind without losing
  the others.
- :func:`until` / :func:`nothing`: the same for a raw client.
- :func:`push_entries`: what the PUSH work queue holds for one user.
- :func:`offline_seen`: wait until the tracker has announced a user offline
  (the sequencer's presence view learns it from the same subject).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import nats

from switchboard.bus import streams
from switchboard.client import Client
from switchboard.config import Settings
from tests.e2e.helpers import STEP, Raw

Pred = Callable[[Any], bool]


def kind(type_: str, **match: Any) -> Pred:
    """A predicate on a frame (struct or dict): its type and some fields."""

    def pred(f: Any) -> bool:
        get = f.get if isinstance(f, dict) else (lambda k: getattr(f, k, None))
        t = f.get("type") if isinstance(f, dict) else type(f).__struct_config__.tag
        return t == type_ and all(get(k) == v for k, v in match.items())

    return pred


class Events:
    """Buffers every event frame of an SDK client (``Client.events``).

    ``Events(client)`` returns the one buffer of that client (made on first
    use), so two helpers waiting on the same client never steal each other's
    frames."""

    def __new__(cls, client: Client) -> Events:
        existing = getattr(client, "_issue4_events", None)
        if existing is not None:
            return existing
        self = super().__new__(cls)
        self._init(client)
        client._issue4_events = self  # type: ignore[attr-defined]
        return self

    def _init(self, client: Client) -> None:
        self.client = client
        self.seen: list[Any] = []  # everything, in arrival order
        self._unread: list[Any] = []

    def _pull(self) -> None:
        while not self.client.events.empty():
            f = self.client.events.get_nowait()
            self.seen.append(f)
            self._unread.append(f)

    async def until(self, pred: Pred, timeout: float = STEP) -> Any:
        """The first not yet returned frame matching ``pred`` (others stay buffered)."""
        deadline = time.monotonic() + timeout
        while True:
            self._pull()
            for i, f in enumerate(self._unread):
                if pred(f):
                    del self._unread[i]
                    return f
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching frame in {timeout}s; got {self._unread}")
            with contextlib.suppress(asyncio.TimeoutError):
                f = await self.client.next_event(min(left, 0.05))
                self.seen.append(f)
                self._unread.append(f)

    async def nothing(self, pred: Pred, wait: float = 0.4) -> None:
        """Assert no frame matching ``pred`` arrives (or is buffered) within ``wait``."""
        await asyncio.sleep(wait)
        self._pull()
        bad = [f for f in self._unread if pred(f)]
        assert not bad, f"unexpected frames: {bad}"

    def matching(self, pred: Pred) -> list[Any]:
        self._pull()
        return [f for f in self.seen if pred(f)]


async def until(raw: Raw, pred: Pred, timeout: float = STEP) -> dict:
    """The first frame ``raw`` recorded that matches ``pred`` (polls ``raw.frames``)."""
    deadline = time.monotonic() + timeout
    while True:
        for f in raw.frames:
            if pred(f):
                return f
        if time.monotonic() > deadline:
            raise AssertionError(f"no matching frame in {timeout}s; got {raw.frames[-10:]}")
        await asyncio.sleep(0.01)


async def nothing(raw: Raw, pred: Pred, wait: float = 0.4) -> None:
    await asyncio.sleep(wait)
    bad = [f for f in raw.frames if pred(f)]
    assert not bad, f"unexpected frames: {bad}"


async def eventually(check: Callable[[], bool | Awaitable[bool]], timeout: float = STEP,
                     what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while True:
        r = check()
        if asyncio.iscoroutine(r):
            r = await r
        if r:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        await asyncio.sleep(0.03)


async def push_entries(settings: Settings, user: str) -> int:
    """Entries the PUSH work queue holds for ``user`` (not yet taken by a pusher)."""
    nc = await nats.connect(settings.nats_url)
    try:
        js = nc.jetstream()
        subject = settings.subjects.push(user)
        info = await js.stream_info(streams.names(settings)[2], subjects_filter=subject)
        return (info.state.subjects or {}).get(subject, 0)
    finally:
        await nc.close()


async def push_queue_len(settings: Settings) -> int:
    """Entries in the PUSH work queue, all users (an acked entry is removed)."""
    nc = await nats.connect(settings.nats_url)
    try:
        return (await nc.jetstream().stream_info(streams.names(settings)[2])).state.messages
    finally:
        await nc.close()


class PresenceChanges:
    """Listens to ``sb.presence.changed.*`` (what the sequencer's presence view reads)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.changes: list[tuple[str, bool]] = []
        self._nc = None

    async def __aenter__(self) -> PresenceChanges:
        from switchboard.frames import decode_server_frame

        self._nc = await nats.connect(self.settings.nats_url)

        async def cb(msg) -> None:
            p = decode_server_frame(msg.data)
            self.changes.append((p.user, p.online))

        await self._nc.subscribe(f"{self.settings.subjects.prefix}.presence.changed.*", cb=cb)
        await self._nc.flush()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._nc.close()

    async def wait(self, user: str, online: bool, timeout: float = STEP) -> None:
        await eventually(lambda: (user, online) in self.changes, timeout, f"{user} online={online}")
        # The sequencer's subscription gets the same message; give it a moment.
        await asyncio.sleep(0.1)
