"""The cluster ``bench faults`` breaks: ``cluster up``'s shape, restarted by the bench.

The processes are those of ``switchboard cluster up`` (sbctl/cluster.py:
launch_plan(), the node configs, credentials, the admin step at R3, each role
its own process under its own NATS user, argv and environment as ``cluster
up`` gives them), started by the same Supervisor, with one difference: a
process that dies is **not** restarted by the supervisor. The bench restarts
it itself, after the time a fault holds it down, and each child's stderr goes
to ``DATA/logs/<child>.log`` (the evidence when a fault loses something).

With ``netns`` the last NATS node runs in a network namespace of its own
(sbctl/bench/netns.py), joined to the host by a veth pair, so it can be cut
off from the other two by setting the link down.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
from pathlib import Path

import nats

from sbctl.bench import netns as ns
from sbctl.cluster import Node, admin_step, credentials, launch_plan, nats_children, node_config, role_plan
from sbctl.embedded import _die_with_parent
from sbctl.supervisor import Child, Supervisor, _role_argv, ready_timeout
from switchboard import auth
from switchboard.config import Settings
from switchboard.configload import environment


async def _quiet(exc: Exception) -> None:
    """The bench's own admin connection: a node killed on purpose is not news."""


async def _none() -> None:
    return None


RESTART_TRIES = 5
RESTART_PAUSE_SEC = 1.0


class HeldSupervisor(Supervisor):
    """The Supervisor without its restarts, with each child's stderr in a log file."""

    def __init__(self, logs: Path) -> None:
        super().__init__()
        self.logs = logs

    async def _watch(self, child: Child) -> None:  # no restart: the bench decides when
        return None

    async def _spawn(self, child: Child) -> None:
        child.ready.clear()
        with open(self.logs / f"{child.name}.log", "ab") as err:
            child.proc = await asyncio.create_subprocess_exec(
                *child.argv, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL if child.tcp_ready else asyncio.subprocess.PIPE,
                stderr=err, env=child.env, start_new_session=True, preexec_fn=_die_with_parent)
        if child.tcp_ready is not None:
            self._readers.append(asyncio.create_task(self._probe(child, child.proc)))
        else:
            self._readers.append(asyncio.create_task(self._read_stdout(child, child.proc)))

    async def respawn(self, child: Child) -> None:
        await self._spawn(child)


class Fleet:
    """Start, break, restart and stop the cluster shape under ``data``."""

    def __init__(self, data: Path, port: int, *, netns: bool = False) -> None:
        self.data = data
        self.plan = launch_plan()
        data.mkdir(parents=True, exist_ok=True)
        (data / "logs").mkdir(exist_ok=True)
        s = Settings().replace(data_dir=str(data), port=port, host="127.0.0.1", replicas=self.plan.replicas,
                               dev_signin=False, log_level="warning")
        self.s = s.replace(jwt_secret=auth.dev_secret(s.data_dir))
        self.creds = credentials(data)
        self.netns = netns
        self.sup: HeldSupervisor | None = None
        self.nodes: list[Node] = []
        self.hosts: dict[str, str] = {}  # node name -> the address its listeners use
        self.nats: list[Child] = []
        self.roles: list[Child] = []
        self.nc: nats.NATS | None = None
        self.notes: list[str] = []  # what happened while starting (children that exited before ready)

    @property
    def ws_urls(self) -> list[str]:
        return [f"ws://127.0.0.1:{self.s.port + i}/ws" for i in range(self.plan.roles["edge"])]

    def token(self, user: str) -> str:
        return auth.issue(self.s.jwt_secret, user, ttl_sec=86400)

    def urls(self, user: str, start: int = 0) -> str:
        """Every node's URL with ``user``'s password, node ``start`` first (as cluster.urls)."""
        pw = self.creds[user]
        order = self.nodes[start % len(self.nodes):] + self.nodes[:start % len(self.nodes)]
        return ",".join(f"nats://{user}:{pw}@{self.hosts[n.name]}:{n.port}" for n in order)

    def child(self, name: str) -> Child:
        return next(c for c in self.nats + self.roles if c.name == name)

    def of_role(self, role: str) -> list[Child]:
        return [c for c in self.roles if c.name.rsplit("-", 1)[0] == role]

    async def start(self) -> None:
        s, p = self.s, self.plan
        self.sup = sup = HeldSupervisor(self.data / "logs")
        self.nodes, self.nats = nats_children(s, p.nats_nodes, 0, self.creds)
        self.hosts = {n.name: "127.0.0.1" for n in self.nodes}
        if self.netns:
            self._into_namespace()
        for c in self.nats:
            await sup.start(c)
        await sup.wait_ready(self.nats)
        await admin_step(s.replace(nats_url=self.urls(p.admin_user)))
        self.roles = []
        count: dict[str, int] = {}
        for i, (role,) in enumerate(role_plan(p)):
            count[role] = count.get(role, 0) + 1
            user = p.users[role]
            cs = s.replace(nats_url=self.urls(user, i), port=s.port + count[role] - 1)
            env = environment(cs, p.settings, base=os.environ)
            argv = _role_argv(argparse.Namespace(), (role,), cs, metrics_listen=None, metrics_peers=[])
            child = Child(name=f"{role}-{count[role]}", argv=argv, env=env)
            self.roles.append(child)
            await sup.start(child)
        await asyncio.gather(*(self._until_ready(c) for c in self.roles))
        self.nc = await nats.connect(servers=self.urls(p.admin_user).split(","), connect_timeout=2,
                                     reconnect_time_wait=0.2, max_reconnect_attempts=-1, error_cb=_quiet,
                                     disconnected_cb=_none, reconnected_cb=_none)

    def _into_namespace(self) -> None:
        """The last node runs in the namespace and listens on its address; the
        others' route listeners move to the host end of the veth pair, which
        the namespace can reach (its 127.0.0.1 is its own loopback)."""
        last = self.nodes[-1]
        self.hosts[last.name] = ns.NS_ADDR
        home = Path(self.s.data_dir).resolve() / "cluster"
        for node in self.nodes:
            short = node.name.removeprefix("sb-")
            conf = node_config(node, self.nodes, home / short, self.s.sync_interval)
            (home / f"{short}.conf").write_text(ns.rehost(conf, node, self.nodes, last.name))
        child = self.nats[-1]
        child.argv = ns.exec_argv(child.argv)
        child.tcp_ready = (ns.NS_ADDR, last.port)

    async def stop(self) -> None:
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()
            self.nc = None
        if self.sup is not None:
            edges = self.of_role("edge")
            await self.sup.stop([edges, [c for c in self.roles if c not in edges], self.nats])
            self.sup = None

    async def signal(self, child: Child, sig: signal.Signals) -> None:
        assert child.proc is not None
        with contextlib.suppress(ProcessLookupError):
            child.proc.send_signal(sig)
        if sig == signal.SIGKILL:
            await child.proc.wait()

    async def restart(self, child: Child, notes: list[str] | None = None) -> None:
        """Start ``child`` again and wait until it serves; one that exits before
        (e.g. its start-up requests time out on a loaded cluster) is started
        again after RESTART_PAUSE_SEC, as a supervisor would, up to RESTART_TRIES."""
        assert self.sup is not None
        await self.sup.respawn(child)
        await self._until_ready(child, notes)

    async def _until_ready(self, child: Child, notes: list[str] | None = None) -> None:
        assert self.sup is not None
        notes = self.notes if notes is None else notes
        for attempt in range(1, RESTART_TRIES + 1):
            if attempt > 1:
                await self.sup.respawn(child)
            assert child.proc is not None
            ready = asyncio.ensure_future(child.ready.wait())
            died = asyncio.ensure_future(child.proc.wait())
            await asyncio.wait([ready, died], timeout=ready_timeout(self.s), return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            died.cancel()
            if child.ready.is_set():
                return
            code = child.proc.returncode
            notes.append(f"{child.name} exited while starting (code {code}, attempt {attempt}); "
                         f"see logs/{child.name}.log")
            if code is None:
                break
            await asyncio.sleep(RESTART_PAUSE_SEC)
        raise RuntimeError(f"{child.name} did not start again after {RESTART_TRIES} attempts")

    async def revive(self) -> list[str]:
        """Start again any process that died by itself (not by the bench); what happened, for the notes."""
        notes = []
        for c in self.nats + self.roles:
            if c.proc is not None and c.proc.returncode is not None:
                notes.append(f"{c.name} had exited by itself (code {c.proc.returncode}): started again")
                await self.restart(c, notes)
        return notes

    async def stream_info(self, stream: str) -> dict:
        assert self.nc is not None
        r = await self.nc.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=2)
        info: dict = json.loads(r.data)
        return info

    async def leader(self, stream: str) -> str | None:
        with contextlib.suppress(Exception):
            return (await self.stream_info(stream)).get("cluster", {}).get("leader")
        return None

    async def move_leader(self, stream: str, to: str) -> bool:
        """Ask ``stream``'s leader to step down in favour of node ``to``; whether ``to`` leads after."""
        assert self.nc is not None
        body = json.dumps({"placement": {"preferred": to}}).encode()
        for _ in range(5):
            if await self.leader(stream) == to:
                return True
            with contextlib.suppress(Exception):
                await self.nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", body, timeout=3)
            await asyncio.sleep(1.0)
        return await self.leader(stream) == to

    async def settled(self, streams: tuple[str, ...], timeout: float = 30.0) -> bool:
        """Every stream has a leader and all its replicas current (the cluster healed)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while loop.time() < end:
            ok = True
            for st in streams:
                try:
                    cl = (await self.stream_info(st)).get("cluster", {})
                except Exception:
                    ok = False
                    break
                peers = cl.get("replicas", [])
                if not cl.get("leader") or len(peers) != self.plan.replicas - 1 \
                        or not all(p.get("current") for p in peers):
                    ok = False
                    break
            if ok:
                return True
            await asyncio.sleep(0.25)
        return False
