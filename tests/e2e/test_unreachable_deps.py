"""A dependency that is not there when a process starts (issue 9).

Before: ``switchboard edge --nats nats://127.0.0.1:1`` retried forever,
printed a nats-py traceback every 0.5 s and ignored SIGINT and SIGTERM (the
handlers only set an event nobody awaited before the start finished); a
Cassandra store or a Redis presence backend that was not there failed the
start at once with the drivers' tracebacks.

Now (switchboard/reach.py, sbctl/starting.py) every role, ``run``, ``up``,
``init`` and ``trace``, for each dependency it needs at start (NATS; the
store of the sequencer and the archiver; the pusher's device store; the
tracker's presence backend):

- retries with backoff for the ``connect_timeout_sec`` of that dependency,
  logging at most a line every few seconds, never a traceback;
- then prints one line ``switchboard <cmd>: cannot reach <what> at <url>
  after <N> s: <reason>`` and exits 69 (``up`` too when a child of it gave
  up: the child's line, then up's);
- ends at once (within 2 s) on SIGTERM or SIGINT during that wait: exit 0
  for a role (a stop asked for), 130 for init/trace on Ctrl-C, and the
  default action of SIGTERM for those one-shot commands.

Each case is the real CLI in a child process (``python -m sbctl``). The
unreachable address is a loopback port the test holds bound without
listening, so a connect is refused and nothing else can take the port.
No Redis or Cassandra server is needed; the NATS of the store and presence
cases is the session's nats-server (with the streams made by the admin step).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from sbctl.embedded import free_port
from sbctl.starting import EXIT_INTERRUPTED
from switchboard.reach import EXIT_UNREACHABLE, LOG_EVERY_SEC
from tests.e2e.helpers import PYTHON, REPO, admin_init, make_settings, settings_env, until

# The connect_timeout_sec every case runs with: short, so the table runs in
# a few minutes, long enough for several attempts.
WAIT = 2.0
# `switchboard trace` waits a fixed time (sbctl/trace.py CONNECT_SEC): a person is waiting.
TRACE_WAIT = 5.0
# A process must end this soon after SIGINT/SIGTERM, in the middle of a wait.
SIGNAL_BOUND = 2.0
WARNING = "dependency unreachable; retrying"


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]  # after `python -m sbctl`; {dead} is the unreachable URL
    dep: str  # "NATS", "store", "devices", "presence": which dependency is unreachable
    cmd: str  # the command in the line's "switchboard <cmd>: " prefix
    wait: float = WAIT  # how long it retries before it gives up
    # Start-up time on top of the wait (Python, and for up its nats-server
    # and children) that the exit may take on a loaded 2-core box.
    slack: float = 10.0
    # Processes that wait (up's children): each logs its own warnings.
    waiting: int = 1
    # up: the child whose own line comes before up's.
    child: str | None = None
    on_sigint: int = 0  # exit code when SIGINT comes during the wait
    on_sigterm: int = 0


CASES = [
    # NATS not there: every role, run, up (as a supervisor, and in-process), init, trace.
    *[Case(f"{r}-nats", (r, "--nats", "{dead}"), "NATS", r) for r in ("edge", "sequencer", "archiver",
                                                                       "presence", "pusher")],
    Case("run-nats", ("run", "archiver+presence+pusher", "--nats", "{dead}"), "NATS", "run"),
    Case("up-nats", ("up", "--nats", "{dead}"), "NATS", "up"),
    Case("up-single-nats", ("up", "--layout", "single", "--nats", "{dead}"), "NATS", "up"),
    Case("init-nats", ("init", "--nats", "{dead}"), "NATS", "init", on_sigint=EXIT_INTERRUPTED,
         on_sigterm=-signal.SIGTERM),
    Case("trace-nats", ("trace", "--id", "x", "--nats", "{dead}"), "NATS", "trace", wait=TRACE_WAIT,
         on_sigint=EXIT_INTERRUPTED, on_sigterm=-signal.SIGTERM),
    # The store (Cassandra) not there, NATS up.
    Case("sequencer-store", ("sequencer",), "store", "sequencer"),
    Case("archiver-store", ("archiver",), "store", "archiver"),
    Case("run-store", ("run", "sequencer+archiver"), "store", "run"),
    Case("pusher-devices", ("pusher",), "devices", "pusher"),
    Case("up-single-store", ("up", "--layout", "single"), "store", "up"),
    # Two children wait for the store: whichever gives up first is the one up names.
    Case("up-store", ("up",), "store", "up", slack=20.0, waiting=2, child="sequencer|archiver+presence+pusher"),
    # The presence backend (Redis) not there, NATS up.
    Case("presence-redis", ("presence",), "presence", "presence"),
    Case("up-redis", ("up",), "presence", "up", slack=20.0, child="archiver+presence+pusher"),
]
WHAT = {"NATS": "NATS", "store": "the store", "devices": "the device store", "presence": "the presence backend"}


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A loopback port bound by the test but not listening: connects are
    refused, and nothing else can listen there meanwhile."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


@dataclass
class Run:
    """One ``python -m sbctl`` child, its stderr in a file."""

    case: Case
    url: str  # the unreachable URL, as the line prints it
    p: subprocess.Popen[bytes]
    err: Path
    started: float = field(default_factory=time.monotonic)

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def kill(self) -> None:
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGKILL)  # up's children too
            self.p.wait()


def dead_url(case: Case, port: int) -> str:
    return {"NATS": f"nats://127.0.0.1:{port}", "store": f"cassandra://127.0.0.1:{port}/ks",
            "devices": f"cassandra://127.0.0.1:{port}/ks", "presence": f"redis://127.0.0.1:{port}/0"}[case.dep]


async def start(case: Case, tmp_path: Path, port: int, live_nats: str, timeout: float) -> Run:
    """The case's command against the unreachable ``port``, every
    connect_timeout_sec set to ``timeout``."""
    if case.dep in ("store", "devices"):
        pytest.importorskip("cassandra", reason="the cassandra extra is not installed")
    if case.dep == "presence":
        pytest.importorskip("redis", reason="the redis extra is not installed")
    url = dead_url(case, port)
    overrides = {"nats_connect_timeout_sec": timeout, "store_connect_timeout_sec": timeout,
                 "presence_connect_timeout_sec": timeout}
    if case.dep == "store":
        overrides["store_url"] = url
    elif case.dep == "devices":
        overrides["push_device_store"] = url
    elif case.dep == "presence":
        overrides["presence_url"] = url
    settings = make_settings(tmp_path, live_nats if case.dep != "NATS" else url, **overrides)
    if case.dep != "NATS" and case.args[0] != "up":
        await admin_init(settings)  # role processes only check the streams; up makes its own
    env = settings_env(settings)
    err = tmp_path / f"{case.id}.stderr"
    with open(err, "wb") as fh:
        p = subprocess.Popen([PYTHON, "-m", "sbctl", *(a.replace("{dead}", url) for a in case.args)], cwd=REPO,
                             env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=fh,
                             start_new_session=True)
    return Run(case, url, p, err)


async def exited(run: Run, within: float) -> float:
    """Seconds until the process exited (fails past ``within``)."""
    try:
        await until(lambda: run.p.poll() is not None, within, f"{run.case.id} to exit", every=0.02)
    finally:
        run.kill()
    return time.monotonic() - run.started


@pytest.mark.timeout(90)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_gives_up_with_one_line_after_the_setting(case, tmp_path, dead_port, nats_server):
    """Retries for the configured time (not a failure at once, not forever),
    logs without a traceback and not more than a line per few seconds per
    waiting process, then one line naming what, where and why, and exit 69."""
    run = await start(case, tmp_path, dead_port, nats_server.url, WAIT)
    took = await exited(run, case.wait + case.slack)
    err = run.stderr()
    assert run.p.returncode == EXIT_UNREACHABLE, (run.p.returncode, err)
    assert took >= case.wait, f"gave up after {took:.1f} s, before the {case.wait:g} s it was given: {err}"
    assert "Traceback" not in err, err
    warnings = err.count(WARNING)
    assert 1 <= warnings <= case.waiting * (1 + case.wait // LOG_EVERY_SEC), err
    line = f"cannot reach {WHAT[case.dep]} at {run.url} after {case.wait:g} s: "
    child = None
    if case.child is not None:  # up says which child gave up (one of those that wait), after its own line
        ups = [x for x in err.splitlines() if x.startswith("switchboard up: ")]
        named = [c for c in case.child.split("|")
                 if ups == [f"switchboard up: {c} could not reach a dependency (exit code {EXIT_UNREACHABLE})"]]
        assert len(named) == 1, err
        child = named[0]
    who = case.cmd if child is None else "run" if "+" in child else child  # `switchboard run a+b`
    mine = [x for x in err.splitlines() if x.startswith(f"switchboard {who}: ")]
    assert len(mine) == 1 and line in mine[0] and "refused" in mine[0].lower(), err


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_signal_during_the_wait_ends_it_at_once(case, sig, tmp_path, dead_port, nats_server):
    """A process waiting for a dependency (the default 60 s here, so it would
    still be waiting) ends within 2 s of SIGTERM or SIGINT, without a
    traceback: before the fix both signals were ignored until the start
    finished, which for an unreachable NATS was never."""
    run = await start(case, tmp_path, dead_port, nats_server.url, 60.0)
    try:
        await until(lambda: WARNING in run.stderr() or run.p.poll() is not None, 30.0,
                    lambda: f"{case.id} to wait for {case.dep}: {run.stderr()}", every=0.05)
        assert run.p.poll() is None, run.stderr()
        await asyncio.sleep(0.3)  # into the pause between two attempts, or the next attempt
        sent = time.monotonic()
        run.p.send_signal(sig)
        await until(lambda: run.p.poll() is not None, SIGNAL_BOUND,
                    lambda: f"{case.id} to exit within {SIGNAL_BOUND} s of {sig.name}: {run.stderr()}", every=0.02)
        took = time.monotonic() - sent
    finally:
        run.kill()
    err = run.stderr()
    expected = case.on_sigint if sig == signal.SIGINT else case.on_sigterm
    assert run.p.returncode == expected, (run.p.returncode, took, err)
    assert "Traceback" not in err, err
    assert "cannot reach" not in err, err  # a stop is not a failure to reach


@pytest.mark.timeout(90)
async def test_a_nats_that_comes_up_during_the_wait_is_used(tmp_path, make_nats):
    """The point of waiting: a process started before its NATS (a machine
    booting, compose starting everything at once) starts normally once the
    server answers, and says it reached it after N attempts. ``up --layout
    single --nats`` runs the admin step itself, so the streams need no
    separate init racing the role's next attempt."""
    server = make_nats(port=free_port(), start=False)
    settings = make_settings(tmp_path, server.url)  # the default 60 s wait
    env = settings_env(settings)
    out, err = tmp_path / "up.stdout", tmp_path / "up.stderr"
    with open(out, "wb") as fo, open(err, "wb") as fe:
        p = subprocess.Popen([PYTHON, "-m", "sbctl", "up", "--layout", "single", "--nats", server.url], cwd=REPO,
                             env=env, stdin=subprocess.DEVNULL, stdout=fo, stderr=fe, start_new_session=True)
    run = Run(Case("late-nats", (), "NATS", "up"), server.url, p, err)
    try:
        await until(lambda: WARNING in run.stderr(), 30.0, lambda: f"up to wait for NATS: {run.stderr()}")
        assert p.poll() is None, run.stderr()
        await asyncio.get_running_loop().run_in_executor(None, server.start)
        await until(lambda: "Switchboard is up" in out.read_text(), 30.0,
                    lambda: f"up to start once NATS answers: {run.stderr()}")
        assert "dependency reached" in run.stderr() and "Traceback" not in run.stderr(), run.stderr()
        p.send_signal(signal.SIGTERM)
        await until(lambda: p.poll() is not None, 20.0, "up to stop")
        assert p.returncode == 0, run.stderr()
    finally:
        run.kill()


@pytest.mark.timeout(90)
async def test_up_exits_69_when_a_restarted_child_cannot_reach_nats(tmp_path, make_nats):
    """Protects up's exit code after it was ready: a child that dies later
    and, restarted, gives up on NATS made ``up`` exit 1 ("failed"), not 69
    (a dependency is missing: what a service manager should be told).
    NATS goes away, the edge child is killed, its restart waits WAIT s and
    exits 69, and so does up, with the child's line and its own."""
    server = make_nats(port=free_port())
    settings = make_settings(tmp_path, server.url, nats_connect_timeout_sec=WAIT)
    out, err = tmp_path / "up.stdout", tmp_path / "up.stderr"
    with open(out, "wb") as fo, open(err, "wb") as fe:
        p = subprocess.Popen([PYTHON, "-m", "sbctl", "up", "--nats", server.url], cwd=REPO, env=settings_env(settings),
                             stdin=subprocess.DEVNULL, stdout=fo, stderr=fe, start_new_session=True)
    run = Run(Case("nats-gone-after-ready", (), "NATS", "up"), server.url, p, err)
    try:
        await until(lambda: "Switchboard is up" in out.read_text(), 60.0, lambda: f"up to start: {run.stderr()}")
        edge = next(c for c in psutil.Process(p.pid).children() if " edge " in " ".join(c.cmdline()) + " ")
        await asyncio.get_running_loop().run_in_executor(None, server.stop)
        edge.kill()
        await until(lambda: p.poll() is not None, 45.0, lambda: f"up to give up: {run.stderr()}")
        assert p.returncode == EXIT_UNREACHABLE, (p.returncode, run.stderr())
        assert "could not reach a dependency" in run.stderr() and "Traceback" not in run.stderr(), run.stderr()
    finally:
        run.kill()
