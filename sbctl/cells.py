"""``switchboard cluster up --cells N``: N NATS clusters joined by gateways.

    switchboard cluster up --cells 2 [--nats 3] [--edges 2] [--sequencers 2] [--archivers 2] [--data DIR]

A *cell* is one NATS cluster (``--nats`` nodes, routes, JetStream) with its
own edges; the cells are joined by gateways into one supercluster on
loopback (docs/architecture.md, "Cells"). What runs where:

- every cell: ``--nats`` nats-servers named ``sb-cK-nJ`` in the cluster
  ``switchboard-cK`` (its gateway name too), each with a gateway to every
  cell, and ``--edges`` edges logged in to *that cell's* nodes only (a user's
  client connects to an edge of the user's home cell);
- cell 1 (the *storage cell*) also: the admin step, which connects to cell
  1 only, so JetStream places the streams and the lease bucket there (R =
  min(3, ``--nats``)), and the sequencers, archivers, presence tracker and
  pusher, next to the streams they write and read.

NATS allows one JetStream domain per supercluster, so the meta group spans
every cell; the streams' own data path stays in cell 1. The plan is
sbctl/cluster.py's :func:`launch_plan` per cell (cell 1: every role; the
others: edges only), so roles, users and settings are the same as a one-cell
``cluster up``. Files under DIR as for ``cluster up``, the nodes' configs and
stores named ``cluster/cK-nJ``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from sbctl.cluster import (
    ACCOUNTS,
    MAX_PAYLOAD,
    READY_LINE,
    Node,
    Plan,
    admin_step,
    credentials,
    launch_plan,
    role_plan,
    urls,
    write_context,
)
from sbctl.embedded import free_port, nats_server_binary, reserve
from sbctl.starting import Stopper
from sbctl.supervisor import Child, Supervisor, UpFailed, _role_argv, metrics_plan, ready_timeout
from switchboard import log
from switchboard.config import Settings

STORAGE_CELL = 1  # the cell whose nodes hold the streams and run the roles behind the edges


def cell_name(k: int) -> str:
    """Cluster and gateway name of cell ``k`` (1-based)."""
    return f"switchboard-c{k}"


@dataclass(frozen=True)
class CellNode:
    cell: int
    node: Node
    gateway_port: int


def cells_plan(cells: int, nats: int = 3, edges: int = 2, sequencers: int = 2, archivers: int = 2) -> list[Plan]:
    """One :class:`Plan` per cell: the storage cell runs every role, the
    others their edges only."""
    first = launch_plan(nats, edges, sequencers, archivers)
    rest = dataclasses.replace(first, roles={"edge": edges})
    return [first] + [rest] * (cells - 1)


def node_config(n: CellNode, cells: list[list[CellNode]], store: Path, sync_interval: str) -> str:
    """A node's config: its cell's routes (also with one node: JetStream in a
    supercluster needs a cluster), a gateway to every cell, JetStream."""
    mine = cells[n.cell - 1]
    routes = "\n".join(f"    nats-route://127.0.0.1:{m.node.route_port}" for m in mine)
    gateways = "\n".join(
        f"    {{ name: {cell_name(k + 1)}, urls: [{', '.join(f'nats://127.0.0.1:{m.gateway_port}' for m in c)}] }}"
        for k, c in enumerate(cells))
    return (f"# Written by `switchboard cluster up --cells` at each start; edits are overwritten.\n"
            f"server_name: {n.node.name}\nlisten: 127.0.0.1:{n.node.port}\nhttp: 127.0.0.1:{n.node.http_port}\n"
            f"max_payload: {MAX_PAYLOAD}\n"
            f'jetstream {{\n  store_dir: "{store}"\n  sync_interval: "{sync_interval}"\n}}\n'
            f"cluster {{\n  name: {cell_name(n.cell)}\n  listen: 127.0.0.1:{n.node.route_port}\n"
            f"  routes: [\n{routes}\n  ]\n}}\n"
            f"gateway {{\n  name: {cell_name(n.cell)}\n  listen: 127.0.0.1:{n.gateway_port}\n"
            f"  gateways: [\n{gateways}\n  ]\n}}\n"
            f"include ./accounts.conf\n")


def nats_children(s: Settings, cells: int, per_cell: int, base_port: int,
                  creds: dict[str, str]) -> tuple[list[list[CellNode]], list[Child]]:
    """The nodes of every cell and their nats-server children. ``base_port``:
    client port of cell 1 node 1, then consecutive over cells and nodes."""
    home = Path(s.data_dir).resolve() / "cluster"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ACCOUNTS, home / "accounts.conf")
    if base_port:
        reserve(*range(base_port, base_port + cells * per_cell))  # no route or gateway port among them
    layout: list[list[CellNode]] = []
    for k in range(1, cells + 1):
        layout.append([CellNode(k, Node(f"sb-c{k}-n{j}",
                                        base_port + (k - 1) * per_cell + j - 1 if base_port else free_port(),
                                        free_port(), free_port()), free_port())
                       for j in range(1, per_cell + 1)])
    env = {**os.environ, **{f"SB_{u.upper()}_PASSWORD": pw for u, pw in creds.items()}}
    children = []
    for cell in layout:
        for n in cell:
            store = home / n.node.name.removeprefix("sb-")
            store.mkdir(exist_ok=True)
            conf = home / f"{store.name}.conf"
            conf.write_text(node_config(n, layout, store, s.sync_interval))
            argv = [nats_server_binary(), "-c", str(conf), "-l", str(store / "nats-server.log")]
            children.append(Child(name=n.node.name, argv=argv, env=env, tcp_ready=("127.0.0.1", n.node.port)))
    return layout, children


async def serve(args: argparse.Namespace, s: Settings) -> int:
    """As sbctl/cluster.py ``serve``, for ``args.cells`` cells."""
    from switchboard.configload import environment

    stopper = Stopper()
    sup = Supervisor()
    plans = cells_plan(args.cells, args.nats_nodes, args.edges, args.sequencers, args.archivers)
    creds = credentials(Path(s.data_dir))
    nats: list[Child] = []
    roles: list[Child] = []
    code = 0
    try:
        layout, nats = nats_children(s, args.cells, args.nats_nodes, args.nats_port, creds)
        for c in nats:
            await sup.start(c)
        await sup.wait_ready(nats)
        storage = [n.node for n in layout[STORAGE_CELL - 1]]
        admin = plans[0].admin_user
        await admin_step(s.replace(nats_url=urls(storage, admin, creds[admin])))  # streams placed in cell 1
        groups = [(k, g) for k, p in enumerate(plans, 1) for g in role_plan(p)]
        plan = metrics_plan([g for _, g in groups], 0)
        peers = [m for g, m in plan if "edge" not in g]
        count: dict[str, int] = {}  # over every cell: edge K listens on --port + K - 1
        in_cell: dict[tuple[int, str], int] = {}
        for i, ((k, group), (_, listen)) in enumerate(zip(groups, plan, strict=True)):
            role = group[0]
            count[role] = count.get(role, 0) + 1
            in_cell[k, role] = in_cell.get((k, role), 0) + 1
            user = plans[k - 1].users[role]
            nodes = [n.node for n in layout[k - 1]]
            cs = s.replace(nats_url=urls(nodes, user, creds[user], i), port=s.port + count[role] - 1)
            env = environment(cs, plans[k - 1].settings, base=os.environ)
            argv = _role_argv(args, group, cs, metrics_listen=listen, metrics_peers=peers if role == "edge" else [])
            child = Child(name=f"c{k}-{role}-{in_cell[k, role]}", argv=argv, env=env)
            roles.append(child)
            await sup.start(child)
        await sup.wait_ready(roles, ready_timeout(s))
        stopper.started()
        print_summary(s, layout, creds, sup, args.edges)
        await sup.run_until(stopper.stop)
    except UpFailed as exc:
        print(f"switchboard cluster up: {log.redact(str(exc))}", file=sys.stderr, flush=True)
        code = exc.code
    except asyncio.CancelledError as exc:
        if not stopper.interrupted(exc):
            raise
    finally:
        edges = [c for c in roles if "-edge-" in c.name]
        await sup.stop([edges, [c for c in roles if c not in edges], nats])
        log.get("cluster").info("cells stopped")
    return code


def print_summary(s: Settings, layout: list[list[CellNode]], creds: dict[str, str], sup: Supervisor,
                  edges: int) -> None:
    ws = "wss" if s.tls_cert else "ws"
    every = [n.node for cell in layout for n in cell]
    ctx = write_context(s, every, creds)
    lines = []
    for k, cell in enumerate(layout, 1):
        first = s.port + (k - 1) * edges
        what = ", storage cell: streams, sequencers, archivers" if k == STORAGE_CELL else ""
        lines.append(f"cell {k} ({cell_name(k)}{what}): "
                     f"NATS {','.join(n.node.url for n in cell)}  "
                     f"monitoring {', '.join(f'http://127.0.0.1:{n.node.http_port}' for n in cell)}  "
                     f"gateway {', '.join(f'127.0.0.1:{n.gateway_port}' for n in cell)}  "
                     f"edges {' '.join(f'{ws}://{s.host}:{first + i}/ws' for i in range(edges))}")
    lines += [
        f"users' passwords: {Path(s.data_dir).resolve() / 'cluster' / 'credentials.json'}; "
        f"nats CLI: nats --context {ctx} server list   (the operator user)",
        "processes: " + ", ".join(f"{c.name} {c.pid}" for c in sup.children),
        f"{READY_LINE}: {len(layout)} cells, streams at R{s.replicas} in {cell_name(STORAGE_CELL)}",
    ]
    print("\n".join(lines), flush=True)
    log.get("cluster").info("cells up", processes={c.name: c.pid for c in sup.children})
