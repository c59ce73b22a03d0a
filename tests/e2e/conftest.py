"""The deployment factory of the end-to-end tests: the ``deploy`` fixture.

    async def test_hello(deploy):
        d = await deploy(roles=("sequencer", "edge"), max_frame_bytes=4096)
        a, b = await d.sdk("alice"), await d.sdk("bob")
        ...

``await deploy(roles=..., mode=..., nats_url=..., init=True, **settings)``
returns a :class:`Deployment`: its own subject and stream prefix on the
session's nats-server (or ``nats_url``), its own SQLite store, data dir,
JWT secret and edge port (``helpers.make_settings``; ``**settings`` override
any Settings field). Two modes, one API:

- ``mode="inprocess"`` (default): the roles run inside the test process
  (``sbctl.fabric.run``: one NATS connection and one store for the roles
  started together), which is fast and lets a test look at a role's public
  state with :meth:`Deployment.component`.
- ``mode="processes"``: after the admin step (``switchboard init``), one
  ``python -m sbctl <role>`` child per role, configured by environment
  (``helpers.settings_env``), as in production; a role can be killed
  (SIGKILL), paused (SIGSTOP) or stopped (SIGTERM) on its own.

More roles join later with :meth:`Deployment.start` (a second edge, the
pusher for a while, a sequencer after a restart), each a :class:`Unit`.
Everything (units, SDK and raw clients, NATS connections, stores) is
stopped or closed when the test ends. ``deploy_module`` is the same factory
for a module-scoped fixture (one deployment shared by a module's tests).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest

from sbctl.embedded import free_port
from sbctl.fabric import Fabric, run
from switchboard import auth
from switchboard.config import Settings
from switchboard.store import Store, open_store
from switchboard_client import Client
from tests.e2e.helpers import STEP, Proc, Raw, admin_init, edge_metrics, make_settings, settings_env

DEFAULT_ROLES = ("sequencer", "edge")
MODES = ("inprocess", "processes")
# What a role process prints once it serves (sbctl/cli.py).
READY_EDGE = "Switchboard is up"
READY_OTHER = "running (NATS"
_UNSET: Any = object()


class Unit:
    """Roles started together: one in-process fabric, or one child process."""

    def __init__(self, name: str, roles: tuple[str, ...], settings: Settings, mode: str,
                 env: dict[str, str | None] | None = None, init: bool = True) -> None:
        self.name = name
        self.init = init  # in-process: run the admin step before the roles (else they only check)
        self.roles = roles
        self.settings = settings
        self.mode = mode
        self.env = env or {}  # more environment for a process (OTEL_*, ...); None: unset it
        self.proc: Proc | None = None  # mode "processes"
        self._fabric: Fabric | None = None  # mode "inprocess"
        self._stack = contextlib.AsyncExitStack()
        self.stopped = False

    @property
    def port(self) -> int:
        """The edge's port (HTTP, WebSocket and /metrics)."""
        return self.settings.port

    @property
    def url(self) -> str:
        """The edge's WebSocket URL."""
        scheme = "wss" if self.settings.tls_cert else "ws"
        return f"{scheme}://{self.settings.host}:{self.settings.port}/ws"

    @property
    def pid(self) -> int:
        return self._process().pid

    def output(self) -> str:
        """What the process printed (its log, stdout and stderr together)."""
        return self._process().output()

    def component(self, role: str) -> Any:
        """The running role object (in-process units only): for its public
        state (``metrics``, ``epoch``, ``devices``...), never its private fields."""
        if self._fabric is None:
            raise TypeError(f"unit {self.name} runs as a process: observe it over the wire")
        return self._fabric.components[role]

    async def wait_output(self, needle: str, timeout: float = 30.0) -> str:
        """The process's output once it contains ``needle`` (processes only)."""
        return await self._process().wait_output(needle, timeout)

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the process (processes only): SIGHUP to reload, ..."""
        self._process().p.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL: no clean shutdown (processes only)."""
        self._process().kill()
        self.stopped = True

    def pause(self) -> None:
        """SIGSTOP (processes only): frozen until :meth:`resume`."""
        self._process().pause()

    def resume(self) -> None:
        self._process().resume()

    async def stop(self) -> int | None:
        """A clean stop: SIGTERM for a process (waits for its exit and
        returns its exit status), the roles' ``stop()`` in-process (None)."""
        code = None
        if self.proc is not None and self.proc.running:
            code = await self.proc.stop()
        self.stopped = True
        await self._stack.aclose()
        return code

    async def aclose(self) -> None:
        """Teardown: a process is killed (nothing left to check), in-process roles stop."""
        if self.proc is not None:
            self.proc.close()
        self.stopped = True
        await self._stack.aclose()

    async def _start(self, log: Path) -> None:
        if self.mode == "inprocess":
            self._fabric = await self._stack.enter_async_context(
                run(self.settings, self.roles, create_streams=self.init))
            return
        args = list(self.roles) if len(self.roles) == 1 else ["run", "+".join(self.roles)]
        env = settings_env(self.settings)
        for k, v in self.env.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        self.proc = Proc(args, env=env, log=log)
        self._stack.callback(self.proc.close)

    async def ready(self) -> None:
        """Until the unit serves: a process printed its ready line (in-process: started is ready)."""
        if self.proc is not None:
            await self.proc.wait_output(READY_EDGE if "edge" in self.roles else READY_OTHER)

    def _process(self) -> Proc:
        if self.proc is None:
            raise TypeError(f"unit {self.name} runs in-process: start it with mode='processes'")
        return self.proc


class Deployment:
    """One isolated deployment: its settings, its units, and the clients a
    test opened on it (all closed at teardown)."""

    def __init__(self, settings: Settings, mode: str, tmp: Path, env: dict[str, str | None] | None = None,
                 init: bool = True) -> None:
        self.settings = settings
        self.mode = mode
        self.init = init
        self.env = env or {}  # added to every role process's environment
        self.units: list[Unit] = []
        self._tmp = tmp
        self._clients: list[Client] = []
        self._raws: list[Raw] = []
        self._closers: list[Any] = []

    # -- units ----------------------------------------------------------------

    async def start(self, *roles: str, mode: str | None = None, env: dict[str, str | None] | None = None,
                    **settings: Any) -> Unit:
        """Start ``roles`` together as one more unit (in-process: one fabric;
        processes: one child, ``switchboard run a+b`` for several roles, with
        ``env`` added to its environment; a None value removes the variable). ``settings`` override the
        deployment's for this unit only; a second edge gets a free port
        unless given."""
        unit = await self.add(roles, mode or self.mode, settings, env or self.env)
        await unit.ready()
        return unit

    async def add(self, roles: tuple[str, ...], mode: str, settings: dict[str, Any],
                   env: dict[str, str | None]) -> Unit:
        """Start a unit without waiting until it serves (``start`` is ``add``
        then ``Unit.ready``; the factory starts role processes together)."""
        assert mode in MODES, f"mode must be one of {MODES}"
        if "edge" in roles and any("edge" in u.roles for u in self.units):
            settings.setdefault("port", free_port())  # a second edge beside the first
        unit = Unit(f"{'+'.join(roles)}-{len(self.units)}", roles, self.settings.replace(**settings), mode, env,
                    self.init)
        self.units.append(unit)
        await unit._start(self._tmp / f"{unit.name}.log")
        return unit

    def unit(self, role: str) -> Unit:
        """The first running unit that holds ``role``."""
        for u in self.units:
            if role in u.roles and not u.stopped:
                return u
        raise LookupError(f"no running unit holds {role!r}: {[(u.name, u.stopped) for u in self.units]}")

    def component(self, role: str) -> Any:
        """The running ``role`` object of an in-process unit (see :meth:`Unit.component`)."""
        return self.unit(role).component(role)

    async def stop(self, role: str | Unit | None = None) -> None:
        """Stop the unit holding ``role`` (or that unit), or every unit."""
        targets = list(reversed(self.units)) if role is None else [self._target(role)]
        for u in targets:
            await u.stop()

    def kill(self, role: str | Unit) -> None:
        """SIGKILL the process holding ``role`` (mode "processes")."""
        self._target(role).kill()

    def _target(self, role: str | Unit) -> Unit:
        return role if isinstance(role, Unit) else self.unit(role)

    # -- clients ----------------------------------------------------------------

    def _edge(self, edge: Unit | None) -> Unit:
        if edge is not None:
            return edge
        for u in self.units:
            if "edge" in u.roles and not u.stopped:
                return u
        # No edge running (between a stop and a start): where it will listen.
        return Unit("-", ("edge",), self.settings, self.mode)

    @property
    def url(self) -> str:
        """The WebSocket URL of the (first running) edge."""
        return self._edge(None).url

    @property
    def port(self) -> int:
        return self._edge(None).port

    def token(self, user: str, ttl: int = 3600) -> str:
        return auth.issue(self.settings.jwt_secret, user, ttl_sec=ttl)

    async def sdk(self, user: str, *, edge: Unit | None = None, connect: bool = True, **kw: Any) -> Client:
        """An SDK client of ``user``, connected and synced (unless ``connect=False``).
        Gap filling is off by default: most tests check the edge's delivery
        itself, not the history fallback."""
        kw.setdefault("fill_gaps", False)
        kw.setdefault("backoff_min", 0.05)
        kw.setdefault("backoff_max", 0.5)
        c = Client(url=self._edge(edge).url, token=self.token(user), **kw)
        self._clients.append(c)
        if connect:
            await c.connect(timeout=STEP)
        return c

    async def raw(self, user: str | None = None, *, token: str | None = _UNSET, hello: bool = True,
                  cursor: int | None = None, epoch: str | None = None, edge: Unit | None = None,
                  **kw: Any) -> Raw:
        """A raw WebSocket of ``user`` (``token=`` gives the token itself, or
        None for none), after hello/welcome/synced unless ``hello=False``.
        ``kw`` go to :meth:`Raw.open` (``read=False``, ``sock=``, websockets'
        connect options)."""
        tok = (self.token(user) if user is not None else None) if token is _UNSET else token
        r = await Raw.open(self._edge(edge).url, tok, **kw)
        self._raws.append(r)
        if hello:
            await r.hello(cursor, epoch)
        return r

    # -- looking at it from outside ------------------------------------------

    async def metrics(self, *names: str, edge: Unit | None = None) -> dict[str, float]:
        """The unlabelled series of the edge's ``/metrics`` page (all, or ``names``)."""
        return await edge_metrics(self._edge(edge).port, names or None)

    async def nats(self) -> Any:
        """A NATS connection to the deployment's server (closed at teardown)."""
        nc = await nats.connect(self.settings.nats_url)
        self._closers.append(nc.close)
        return nc

    async def store(self) -> Store:
        """The deployment's store, opened by the test (closed at teardown)."""
        st = open_store(self.settings.store_url)
        await st.open()
        self._closers.append(st.close)
        return st

    async def aclose(self) -> None:
        for c in self._clients:
            with contextlib.suppress(Exception):
                await c.close()
        for r in self._raws:
            await r.close()
        for u in reversed(self.units):
            await u.aclose()
        for close in reversed(self._closers):
            with contextlib.suppress(Exception):
                await close()


class Deployer:
    """The factory behind ``deploy`` / ``deploy_module``; every deployment
    it made is closed by :meth:`aclose`."""

    def __init__(self, tmp: Path, nats_url: str) -> None:
        self.tmp = tmp
        self.nats_url = nats_url
        self.made: list[Deployment] = []

    async def __call__(self, roles: tuple[str, ...] = DEFAULT_ROLES, *, mode: str = "inprocess",
                       nats_url: str | None = None, init: bool = True, env: dict[str, str | None] | None = None,
                       **settings: Any) -> Deployment:
        """``init=False``: no admin step (the test runs it itself, e.g. as
        the admin NATS user): role processes and in-process roles only check
        that streams, consumers and bucket exist. ``env``: added to every
        role process's environment."""
        assert mode in MODES, f"mode must be one of {MODES}"
        tmp = self.tmp / f"d{len(self.made)}"
        tmp.mkdir(parents=True, exist_ok=True)
        s = make_settings(tmp, nats_url or self.nats_url, **settings)
        d = Deployment(s, mode, tmp, env, init)
        self.made.append(d)
        if mode == "inprocess":
            if roles:  # the fabric runs the admin step itself (init=True)
                await d.start(*roles)
            return d
        if init:  # role processes only check that streams, consumers and bucket exist
            await admin_init(s)
        units = [await d.add((role,), mode, {}, d.env) for role in roles]  # their starts overlap
        for unit in units:
            await unit.ready()
        return d

    async def aclose(self) -> None:
        for d in reversed(self.made):
            await d.aclose()


@pytest.fixture
async def deploy(tmp_path: Path, nats_server) -> AsyncIterator[Deployer]:
    """``await deploy(roles=..., mode="inprocess"|"processes", **settings)``: see the module docstring."""
    deployer = Deployer(tmp_path, nats_server.url)
    try:
        yield deployer
    finally:
        await deployer.aclose()


@pytest.fixture(scope="module")
async def deploy_module(tmp_path_factory: pytest.TempPathFactory, nats_server) -> AsyncIterator[Deployer]:
    """The same factory for module-scoped fixtures: deployments live until the module's tests are done."""
    deployer = Deployer(tmp_path_factory.mktemp("deploy"), nats_server.url)
    try:
        yield deployer
    finally:
        await deployer.aclose()
