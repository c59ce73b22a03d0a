"""``switchboard cluster up``: the production shape on one machine.

    switchboard cluster up [--nats 3] [--edges 2] [--sequencers 2] [--archivers 2] [--cassandra 0|1|3] [--data DIR]

Starts, as supervised children (sbctl/supervisor.py: restarts, PDEATHSIG,
own sessions, the same stop):

- ``--nats`` nats-servers on loopback joined by routes into the cluster
  ``switchboard`` (JetStream on each, the accounts of nats/accounts.conf);
- the admin step (sbctl/init.py) as the ``admin`` user, with the streams and
  the KV bucket at ``replicas = min(3, --nats)`` (R3);
- with ``--cassandra N`` (1 or 3), N Cassandra nodes on 127.0.0.1 ...
  127.0.0.N (sbctl/cassandra.py: one JVM each, data under
  ``DIR/cassandra/cK``), started first (the slowest); the schema is made
  once when the ring has formed (keyspace ``switchboard`` at RF
  ``min(3, N)``), and the sequencers and archivers get the ring's URL
  (LOCAL_QUORUM reads and writes) instead of the SQLite file;
- every role as its own process, logged in as its own NATS user: the
  sequencers, edges (ports ``--port``, ``--port + 1``...) and archivers
  asked for, one presence tracker (``memory://``: one tracker holds the
  state) and one pusher.

Files under DIR: ``cluster/credentials.json`` (0600: the password of every
user of accounts.conf, made at the first start and kept), ``cluster/nK.conf``
and ``cluster/nK/`` (node K's config and JetStream store), the SQLite
message store ``switchboard.db`` that every sequencer and archiver shares
(WAL mode lets several processes write one file; busy writers wait
``busy_timeout``), the pusher's ``devices.db``, the edges' ``jwt.secret``
and ``nats-context.json`` (0600, the ``operator`` user) for the ``nats`` CLI.

SIGINT/SIGTERM stop the edges, then the other roles, then the nats-servers
and the Cassandra nodes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from sbctl import cassandra, extras
from sbctl.embedded import free_port, nats_server_binary, reserve
from sbctl.roles import ALL_ROLES
from sbctl.starting import Stopper
from sbctl.supervisor import Child, Supervisor, UpFailed, _role_argv, metrics_plan, port_free, ready_timeout
from switchboard import log
from switchboard.config import Settings
from switchboard.errors import ConfigError, Unavailable

ACCOUNTS = Path(__file__).resolve().parents[1] / "nats" / "accounts.conf"
USERS = ("edge", "sequencer", "archiver", "pusher", "presence", "service", "operator", "admin", "sys")
CLUSTER_NAME = "switchboard"
MAX_PAYLOAD = "1MB"  # a presence heartbeat of 20k users fits (nats/single.conf)
ADMIN_USER = "admin"
# The settings each role process is given, by environment
# (SWITCHBOARD_<SECTION>__<KEY>, switchboard/configload.py): secrets and URLs
# with credentials stay out of argv (readable by any local user), dev_signin is
# the launcher's decision, replicas the R3 the roles check the streams at.
ROLE_SETTINGS = ("jwt_secret", "nats_url", "store_url", "presence_url", "dev_signin", "replicas")
READY_LINE = "Switchboard cluster is up"
# Routes connect and a JetStream meta leader is elected within a few seconds
# of the nodes listening; the admin step is retried until then.
INIT_TIMEOUT_SEC = 60.0


@dataclass(frozen=True)
class Node:
    name: str
    port: int
    route_port: int
    http_port: int

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"


@dataclass(frozen=True)
class Plan:
    """What ``cluster up`` starts and hands each process. deploy/compose.yaml
    and deploy/k8s/ describe the same shape: tests/unit/test_deploy_in_step.py
    compares them with this."""

    nats_nodes: int
    replicas: int  # of the streams and the KV bucket
    roles: dict[str, int]  # role -> processes, in start order
    users: dict[str, str]  # role -> the NATS user it logs in as (nats/accounts.conf)
    admin_user: str  # the admin step's user (streams, consumers, KV)
    credentials: tuple[str, ...]  # every user whose password the nats-servers get (SB_<USER>_PASSWORD)
    settings: tuple[str, ...]  # the Settings fields each role is given by environment
    cassandra_nodes: int = 0  # 0: the SQLite file in DIR; 1 or 3: a local ring (sbctl/cassandra.py)

    @property
    def env(self) -> tuple[str, ...]:
        """The variables naming ``settings``: ``SWITCHBOARD_NATS__URL``..."""
        from switchboard.configload import leaf_of

        return tuple(leaf_of(name).env for name in self.settings)


def launch_plan(nats: int = 3, edges: int = 2, sequencers: int = 2, archivers: int = 2, cassandra: int = 0) -> Plan:
    """The plan for these counts (the defaults: ``cluster up`` with no flags)."""
    roles = {"sequencer": sequencers, "edge": edges, "archiver": archivers, "presence": 1, "pusher": 1}
    return Plan(nats_nodes=nats, replicas=min(3, nats), roles=roles, users={r: r for r in roles},
                admin_user=ADMIN_USER, credentials=USERS, settings=ROLE_SETTINGS, cassandra_nodes=cassandra)


def _plan_of(args: argparse.Namespace) -> Plan:
    return launch_plan(args.nats_nodes, args.edges, args.sequencers, args.archivers, args.cassandra)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from sbctl.cli import _flag

    cl = sub.add_parser("cluster", help="a local NATS cluster with every role as its own process (cluster up)")
    csub = cl.add_subparsers(dest="cluster_cmd", required=True, metavar="COMMAND")
    up = csub.add_parser("up", help="start a NATS cluster on loopback (R3) and each role as its own process")
    for name in ("config", "data", "store", "log_level", "host", "port"):
        _flag(up, name)
    up.add_argument("--nats", dest="nats_nodes", type=int, default=3, metavar="N", help="nats-servers (default 3)")
    up.add_argument("--nats-port", type=int, default=0, metavar="PORT",
                    help="client port of node 1 (node K: PORT + K - 1; default: free ports)")
    for role in ("edge", "sequencer", "archiver"):
        up.add_argument(f"--{role}s", type=int, default=2, metavar="N", help=f"{role} processes (default 2)")
    up.add_argument("--cells", type=int, default=1, metavar="N",
                    help="NATS clusters joined by gateways, each with its own --nats nodes and --edges edges "
                         "(default 1; sbctl/cells.py)")
    up.add_argument("--cassandra", type=int, default=0, choices=(0, 1, 3),
                    help="Cassandra nodes to start on 127.0.0.1-3 as the message store (RF min(3, N), "
                         "LOCAL_QUORUM; default 0: SQLite in --data)")
    up.add_argument("--no-dev-signin", dest="no_dev_signin", action="store_true",
                    help="do not offer the web app's development sign-in (on by default on loopback)")
    cl.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from sbctl.cli import _settings
    from sbctl.devmode import up_dev_signin
    from switchboard import auth

    if args.cassandra and args.store:
        raise ConfigError("--cassandra starts the store: give either --cassandra N or --store URL, not both")
    for flag in ("nats_nodes", "edges", "sequencers", "archivers", "cells"):
        if getattr(args, flag) < 1:
            raise ConfigError(f"--{flag.replace('_nodes', '')} must be at least 1")
    if not ACCOUNTS.exists():
        raise ConfigError(f"{ACCOUNTS} not found: cluster up runs from a source checkout (nats/ beside sbctl/)")
    s = _settings(args)
    extras.check(s, ALL_ROLES)  # --store cassandra://... without the driver: one line now, not 4 dying children
    s = s.replace(replicas=_plan_of(args).replicas, dev_signin=up_dev_signin(s.host, disabled=args.no_dev_signin))
    if not s.jwt_secret:
        s = s.replace(jwt_secret=auth.dev_secret(s.data_dir))
    lock = hold_data_dir(Path(s.data_dir))
    try:
        for i in range(args.edges * args.cells):
            if not port_free(s.host, s.port + i):
                raise ConfigError(f"port {s.port + i} on {s.host} is in use (edge {i + 1}: --port + {i})")
            reserve(s.port + i)  # never a planned nats-server's or metrics port
        ring = ring_of(args.cassandra, Path(s.data_dir))
        if ring:
            s = s.replace(store_url=cassandra.store_url(ring))
            extras.check(s, ALL_ROLES)  # the driver, for the ring
        log.configure(s.log_level, s.log_json)
        if args.cells > 1:  # a supercluster: sbctl/cells.py
            from sbctl import cells

            if ring:
                raise ConfigError("--cells with --cassandra is not built: run a ring and pass --store")
            return asyncio.run(cells.serve(args, s))
        return asyncio.run(serve(args, s, ring))
    finally:
        lock.close()


def ring_of(n: int, data: Path) -> list[cassandra.NodeSpec]:
    """The specs of the ``--cassandra`` ring under DIR/cassandra (none for 0);
    fetches the jars with Maven the first time (a few minutes)."""
    if not n:
        return []
    if not cassandra.lib_dir().is_dir():
        print(f"switchboard cluster up: fetching the Cassandra {cassandra.CASSANDRA_VERSION} jars with Maven "
              f"into {cassandra.lib_dir()} (once)", file=sys.stderr, flush=True)
    try:
        return cassandra.ring_specs(n, data.resolve() / "cassandra")
    except (cassandra.CassandraStartError, OSError, subprocess.SubprocessError) as exc:
        raise ConfigError(f"--cassandra {n}: {exc}") from None


def hold_data_dir(data: Path) -> IO[str]:
    """An exclusive lock on DIR for this process's life: a second launcher on
    the same DIR would start nats-servers on the same JetStream stores."""
    import fcntl

    (data / "cluster").mkdir(parents=True, exist_ok=True)
    f = open(data / "cluster" / "lock", "a+")  # noqa: SIM115 - held until the process ends
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        f.close()
        raise ConfigError(f"{data} is in use by another `switchboard cluster up`") from None
    f.truncate(0)
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def credentials(data: Path) -> dict[str, str]:
    """The password of every user of accounts.conf: made once, kept in a 0600 file."""
    path = data / "cluster" / "credentials.json"
    if path.exists():
        creds: dict[str, str] = json.loads(path.read_text())
        return creds
    import secrets

    # Letters and hex digits only, a letter first: nats-server parses a
    # variable's value as a config value, so "2026-..." would be a date.
    creds = {u: f"pw{secrets.token_hex(16)}" for u in USERS}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(creds, f, indent=2)
    return creds


def node_config(node: Node, nodes: list[Node], store: Path, sync_interval: str) -> str:
    routes = "\n".join(f"    nats-route://127.0.0.1:{n.route_port}" for n in nodes)
    cluster = (f"cluster {{\n  name: {CLUSTER_NAME}\n  listen: 127.0.0.1:{node.route_port}\n"
               f"  routes: [\n{routes}\n  ]\n}}\n") if len(nodes) > 1 else ""
    return (f"# Written by `switchboard cluster up` at each start; edits are overwritten.\n"
            f"server_name: {node.name}\nlisten: 127.0.0.1:{node.port}\nhttp: 127.0.0.1:{node.http_port}\n"
            f"max_payload: {MAX_PAYLOAD}\n"
            f'jetstream {{\n  store_dir: "{store}"\n  sync_interval: "{sync_interval}"\n}}\n'
            f"{cluster}include ./accounts.conf\n")


def nats_children(s: Settings, n: int, base_port: int, creds: dict[str, str]) -> tuple[list[Node], list[Child]]:
    home = Path(s.data_dir).resolve() / "cluster"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ACCOUNTS, home / "accounts.conf")  # nats-server includes relative to the config file
    if base_port:
        reserve(*range(base_port, base_port + n))  # client ports first: no route or monitor port among them
    nodes = [Node(f"sb-n{k + 1}", base_port + k if base_port else free_port(), free_port(), free_port())
             for k in range(n)]
    env = {**os.environ, **{f"SB_{u.upper()}_PASSWORD": pw for u, pw in creds.items()}}
    children = []
    for node in nodes:
        store = home / node.name.removeprefix("sb-")
        store.mkdir(exist_ok=True)
        conf = home / f"{store.name}.conf"
        conf.write_text(node_config(node, nodes, store, s.sync_interval))
        argv = [nats_server_binary(), "-c", str(conf), "-l", str(store / "nats-server.log")]
        children.append(Child(name=node.name, argv=argv, env=env, tcp_ready=("127.0.0.1", node.port)))
    return nodes, children


def urls(nodes: list[Node], user: str, password: str, start: int = 0) -> str:
    """Every node's URL with ``user``'s credentials, node ``start`` first (spreads the roles' connections)."""
    order = nodes[start % len(nodes):] + nodes[:start % len(nodes)]
    return ",".join(f"nats://{user}:{password}@127.0.0.1:{n.port}" for n in order)


def role_plan(p: Plan) -> list[tuple[str, ...]]:
    return [(role,) for role, n in p.roles.items() for _ in range(n)]


async def admin_step(s: Settings) -> None:
    """The admin step (sbctl/init.py), retried until the cluster has a JetStream meta leader."""
    from sbctl.supervisor import _init

    loop = asyncio.get_running_loop()
    deadline = loop.time() + INIT_TIMEOUT_SEC
    while True:
        try:
            await _init(s.replace(nats_connect_timeout_sec=5.0))
            return
        except Exception as exc:  # no meta leader yet: 503 / timeouts
            if loop.time() > deadline:
                raise UpFailed(f"the admin step did not succeed within {INIT_TIMEOUT_SEC:.0f} s: {exc}") from None
            log.get("cluster").info("admin step: cluster not ready yet; retrying", error=str(exc)[:200])
            await asyncio.sleep(0.5)


def write_context(s: Settings, nodes: list[Node], creds: dict[str, str]) -> Path:
    """A ``nats`` CLI context of the ``operator`` user (0600: it holds its password)."""
    path = (Path(s.data_dir) / "nats-context.json").resolve()
    body = {"description": "switchboard cluster up (operator user)", "url": ",".join(n.url for n in nodes),
            "user": "operator", "password": creds["operator"]}
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(body, f, indent=2)
    tmp.replace(path)
    return path


async def make_schema(url: str) -> None:
    """Open the store once, which creates the keyspace and tables: the roles
    would otherwise create them concurrently on different nodes, and tables
    created at once on two coordinators can end up with different ids."""
    from switchboard.store import open_store

    store = open_store(url)
    await store.open()
    await store.close()


async def start_ring(sup: Supervisor, ring: list[cassandra.NodeSpec]) -> list[Child]:
    children = cassandra.node_children(ring)
    for c in children:
        await sup.start(c)
    return children


async def ring_ready(sup: Supervisor, ring: list[cassandra.NodeSpec], children: list[Child], url: str) -> float:
    """Wait for every node's CQL port, the ring formed, then make the schema; the seconds waited."""
    t0 = asyncio.get_running_loop().time()
    await sup.wait_ready(children, cassandra.START_TIMEOUT)
    try:
        await cassandra.wait_formed([(n.host, n.port) for n in ring])
        await make_schema(url)
    except (cassandra.CassandraStartError, Unavailable) as exc:
        raise UpFailed(f"Cassandra: {exc}") from None
    return asyncio.get_running_loop().time() - t0


async def serve(args: argparse.Namespace, s: Settings, ring: list[cassandra.NodeSpec] | None = None) -> int:
    """Like ``up`` (sbctl/supervisor.py serve_up): 0 after SIGINT/SIGTERM, 1 a child keeps dying."""
    from switchboard.configload import environment

    stopper = Stopper()
    sup = Supervisor()
    p = _plan_of(args)
    creds = credentials(Path(s.data_dir))
    nats: list[Child] = []
    roles: list[Child] = []
    cass: list[Child] = []
    code = 0
    try:
        t0 = asyncio.get_running_loop().time()
        cass = await start_ring(sup, ring or [])  # first: a JVM takes 10-60 s to answer
        nodes, nats = nats_children(s, args.nats_nodes, args.nats_port, creds)
        for c in nats:
            await sup.start(c)
        await sup.wait_ready(nats)
        await admin_step(s.replace(nats_url=urls(nodes, p.admin_user, creds[p.admin_user])))
        if ring:
            await ring_ready(sup, ring, cass, s.store_url)
            log.get("cluster").info("cassandra ring formed", nodes=len(ring),
                                    start_sec=round(asyncio.get_running_loop().time() - t0, 1))
        plan = metrics_plan(role_plan(p), 0)
        peers = [m for g, m in plan if "edge" not in g]
        count: dict[str, int] = {}
        for i, (group, listen) in enumerate(plan):
            role = group[0]
            count[role] = count.get(role, 0) + 1
            user = p.users[role]
            cs = s.replace(nats_url=urls(nodes, user, creds[user], i), port=s.port + count[role] - 1)
            env = environment(cs, p.settings, base=os.environ)  # role_env's, and replicas
            argv = _role_argv(args, group, cs, metrics_listen=listen, metrics_peers=peers if role == "edge" else [])
            child = Child(name=f"{role}-{count[role]}", argv=argv, env=env)
            roles.append(child)
            await sup.start(child)
        await sup.wait_ready(roles, ready_timeout(s))
        stopper.started()
        print_summary(s, nodes, creds, sup, plan, args.edges, roles, ring or [])
        await sup.run_until(stopper.stop)
    except UpFailed as exc:
        print(f"switchboard cluster up: {log.redact(str(exc))}", file=sys.stderr, flush=True)
        code = exc.code
    except asyncio.CancelledError as exc:
        if not stopper.interrupted(exc):
            raise
    finally:
        edge = [c for c in roles if c.name.startswith("edge")]
        await sup.stop([edge, [c for c in roles if c not in edge], nats + cass])
        log.get("cluster").info("cluster stopped")
    return code


def print_summary(s: Settings, nodes: list[Node], creds: dict[str, str], sup: Supervisor,
                  plan: list[tuple[tuple[str, ...], str]], edges: int, roles: list[Child],
                  ring: list[cassandra.NodeSpec]) -> None:
    ws, http = ("wss", "https") if s.tls_cert else ("ws", "http")
    ctx = write_context(s, nodes, creds)
    lines = [
        f"NATS: {','.join(n.url for n in nodes)}  (cluster {CLUSTER_NAME}, streams and KV at R{s.replicas}; "
        f"users' passwords: {Path(s.data_dir).resolve() / 'cluster' / 'credentials.json'})",
        "NATS monitoring: " + ", ".join(f"{n.name} http://127.0.0.1:{n.http_port}" for n in nodes),
        f"nats CLI: nats --context {shlex.quote(str(ctx))} stream report   (the operator user)",
        *([f"Cassandra: {', '.join(f'{n.host}:{n.port}' for n in ring)}  (keyspace switchboard, RF "
           f"{min(3, len(ring))}, LOCAL_QUORUM; logs: {ring[0].workdir.parent}/cK/cassandra.log)"] if ring else []),
        f"token: switchboard token USER --data {s.data_dir}",
        "processes: " + ", ".join(f"{c.name} {c.pid}" for c in sup.children),
        "metrics: " + ", ".join(f"{c.name} http://{m}/metrics" for c, (_, m) in zip(roles, plan, strict=True)),
        f"{READY_LINE}: " + " ".join(f"{ws}://{s.host}:{s.port + i}/ws" for i in range(edges))
        + f"  (web app: {http}://{s.host}:{s.port}/{'; dev sign-in on' if s.dev_signin else ''})",
    ]
    print("\n".join(lines), flush=True)
    log.get("cluster").info("cluster up", processes={c.name: c.pid for c in sup.children})
