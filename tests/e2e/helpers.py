"""Helpers of the end-to-end tests (the deployment itself comes from the
``deploy`` fixture in tests/e2e/conftest.py; see docs/testing.md).

- :func:`until`: the one wait helper (sync or async predicate, a failure
  message saying what was awaited).
- :func:`make_settings` / :func:`settings_env`: the Settings of one isolated
  deployment on a shared nats-server, and the same settings as the
  environment of a ``python -m sbctl`` child.
- :class:`Raw`: a raw WebSocket client that records every frame the edge sends.
  The SDK drops duplicates by (conv, seq); tests that must prove the *edge*
  sends nothing twice read with :class:`Raw` instead.
- :class:`Events` / :func:`kind`: the non-message frames an SDK client got
  (receipt, typing, presence, error), buffered so a test can wait for one
  kind without losing the others.
- :class:`Proc`: a ``python -m sbctl ...`` child process (SIGKILL-able).
- :class:`CuttableProxy`: a TCP proxy to NATS that a test cuts (a network fault).
- bus inspection: :func:`stream_msgs` (what MESSAGES holds for one
  conversation), :func:`push_entries` / :func:`push_queue_len` (the PUSH work
  queue), :class:`PresenceChanges` (the tracker's announcements),
  :func:`edge_metrics` (an edge's ``/metrics`` page over HTTP).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import uuid
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import msgspec
import nats
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from sbctl.embedded import free_port
from switchboard import frames
from switchboard.bus import streams
from switchboard.config import Settings
from switchboard.configload import environment
from switchboard.frames import decode_server_frame
from switchboard_client import Client

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
# Generous per-step timeout: a 2-core box shared with other test runs.
STEP = 10.0


def unique(prefix: str = "u") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


# ---------------------------------------------------------------- waiting


async def run_process(*argv: str, cwd: str | Path, env: dict[str, str], timeout: float) -> tuple[int, str]:
    """Run ``argv`` to its end without blocking the event loop the fabric runs
    on: (exit code, stdout and stderr together). Killed after ``timeout``
    seconds (code -1), so a hang still shows the process's output."""
    proc = await asyncio.create_subprocess_exec(*argv, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
        return -1, out.decode(errors="replace") + f"\n(killed after {timeout:.0f} s)"
    return proc.returncode or 0, out.decode(errors="replace")


async def until(pred: Callable[[], Any], timeout: float = STEP, what: str | Callable[[], str] = "the condition",
                *, every: float = 0.02, ignore: tuple[type[BaseException], ...] = ()) -> Any:
    """Wait until ``pred()`` is truthy and return that value.

    ``pred`` may be a plain function or a coroutine function (anything whose
    result is awaitable is awaited). It is called every ``every`` seconds;
    after ``timeout`` seconds the test fails with ``what`` (a string, or a
    function called only then, e.g. to show a process's output) and the last
    value seen. Exceptions of the types in ``ignore`` count as "not yet"
    (e.g. a port that does not listen yet); any other exception propagates.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = pred()
            if inspect.isawaitable(last):
                last = await last
        except ignore as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            desc = what() if callable(what) else what
            shown = repr(last)
            if len(shown) > 500:
                shown = shown[:500] + "..."
            raise AssertionError(f"timed out after {timeout:g} s waiting for {desc} (last value: {shown})")
        await asyncio.sleep(every)


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


def settings_env(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment that gives a ``python -m sbctl`` child exactly
    ``settings``: ``SWITCHBOARD_<SECTION>__<KEY>`` for every field that
    differs from its default (switchboard.configload.environment), on top of
    ``base`` (default: this process's environment) cleared of any
    ``SWITCHBOARD_*`` variable, so nothing leaks in from the shell."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith("SWITCHBOARD_")}
    env["PYTHONUNBUFFERED"] = "1"
    return environment(settings, base=env)


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


# ---------------------------------------------------------------- SDK events

Pred = Callable[[Any], bool]


def kind(type_: str, **match: Any) -> Pred:
    """A predicate on a frame (struct or dict): its type and some fields."""

    def pred(f: Any) -> bool:
        get = f.get if isinstance(f, dict) else (lambda k: getattr(f, k, None))
        t = f.get("type") if isinstance(f, dict) else type(f).__struct_config__.tag
        return t == type_ and all(get(k) == v for k, v in match.items())

    pred.__qualname__ = f"kind({type_!r}{''.join(f', {k}={v!r}' for k, v in match.items())})"
    return pred


class Events:
    """Buffers every event frame of an SDK client (``Client.events``).

    ``Events(client)`` returns the one buffer of that client (made on first
    use), so two helpers waiting on the same client never steal each other's
    frames."""

    _of: weakref.WeakKeyDictionary[Client, Events] = weakref.WeakKeyDictionary()

    def __new__(cls, client: Client) -> Events:
        existing = cls._of.get(client)
        if existing is not None:
            return existing
        self = super().__new__(cls)
        self.client = client
        self.seen: list[Any] = []  # everything, in arrival order
        self.unread: list[Any] = []  # not yet returned by expect()
        cls._of[client] = self
        return self

    def pull(self) -> list[Any]:
        """Move what the client has received into ``seen`` and ``unread``; returns ``unread``."""
        while not self.client.events.empty():
            f = self.client.events.get_nowait()
            self.seen.append(f)
            self.unread.append(f)
        return self.unread

    def skip_all(self) -> None:
        """Forget every frame received so far (``seen`` keeps them): later
        :meth:`expect` calls see only what arrives from now on."""
        self.pull()
        self.unread.clear()

    def _take(self, pred: Pred) -> Any:
        for i, f in enumerate(self.pull()):
            if pred(f):
                return [self.unread.pop(i)]  # a list: truthy even for a falsy frame
        return None

    async def expect(self, pred: Pred, timeout: float = STEP) -> Any:
        """The first not yet returned frame matching ``pred`` (others stay buffered)."""
        [f] = await until(lambda: self._take(pred), timeout,
                          lambda: f"a frame matching {getattr(pred, '__qualname__', pred)}; unread: {self.unread}")
        return f

    async def nothing(self, pred: Pred, wait: float = 0.4) -> None:
        """Assert no frame matching ``pred`` arrives (or is buffered) within ``wait``."""
        await asyncio.sleep(wait)
        bad = [f for f in self.pull() if pred(f)]
        assert not bad, f"unexpected frames: {bad}"

    def matching(self, pred: Pred) -> list[Any]:
        self.pull()
        return [f for f in self.seen if pred(f)]


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
    async def open(cls, url: str, tok: str | None, *, read: bool = True, sock=None, **kw: Any) -> Raw:
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

        def taken() -> list[dict] | None:
            while not self._queue.empty():
                f = self._queue.get_nowait()
                if f.get("type") == type_ and all(f.get(k) == v for k, v in match.items()):
                    return [f]
            return None

        [f] = await until(taken, timeout, lambda: f"a {type_!r} frame with {match}; last frames: {self.frames[-5:]}",
                          every=0.002)
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
        """The ``nth`` frame answering ``ref`` (sent, error, conv, history...);
        fails at once if the socket closes without it."""

        def answered() -> list[dict] | None:
            got = self.replies.get(ref, [])
            if len(got) > nth:
                return [got[nth]]
            if self.closed.is_set():
                raise AssertionError(f"no answer #{nth} to {ref!r}: the socket closed")
            return None

        [f] = await until(answered, timeout, f"answer #{nth} to {ref!r}", every=0.005)
        return f

    async def find(self, pred: Pred, timeout: float = STEP) -> dict:
        """The first recorded frame (of all of ``frames``, returned before or
        not) that matches ``pred``, waiting for it if needed."""
        [f] = await until(lambda: [f for f in self.frames if pred(f)][:1], timeout,
                          lambda: f"a frame matching {getattr(pred, '__qualname__', pred)}; "
                                  f"last frames: {self.frames[-10:]}")
        return f

    async def nothing(self, pred: Pred, wait: float = 0.4) -> None:
        """Assert no recorded frame matches ``pred`` after ``wait`` seconds."""
        await asyncio.sleep(wait)
        bad = [f for f in self.frames if pred(f)]
        assert not bad, f"unexpected frames: {bad}"

    def msgs(self, conv: str | None = None) -> list[dict]:
        return [f for f in self.frames if f.get("type") == "msg" and (conv is None or f["conv"] == conv)]

    async def wait_msgs(self, n: int, conv: str | None = None, timeout: float = STEP) -> list[dict]:
        """The ``msg`` frames (of ``conv``) once there are at least ``n``;
        fails at once if the socket closes with fewer."""

        def enough() -> bool:
            if len(self.msgs(conv)) >= n:
                return True
            if self.closed.is_set():
                raise AssertionError(f"socket closed with {len(self.msgs(conv))} of {n} messages")
            return False

        await until(enough, timeout, lambda: f"{n} messages (got {len(self.msgs(conv))})", every=0.01)
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
    """Listens to ``<prefix>.presence.changed.*`` (what the sequencer's presence view reads)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.changes: list[tuple[str, bool]] = []
        self.nc: Any = None

    async def __aenter__(self) -> PresenceChanges:
        self.nc = await nats.connect(self.settings.nats_url)

        async def cb(msg) -> None:
            p = decode_server_frame(msg.data)
            self.changes.append((p.user, p.online))

        await self.nc.subscribe(f"{self.settings.subjects.prefix}.presence.changed.*", cb=cb)
        await self.nc.flush()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.nc.close()

    async def wait(self, user: str, online: bool, timeout: float = STEP) -> None:
        await until(lambda: (user, online) in self.changes, timeout, f"{user} online={online}")
        # The sequencer's subscription gets the same message; give it a moment.
        await asyncio.sleep(0.1)


# ---------------------------------------------------------------- faults


class CuttableProxy:
    """A loopback TCP proxy to ``upstream`` that can be cut: every proxied
    connection closed, new ones refused until :meth:`heal`."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.cut_off = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _accept(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if self.cut_off:
            w.close()
            return
        ur, uw = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._writers |= {w, uw}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(r, uw), pipe(ur, w))

    def cut(self) -> None:
        self.cut_off = True
        for w in self._writers:
            w.transport.abort()
        self._writers.clear()

    def heal(self) -> None:
        self.cut_off = False

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()


# ---------------------------------------------------------------- processes


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (children, their children...), from /proc."""
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            parent[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    todo = [pid]
    while todo:
        p = todo.pop()
        kids = {c for c, pp in parent.items() if pp == p}
        todo += list(kids - found)
        found |= kids
    return found


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

    @property
    def running(self) -> bool:
        return self.p.poll() is None

    async def wait_output(self, needle: str, timeout: float = 30.0) -> str:
        """The output once it contains ``needle``; fails at once if the process exits first."""

        def printed() -> str | None:
            out = self.output()
            if needle in out:
                return out
            if self.p.poll() is not None:
                raise AssertionError(f"process exited with {self.p.returncode}: {out[-3000:]}")
            return None

        return await until(printed, timeout, lambda: f"{needle!r} in the output: {self.output()[-3000:]}",
                           every=0.05)

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGKILL)
            self.p.wait()

    def pause(self) -> None:
        """SIGSTOP: frozen, as a process the OS stops scheduling (a GC pause, a VM stall)."""
        self.p.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.p.send_signal(signal.SIGCONT)

    def close(self) -> None:
        """Kill it if it still runs and close its log file."""
        self.kill()
        self._fh.close()

    def close_tree(self) -> None:
        """:meth:`close`, and SIGKILL whatever of its process tree is left: after
        a failed test, orphaned roles of a launcher (``up``, ``cluster up``)
        would otherwise linger until their own stop timeout."""
        rest = descendants(self.pid)
        self.close()
        for pid in rest:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    async def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then wait (without blocking the event loop) for the exit; SIGKILL after ``timeout``."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                await until(lambda: self.p.poll() is not None, timeout, "the process to exit after SIGTERM",
                            every=0.05)
            except AssertionError:
                self.kill()
        self._fh.close()
        return self.p.wait()

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
            p.close()
