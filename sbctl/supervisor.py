"""``switchboard up``: the fabric as supervised child processes.

One Python process runs on one core. At load the edge and the sequencer each
need most of a core and nats-server about as much again, so on the 2-core
reference box ``up`` runs, by default (layout ``sequencer,edge,archiver+presence+pusher``):

    nats-server            (embedded; not with --nats)      started first, stopped last
    switchboard sequencer
    switchboard edge
    switchboard run archiver+presence+pusher                (light roles share one process)

``--layout`` changes the grouping (``+`` joins roles in one process, ``,``
separates processes); ``--layout single`` runs every role inside ``up``
itself, as before (one process, nats-server its only child).

Rules:
- the streams, consumers and KV bucket are created by ``up`` once, before
  any role starts (the admin step, sbctl/init.py, as ``switchboard
  init`` does); the roles only check they exist (none of them may create
  them under nats/accounts.conf);
- every child has PR_SET_PDEATHSIG (it dies with ``up``, even if ``up`` is
  SIGKILLed) and its own session (a terminal's Ctrl-C reaches ``up`` only,
  which then stops the children in order: edge, the other roles, nats-server);
- a child that exits on its own is restarted after a pause that doubles from
  0.5 s (logged at INFO); one that exits MAX_DEATHS times within
  DEATH_WINDOW_SEC makes ``up`` stop everything and exit 1 with one line;
  one that exits 69 before it was ready (NATS, its store or its presence
  backend did not answer within its ``connect_timeout_sec``, its own line
  says which) is not restarted: ``up`` stops everything and exits 69;
- every child serves its own ``/metrics`` (its roles and its process: CPU,
  RSS, fds) on a loopback port, printed on the ``metrics:`` line: free ports,
  or ``metrics_port + 1``, ``+ 2``, ... in layout order when ``metrics_port``
  is set (stable ports for a Prometheus config). The edge's ``/metrics`` on
  its WebSocket port still shows every role (it re-exports the other
  children's pages, sbctl/metrics.py); ``metrics_port`` itself, if set, is
  served by ``up`` with that same content.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from sbctl.embedded import _die_with_parent, config_args, free_port, nats_server_binary, reserve
from sbctl.roles import ALL_ROLES
from sbctl.starting import EXIT_UNREACHABLE, Stopper
from switchboard import backoff, log
from switchboard.config import Settings, data_path
from switchboard.reach import Unreachable

DEFAULT_LAYOUT = "sequencer,edge,archiver+presence+pusher"
SINGLE = "single"

# A restart loop must not spin: the pause doubles from RESTART_MIN_SEC to
# RESTART_MAX_SEC; MAX_DEATHS exits within DEATH_WINDOW_SEC mean the child
# cannot run here (bad config, port taken) and `up` gives up.
RESTART_MIN_SEC = 0.5
RESTART_MAX_SEC = 8.0
MAX_DEATHS = 5
DEATH_WINDOW_SEC = 60.0
# Python start-up, NATS connect and stream checks take 1-3 s on a busy 2-core
# box; 60 s only expires when a child is really stuck. A child may wait for
# its dependencies on top (ready_timeout).
READY_TIMEOUT_SEC = 60.0
# A role flushes and closes within a few seconds on SIGTERM; after this it is
# SIGKILLed so `up` never hangs on a wedged child.
STOP_TIMEOUT_SEC = 10.0
# What a role prints on stdout once it serves (sbctl/cli.py).
READY_MARKERS = ("Switchboard is up", " running (NATS ")
QUIET_PREFIXES = ("NATS: ",)  # the edge's second line; `up` prints its own


def parse_layout(text: str) -> list[tuple[str, ...]]:
    """``"sequencer,edge,archiver+presence+pusher"`` -> process groups of roles.

    Every role must appear exactly once. ``single`` is not a list of groups
    (it means "in-process"); callers check for it first.
    """
    groups = [tuple(r.strip() for r in part.split("+") if r.strip()) for part in text.split(",") if part.strip()]
    seen = [r for g in groups for r in g]
    unknown = sorted(set(seen) - set(ALL_ROLES))
    if unknown:
        raise ValueError(f"layout {text!r}: unknown roles {unknown}; roles are {', '.join(ALL_ROLES)}")
    dup = sorted({r for r in seen if seen.count(r) > 1})
    if dup:
        raise ValueError(f"layout {text!r}: roles named twice {dup}")
    missing = [r for r in ALL_ROLES if r not in seen]
    if missing:
        raise ValueError(f"layout {text!r}: roles missing {missing}")
    return groups


@dataclass(kw_only=True)
class Child:
    """One supervised child process and its restart history."""

    name: str  # "nats-server", "sequencer", "edge", "archiver+presence+pusher"
    argv: list[str]
    env: dict[str, str] | None = None
    tcp_ready: tuple[str, int] | None = None  # ready once this port accepts (nats-server)
    proc: asyncio.subprocess.Process | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    deaths: collections.deque = field(default_factory=collections.deque)
    last_code: int | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


class UpFailed(Exception):
    """A child could not be kept running; the message is the one line ``up`` prints."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code  # up's exit code: 1, or EXIT_UNREACHABLE when a child could not reach a dependency


class Supervisor:
    """Starts, watches, restarts and stops the children of ``up``."""

    def __init__(self) -> None:
        self.children: list[Child] = []
        self.stopping = False
        self.failed: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.failed_code = 1  # up's exit code once ``failed`` is set
        self._watchers: list[asyncio.Task] = []
        self._readers: list[asyncio.Task] = []  # end at the child's EOF, so a stopping child never blocks on stdout
        self.log = log.get("up")

    async def start(self, child: Child) -> None:
        """Spawn ``child`` and keep it running (restarts) until :meth:`stop`."""
        self.children.append(child)
        await self._spawn(child)
        self._watchers.append(asyncio.create_task(self._watch(child), name=f"watch-{child.name}"))

    async def wait_ready(self, children: list[Child], timeout: float | None = READY_TIMEOUT_SEC) -> None:
        """All ``children`` ready, or :class:`UpFailed` (one kept dying, or
        too slow; ``timeout`` None: no limit)."""
        waits = asyncio.gather(*(c.ready.wait() for c in children))
        try:
            done, _ = await asyncio.wait([waits, self.failed], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:  # also when up is stopped while it waits: no gather left behind unretrieved
            if not waits.done():
                waits.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waits
        if self.failed in done:
            raise UpFailed(self.failed.result(), self.failed_code)
        if waits not in done:
            slow = [c.name for c in children if not c.ready.is_set()]
            raise UpFailed(f"not ready within {timeout:.0f} s: {', '.join(slow)}")

    async def run_until(self, stop: asyncio.Event) -> None:
        """Supervise until ``stop`` is set, or raise :class:`UpFailed` when a
        child fails for good first (it kept dying)."""
        stop_wait = asyncio.ensure_future(stop.wait())
        try:
            done, _ = await asyncio.wait([stop_wait, self.failed], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_wait.cancel()
        if self.failed in done:  # with its code: a restarted child that cannot reach NATS is 69 here too
            raise UpFailed(self.failed.result(), self.failed_code)

    async def _spawn(self, child: Child) -> None:
        child.ready.clear()
        child.proc = await asyncio.create_subprocess_exec(
            *child.argv, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL if child.tcp_ready else asyncio.subprocess.PIPE,
            stderr=None, env=child.env, start_new_session=True, preexec_fn=_die_with_parent)
        if child.tcp_ready is not None:
            self._readers.append(asyncio.create_task(self._probe(child, child.proc)))
        else:
            self._readers.append(asyncio.create_task(self._read_stdout(child, child.proc)))

    async def _probe(self, child: Child, proc: asyncio.subprocess.Process) -> None:
        assert child.tcp_ready is not None
        host, port = child.tcp_ready
        while proc.returncode is None:
            try:
                _, w = await asyncio.open_connection(host, port)
                w.close()
                child.ready.set()
                return
            except OSError:
                await asyncio.sleep(0.05)  # nats-server listens within ~100 ms

    async def _read_stdout(self, child: Child, proc: asyncio.subprocess.Process) -> None:
        """Readiness from the role's stdout; other lines are passed through."""
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.decode(errors="replace")
            if any(m in line for m in READY_MARKERS):
                child.ready.set()  # the role's own "is up" line; `up` prints its own summary
                continue
            if line.startswith(QUIET_PREFIXES):
                continue
            sys.stdout.write(line)
            sys.stdout.flush()

    async def _watch(self, child: Child) -> None:
        while True:
            assert child.proc is not None
            code = await child.proc.wait()
            if self.stopping:
                return
            child.last_code = code
            if code == EXIT_UNREACHABLE and not child.ready.is_set():
                # It already waited its connect_timeout_sec for NATS or its
                # store (its line is above): a restart would only wait again.
                if not self.failed.done():
                    self.failed_code = EXIT_UNREACHABLE
                    self.failed.set_result(f"{child.name} could not reach a dependency (exit code {code})")
                return
            now = time.monotonic()
            child.deaths.append(now)
            while child.deaths and now - child.deaths[0] > DEATH_WINDOW_SEC:
                child.deaths.popleft()
            n = len(child.deaths)
            if n >= MAX_DEATHS:
                if not self.failed.done():
                    self.failed.set_result(f"{child.name} keeps dying (exit code {code}, {n} exits within "
                                           f"{DEATH_WINDOW_SEC:.0f} s)")
                return
            # One child: no jitter.
            delay = backoff.delay(n - 1, initial=RESTART_MIN_SEC, cap=RESTART_MAX_SEC, jitter=None)
            self.log.info("child exited; restarting", child=child.name, pid=child.proc.pid, code=code,
                          restart_in_sec=delay, exits_in_window=n)
            await asyncio.sleep(delay)
            if self.stopping:
                return
            await self._spawn(child)
            self.log.info("child restarted", child=child.name, pid=child.proc.pid)

    async def stop(self, order: list[list[Child]]) -> None:
        """Stop the children, one batch after another (SIGTERM, SIGKILL after STOP_TIMEOUT_SEC)."""
        self.stopping = True
        for t in self._watchers:
            t.cancel()
        for batch in order:
            await asyncio.gather(*(_terminate(c) for c in batch))
        for t in self._watchers + self._readers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t


async def _terminate(c: Child) -> None:
    p = c.proc
    if p is None or p.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        p.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(p.wait(), STOP_TIMEOUT_SEC)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            p.kill()
        await p.wait()


def _role_argv(args: argparse.Namespace, roles: tuple[str, ...], settings: Settings, *, metrics_listen: str | None,
               metrics_peers: list[str]) -> list[str]:
    cmd = [roles[0]] if len(roles) == 1 else ["run", "+".join(roles)]
    # The URLs (which may hold passwords) go by environment (role_env), not
    # argv: any local user can read a process's command line.
    from sbctl.cli import ROLE_FLAGS  # here: sbctl.cli imports this module

    argv = [sys.executable, "-m", "sbctl", *cmd, "--log-level", settings.log_level]
    if any("data" in ROLE_FLAGS[r] for r in roles):  # a role that ignores data_dir refuses --data
        argv += ["--data", settings.data_dir]
    if getattr(args, "config", None):
        argv += ["--config", args.config]
    if "edge" in roles:
        argv += ["--host", settings.host, "--port", str(settings.port)]
    if metrics_listen:
        argv += ["--metrics-listen", metrics_listen]
    if metrics_peers:
        argv += ["--metrics-peers", ",".join(metrics_peers)]
    return argv


def role_env(settings: Settings) -> dict[str, str]:
    """The environment of a role child: secrets and URLs with credentials,
    which would be readable by anyone in argv (``ps``, /proc/PID/cmdline),
    and dev_signin (up's decision, sbctl/devmode.py), each under its
    sectioned name with the shell's spellings of it removed, so neither
    SWITCHBOARD_NATS_URL nor SWITCHBOARD_NATS__URL of the shell wins over up's."""
    from switchboard.configload import environment

    return environment(settings, ("jwt_secret", "nats_url", "store_url", "presence_url", "dev_signin"),
                       base=os.environ)


def _nats_child(settings: Settings, port: int) -> Child:
    store = data_path(settings, "nats", "x").parent  # same place as the in-process embedded server
    Path(store).mkdir(parents=True, exist_ok=True)
    port = port or free_port("127.0.0.1")
    argv = [nats_server_binary(), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store),
            "-n", "switchboard", "-l", str(Path(store) / "nats-server.log"), "-m", str(free_port("127.0.0.1")),
            *config_args(store, settings.sync_interval)]
    return Child(name="nats-server", argv=argv, tcp_ready=("127.0.0.1", port))


async def _init(settings: Settings) -> None:
    """The admin step (streams, consumers, KV) with up's own connection: the
    embedded server has no accounts; with ``--nats`` the URL's user must be
    allowed the JetStream management API (admin in nats/accounts.conf).
    An unreachable NATS is waited for as a role waits (switchboard/reach.py)."""
    from sbctl.fabric import first_connect
    from sbctl.init import init_fabric

    nc = await first_connect(settings, "switchboard-up", log.get("up"))
    try:
        await init_fabric(nc, settings)
    finally:
        await nc.close()


def _forward_hup(sup: Supervisor, settings: Settings, logger) -> None:
    if not settings.tls_cert:
        logger.info("SIGHUP ignored: no tls_cert to reload")
        return
    for c in sup.children:
        if "edge" in c.name.split("+") and c.proc is not None and c.proc.returncode is None:
            c.proc.send_signal(signal.SIGHUP)
            logger.info("SIGHUP forwarded: the edge reloads its TLS certificate", pid=c.proc.pid)


def _local(host: str) -> str:
    """An address this host can reach a listener on ``host`` at."""
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


async def serve_up(args: argparse.Namespace, settings: Settings, layout: list[tuple[str, ...]], *, embedded: bool,
                   nats_port: int) -> int:
    """Run ``up`` as a supervisor until SIGINT/SIGTERM (0, also while starting), a child keeps
    dying (1), or NATS (with ``--nats``) or a child's dependency cannot be reached (69)."""
    logger = log.get("up")
    # SIGINT/SIGTERM while starting (waiting for NATS, for the children to
    # be ready) cancel the start; then the orderly stop (sbctl/starting.py).
    stopper = Stopper()
    stop = stopper.stop
    loop = asyncio.get_running_loop()
    sup = Supervisor()
    # SIGHUP: the edge children re-read their TLS certificate; without TLS
    # there is nothing to reload (and by default SIGHUP would end up, and
    # with it every child).
    loop.add_signal_handler(signal.SIGHUP, _forward_hup, sup, settings, logger)
    nats: Child | None = None
    roles: list[Child] = []
    code = 0
    try:
        if not port_free(settings.host, settings.port):
            raise UpFailed(f"port {settings.port} on {settings.host} is in use (--port)")
        reserve(settings.port, settings.metrics_port, nats_port)  # never a planned child's port
        if embedded:
            nats = _nats_child(settings, nats_port)
            await sup.start(nats)
            await sup.wait_ready([nats])
            assert nats.tcp_ready is not None
            settings = settings.replace(nats_url=f"nats://127.0.0.1:{nats.tcp_ready[1]}")
        await _init(settings)
        # Every child serves its metrics on a loopback port; the edge re-exports the others'.
        plan = metrics_plan(layout, settings.metrics_port)
        peers = [m for g, m in plan if "edge" not in g]
        env = role_env(settings)
        for var in ("SWITCHBOARD_METRICS_PORT", "SWITCHBOARD_METRICS__PORT"):
            env.pop(var, None)  # up serves metrics_port itself (below); children get --metrics-listen
        for group, listen in plan:
            child = Child(name="+".join(group), env=env,
                          argv=_role_argv(args, group, settings, metrics_listen=listen,
                                          metrics_peers=peers if "edge" in group else []))
            roles.append(child)
            await sup.start(child)
        await sup.wait_ready(roles, ready_timeout(settings))
        stopper.started()
        edge_url = f"http://{_local(settings.host)}:{settings.port}/metrics"
        if settings.metrics_port:
            _serve_proxy_metrics(settings, edge_url)
        ws, http = ("wss", "https") if settings.tls_cert else ("ws", "http")
        note = "; dev sign-in on" if settings.dev_signin else ""
        lines = [f"Switchboard is up: {ws}://{settings.host}:{settings.port}/ws  "
                 f"(web app: {http}://{settings.host}:{settings.port}/{note})",
                 f"NATS: {log.redact_url(settings.nats_url)}   "
                 f"token: switchboard token USER --data {settings.data_dir}"]
        if embedded:  # a `nats` CLI context for it, so docs/operations.md's commands work verbatim
            from sbctl import natsctx

            lines.append(natsctx.hint(natsctx.write(settings.data_dir, settings.nats_url), settings.nats_url))
        # One write: whoever waits for "Switchboard is up" (a script, a test)
        # sees the NATS and context lines with it, never the banner alone.
        print("\n".join(lines), flush=True)
        print("processes: " + ", ".join(f"{c.name} {c.pid}" for c in sup.children), flush=True)
        print("metrics: " + ", ".join(f"{'+'.join(g)} http://{m}/metrics" for g, m in plan)
              + (f", all http://{_local(settings.host)}:{settings.metrics_port}/metrics" if settings.metrics_port
                 else ""), flush=True)
        logger.info("fabric up", processes={c.name: c.pid for c in sup.children}, nats=settings.nats_url)
        await sup.run_until(stop)
    except UpFailed as exc:
        print(f"switchboard up: {exc}", file=sys.stderr, flush=True)
        code = exc.code
    except Unreachable as exc:  # up's own connection, for the admin step (--nats)
        print(f"switchboard up: {log.redact(exc.message)}", file=sys.stderr, flush=True)
        code = EXIT_UNREACHABLE
    except asyncio.CancelledError as exc:
        if not stopper.interrupted(exc):
            raise
        code = 0  # stopped while starting
    finally:
        edge = [c for c in roles if "edge" in c.name.split("+")]
        rest = [c for c in roles if c not in edge]
        await sup.stop([edge, rest, [nats] if nats else []])
        logger.info("fabric stopped")
    return code


def ready_timeout(settings: Settings) -> float | None:
    """How long ``up`` waits for its children: start-up time plus what a
    child may wait for NATS and then its store or presence backend before it
    gives up by itself (exit 69); None when one of those waits forever."""
    waits = (settings.nats_connect_timeout_sec, settings.store_connect_timeout_sec,
             settings.presence_connect_timeout_sec)
    if not all(waits):
        return None
    return READY_TIMEOUT_SEC + waits[0] + max(waits[1:])


def metrics_plan(layout: list[tuple[str, ...]], base: int) -> list[tuple[tuple[str, ...], str]]:
    """``host:port`` of each process group's metrics page: ``base + 1``,
    ``base + 2``, ... in layout order when ``metrics_port`` (``base``) is
    set, else free loopback ports."""
    return [(group, f"127.0.0.1:{base + 1 + i if base else free_port('127.0.0.1')}")
            for i, group in enumerate(layout)]


def _serve_proxy_metrics(settings: Settings, edge_url: str) -> None:
    """``metrics_port`` of ``up``: the edge's page, which already holds every component's."""
    from prometheus_client import start_http_server
    from prometheus_client.registry import CollectorRegistry

    from sbctl.metrics import RemoteMetrics

    reg = CollectorRegistry()
    reg.register(RemoteMetrics(edge_url, per_process=True))  # the edge process's own process_* stay
    start_http_server(settings.metrics_port, addr=settings.host, registry=reg)


def port_free(host: str, port: int) -> bool:
    """Whether ``port`` can be bound (checked before children try, for a clear error).

    With SO_REUSEADDR, as the edge's own listener (asyncio's default on POSIX):
    connections of a killed edge linger in TIME_WAIT on its port, which makes a
    plain bind fail although the restarted edge can listen."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True
