"""Shared helpers of the delivery end-to-end tests.

- :func:`fabric`: edge + sequencer (in-process, via ``sbctl.fabric.run``)
  on a real nats-server, isolated from other tests on the same server by a
  unique subject prefix and stream prefix.
- :class:`Raw`: a raw WebSocket client that records every frame the edge sends.
  The SDK drops duplicates by (conv, seq); tests that must prove the *edge*
  sends nothing twice read with :class:`Raw` instead.
- :class:`Proc`: a ``python -m sbctl ...`` child process (SIGKILL-able).
- :func:`stream_msgs`: what MESSAGES really holds for one conversation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Iterable

import msgspec
import nats
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from switchboard import auth, frames
from switchboard.bus import streams
from sbctl.embedded import free_port
from sbctl.fabric import Fabric, run
from switchboard.client import Client
from switchboard.config import Settings

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
# Generous per-step timeout: a 2-core box shared with other test runs.
STEP = 10.0


def unique(prefix: str = "u") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def make_settings(tmp_path: Path, nats_url: str, **overrides: Any) -> Settings:
    """Settings of one isolated deployment on a shared nats-server."""
    tag = uuid.uuid4().hex[:8]
    values: dict[str, Any] = dict(
        nats_url=nats_url, subject_prefix=f"t{tag}", stream_prefix=f"T{tag}_",
        store_url=f"sqlite:///{tmp_path}/store-{tag}.db", data_dir=str(tmp_path / f"data-{tag}"),
        host="127.0.0.1", port=free_port(), jwt_secret=secrets.token_urlsafe(32),
        # Tests send faster than a human; the rate-limit test sets its own.
        rate_per_sec=10_000.0, rate_burst=10_000,
        dedup_window_sec=60.0,
    )
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def fabric(settings: Settings, roles: tuple[str, ...] = ("sequencer", "edge")) -> AsyncIterator[Fabric]:
    """In-process roles; the admin step (streams, consumers, KV) runs first."""
    async with run(settings, roles) as fab:
        yield fab


async def admin_init(settings: Settings, url: str | None = None) -> None:
    """The admin step (``switchboard init``) for role *processes* a test
    starts itself: they only check that their streams, consumers and bucket
    exist."""
    from sbctl.init import init_fabric

    nc = await nats.connect(url or settings.nats_url)
    try:
        await init_fabric(nc, settings)
    finally:
        await nc.close()


async def edge_metrics(port: int, names: Iterable[str] | None = None) -> dict[str, float]:
    """The unlabelled series of an edge's real ``/metrics`` page (all of them,
    or only ``names``), read over HTTP."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n")
    data = await reader.read(-1)
    writer.close()
    wanted = None if names is None else set(names)
    out = {}
    for line in data.decode().split("\r\n\r\n", 1)[1].splitlines():
        m = re.match(r"^([a-z_]+) ([0-9.e+]+)$", line)
        if m and (wanted is None or m.group(1) in wanted):
            out[m.group(1)] = float(m.group(2))
    return out


def ws_url(settings: Settings, port: int | None = None) -> str:
    return f"ws://{settings.host}:{port or settings.port}/ws"


def token(settings: Settings, user: str, ttl: int = 3600) -> str:
    return auth.issue(settings.jwt_secret, user, ttl_sec=ttl)


async def sdk(settings: Settings, user: str, *, port: int | None = None, **kw: Any) -> Client:
    """A connected SDK client (synced). Gap filling is off by default: these
    tests check the edge's delivery itself, not the history fallback."""
    kw.setdefault("fill_gaps", False)
    kw.setdefault("backoff_min", 0.05)
    kw.setdefault("backoff_max", 0.5)
    c = Client(url=ws_url(settings, port), token=token(settings, user), **kw)
    await c.connect(timeout=STEP)
    return c


async def drain_messages(c: Client, n: int, timeout: float = STEP) -> list[frames.Msg]:
    """Exactly ``n`` messages from an SDK client (fails on timeout)."""
    out = []
    for _ in range(n):
        out.append(await c.next_message(timeout))
    return out


async def no_more_messages(c: Client, wait: float = 0.3) -> None:
    with contextlib.suppress(asyncio.TimeoutError):
        m = await c.next_message(wait)
        raise AssertionError(f"unexpected extra message: {m}")


# ---------------------------------------------------------------- raw websocket


class Raw:
    """A raw WebSocket connection that records every server frame (as dicts)."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[dict] = []
        self._queue: asyncio.Queue[dict] = asyncio.Queue()
        self._reader: asyncio.Task | None = None
        self.closed = asyncio.Event()
        self.welcome: dict = {}
        self.replies: dict[str, list[dict]] = {}
        self.synced: dict = {}

    @classmethod
    async def open(cls, url: str, tok: str | None, *, read: bool = True, sock=None, **kw: Any) -> "Raw":
        full = url if tok is None else f"{url}?token={tok}"
        ws = await websockets.connect(full, max_size=None, compression=None, open_timeout=STEP, sock=sock, **kw)
        raw = cls(ws)
        if read:
            raw.start_reading()
        return raw

    def start_reading(self) -> None:
        if self._reader is None:
            self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for data in self.ws:
                f = json.loads(data)
                self.frames.append(f)
                self._queue.put_nowait(f)
                ref = f.get("ref") if f.get("type") != "sent" else f.get("id")
                if ref is not None:
                    self.replies.setdefault(ref, []).append(f)
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()

    async def send(self, obj: Any) -> None:
        await self.ws.send(obj if isinstance(obj, (str, bytes)) else json.dumps(obj))

    async def next(self, timeout: float = STEP) -> dict:
        return await asyncio.wait_for(self._queue.get(), timeout)

    async def expect(self, type_: str, timeout: float = STEP, **match: Any) -> dict:
        """The next frame of ``type_`` (matching ``match``); others are skipped
        (still recorded in ``frames``)."""
        deadline = time.monotonic() + timeout
        while True:
            f = await self.next(max(deadline - time.monotonic(), 0.001))
            if f.get("type") == type_ and all(f.get(k) == v for k, v in match.items()):
                return f

    async def hello(self, cursor: int | None = None, epoch: str | None = None) -> dict:
        """hello, then wait for welcome and synced; returns synced. The replay
        (if any) is in ``frames`` once this returns."""
        await self.send({"type": "hello", "cursor": cursor, "epoch": epoch})
        self.welcome = await self.expect("welcome")
        self.synced = await self.expect("synced")
        return self.synced

    async def hello_then_stop_reading(self) -> dict:
        """For a connection opened with ``read=False``: hello, read up to
        synced with ``recv``, then read nothing more (a stuck client)."""
        await self.send({"type": "hello", "cursor": None, "epoch": None})
        while True:
            f = json.loads(await asyncio.wait_for(self.ws.recv(), STEP))
            self.frames.append(f)
            if f["type"] == "welcome":
                self.welcome = f
            if f["type"] == "synced":
                self.synced = f
                return f

    async def send_msg(self, *, id: str, body: str = "x", conv: str | None = None, to: str | None = None) -> dict:
        """Send and wait for ``sent`` (or raise on ``error`` with that ref)."""
        frame: dict[str, Any] = {"type": "send", "id": id, "body": body}
        if conv is not None:
            frame["conv"] = conv
        if to is not None:
            frame["to"] = to
        await self.send(frame)
        return await self.answer(id)

    async def answer(self, ref: str, timeout: float = STEP, nth: int = 0) -> dict:
        """The ``nth`` ``sent`` answer to ``ref`` (raises if an ``error`` came
        instead). Answers may arrive in any order: sends run concurrently."""
        f = await self.reply(ref, timeout, nth)
        if f["type"] == "error":
            raise AssertionError(f"error answered to {ref}: {f}")
        return f

    async def reply(self, ref: str, timeout: float = STEP, nth: int = 0) -> dict:
        """The ``nth`` frame answering ``ref`` (sent, error, conv, history...)."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.replies.get(ref, [])
            if len(got) > nth:
                return got[nth]
            if time.monotonic() > deadline or self.closed.is_set():
                raise AssertionError(f"no answer #{nth} to {ref!r} (closed={self.closed.is_set()})")
            await asyncio.sleep(0.005)

    def msgs(self, conv: str | None = None) -> list[dict]:
        return [f for f in self.frames if f.get("type") == "msg" and (conv is None or f["conv"] == conv)]

    async def wait_msgs(self, n: int, conv: str | None = None, timeout: float = STEP) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.msgs(conv)) < n:
            if time.monotonic() > deadline or self.closed.is_set() and len(self.msgs(conv)) < n:
                raise AssertionError(f"got {len(self.msgs(conv))} of {n} messages")
            await asyncio.sleep(0.01)
        return self.msgs(conv)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader


def seqs(msgs: Iterable[Any]) -> list[int]:
    return [m["seq"] if isinstance(m, dict) else m.seq for m in msgs]


# ---------------------------------------------------------------- bus inspection


async def stream_msgs(settings: Settings, conv: str) -> list[frames.Msg]:
    """Every message MESSAGES holds for ``conv``, in stream order."""
    nc = await nats.connect(settings.nats_url)
    try:
        js = nc.jetstream()
        messages, _, _ = streams.names(settings)
        sub = await js.subscribe(settings.subjects.msg(conv), ordered_consumer=True)
        info = await js.stream_info(messages, subjects_filter=settings.subjects.msg(conv))
        n = (info.state.subjects or {}).get(settings.subjects.msg(conv), 0)
        out = []
        for _ in range(n):
            m = await sub.next_msg(timeout=STEP)
            out.append(msgspec.json.decode(m.data, type=frames.Msg))
        await sub.unsubscribe()
        return out
    finally:
        await nc.close()


# ---------------------------------------------------------------- processes


def role_env(settings: Settings) -> dict[str, str]:
    """Environment that makes a child ``switchboard`` process join this deployment."""
    env = dict(os.environ)
    env.update({
        "SWITCHBOARD_SUBJECT_PREFIX": settings.subject_prefix,
        "SWITCHBOARD_STREAM_PREFIX": settings.stream_prefix,
        "SWITCHBOARD_JWT_SECRET": settings.jwt_secret,
        "SWITCHBOARD_RATE_PER_SEC": str(settings.rate_per_sec),
        "SWITCHBOARD_RATE_BURST": str(settings.rate_burst),
        "SWITCHBOARD_DEDUP_WINDOW_SEC": str(settings.dedup_window_sec),
        "PYTHONUNBUFFERED": "1",
    })
    env.pop("SWITCHBOARD_CONFIG", None)
    return env


class Proc:
    """``python -m sbctl ARGS`` as a child; output goes to a log file."""

    def __init__(self, args: list[str], *, env: dict[str, str], log: Path) -> None:
        self.log = log
        self._fh = open(log, "wb")
        self.p = subprocess.Popen([PYTHON, "-m", "sbctl", *args], cwd=REPO, env=env,
                                  stdin=subprocess.DEVNULL, stdout=self._fh, stderr=subprocess.STDOUT,
                                  start_new_session=True)

    @property
    def pid(self) -> int:
        return self.p.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def wait_output(self, needle: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.output()
            if needle in out:
                return out
            if self.p.poll() is not None:
                raise AssertionError(f"process exited with {self.p.returncode}: {out[-3000:]}")
            await asyncio.sleep(0.05)
        raise AssertionError(f"{needle!r} not printed within {timeout}s: {self.output()[-3000:]}")

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGKILL)
            self.p.wait()

    def terminate(self, timeout: float = 15.0) -> int:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self._fh.close()
        return self.p.returncode


@contextlib.contextmanager
def procs() -> Iterable[list[Proc]]:
    """Collects Procs and kills whatever is still running at exit."""
    made: list[Proc] = []
    try:
        yield made
    finally:
        for p in made:
            p.kill()
            p._fh.close()


# ---------------------------------------------------------------- fixtures


class Deployment:
    """One isolated in-process fabric plus the clients a test opened on it
    (closed at teardown)."""

    def __init__(self, settings: Settings, fab: Fabric) -> None:
        self.settings = settings
        self.fab = fab
        self.url = ws_url(settings)
        self._clients: list[Client] = []
        self._raws: list[Raw] = []

    def token(self, user: str, ttl: int = 3600) -> str:
        return token(self.settings, user, ttl)

    async def sdk(self, user: str, **kw: Any) -> Client:
        c = await sdk(self.settings, user, **kw)
        self._clients.append(c)
        return c

    async def raw(self, user: str, *, hello: bool = True, cursor: int | None = None,
                  epoch: str | None = None, **kw: Any) -> Raw:
        r = await Raw.open(self.url, self.token(user), **kw)
        self._raws.append(r)
        if hello:
            await r.hello(cursor, epoch)
        return r

    def slow_consumers(self) -> float:
        return self.fab.edge.metrics.slow_consumers._value.get()

    async def aclose(self) -> None:
        for c in self._clients:
            with contextlib.suppress(Exception):
                await c.close()
        for r in self._raws:
            await r.close()


@contextlib.asynccontextmanager
async def deployment(tmp_path: Path, nats_url: str, roles: tuple[str, ...] = ("sequencer", "edge"),
                     **overrides: Any) -> AsyncIterator[Deployment]:
    settings = make_settings(tmp_path, nats_url, **overrides)
    async with fabric(settings, roles) as fab:
        d = Deployment(settings, fab)
        try:
            yield d
        finally:
            await d.aclose()
