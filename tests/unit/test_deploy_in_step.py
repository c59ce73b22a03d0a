"""deploy/ runs the shape `switchboard cluster up` runs.

sbctl/cluster.py's launch_plan() is what the launcher starts and hands each
process (it runs from it): the roles and how many of each, the NATS user of
each role and of the admin step, the users whose passwords the nats-servers
get, the streams' replicas (R3) and the SWITCHBOARD_<SECTION>__<KEY> variables
each role is given. deploy/compose.yaml and deploy/k8s/*.yaml are never run
here (no container runtime, no Kubernetes): without this test a role added to
the launcher, a user renamed, a replicas change or a renamed setting would
leave them behind, and only a real deployment would find out. Every check is
one row per deploy file (and per role), compared with the plan, never with a
copy of it written here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from sbctl.cluster import ACCOUNTS, Node, launch_plan, node_config
from switchboard.config import Settings
from switchboard.configload import ENV_PREFIX, leaves

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
PLAN = launch_plan()  # `switchboard cluster up` with no flags
IMAGE = "switchboard:latest"


@dataclass
class Procs:
    """One kind of Switchboard process as a deploy file runs it."""

    count: int = 0
    env: list[dict[str, str]] = field(default_factory=list)  # each process's variables (secrets: "<secret KEY>")
    users: set[str] = field(default_factory=set)  # the NATS users of its URLs
    passwords: set[str] = field(default_factory=set)  # whose password those URLs carry


@dataclass
class Shape:
    procs: dict[str, Procs]  # role (and "init", the admin step) -> its processes
    nats_nodes: int
    nats_passwords: list[set[str]]  # per node: the users whose SB_<USER>_PASSWORD it gets
    nats_confs: list[tuple[str, str]]  # per node config: (its text, the accounts file it includes)
    env_names: set[str]  # every SWITCHBOARD_* variable the file sets


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _add_urls(p: Procs, url: str, password_of) -> None:
    for one in filter(None, url.split(",")):
        parts = urlsplit(one)
        p.users.add(parts.username or "")
        p.passwords.add(password_of(parts.password or ""))


def compose_shape() -> Shape:
    (compose,) = _docs(DEPLOY / "compose.yaml")
    procs: dict[str, Procs] = {}
    nodes, passwords, confs, names = 0, [], [], set()
    for svc in compose["services"].values():
        env = {k: str(v) for k, v in (svc.get("environment") or {}).items()}
        names |= {k for k in env if k.startswith(ENV_PREFIX)}
        if svc.get("image", "").startswith("nats:"):
            nodes += 1
            passwords.append({m.group(1).lower() for k in env if (m := re.fullmatch(r"SB_(\w+)_PASSWORD", k))
                              and env[k].startswith(f"${{{k}")})
            assert "../nats:/etc/nats:ro" in svc["volumes"], "the nodes read nats/ as /etc/nats"
            conf = REPO / "nats" / Path(svc["command"][svc["command"].index("-c") + 1]).relative_to("/etc/nats")
            text = conf.read_text()
            confs.append((text, (conf.parent / _facts(text)["include"]).read_text()))
        elif svc.get("image") == IMAGE:
            p = procs.setdefault(svc["command"][0], Procs())
            p.count += 1
            p.env.append(env)
            _add_urls(p, env.get("SWITCHBOARD_NATS__URL", ""),
                      lambda pw: m.group(1).lower() if (m := re.fullmatch(r"\$\{SB_(\w+)_PASSWORD\}", pw)) else pw)
    return Shape(procs, nodes, passwords, confs, names)


def _k8s_env(container: dict, configmaps: dict[str, dict[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for src in container.get("envFrom", []):
        env.update(configmaps[src["configMapRef"]["name"]])
    for e in container.get("env", []):
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        env[e["name"]] = f"<secret {ref['key']}>" if ref else str(e.get("value", "<from the pod>"))
    return env


def k8s_shape() -> Shape:
    docs = [d for path in sorted((DEPLOY / "k8s").glob("*.yaml")) for d in _docs(path)]
    configmaps = {d["metadata"]["name"]: {k: str(v) for k, v in d["data"].items()}
                  for d in docs if d["kind"] == "ConfigMap"}
    procs: dict[str, Procs] = {}
    nodes, passwords, confs, names = 0, [], [], set()
    for d in docs:
        if d["kind"] not in ("Deployment", "StatefulSet", "Job"):
            continue
        (c,) = d["spec"]["template"]["spec"]["containers"]
        env = _k8s_env(c, configmaps)
        names |= {k for k in env if k.startswith(ENV_PREFIX)}
        if c["image"].startswith("nats:"):
            nodes += d["spec"]["replicas"]
            passwords += [{m.group(1).lower() for k, v in env.items()
                           if (m := re.fullmatch(r"SB_(\w+)_PASSWORD", k)) and v == f"<secret {m.group(1).lower()}>"}]
            data = configmaps["nats-config"]  # mounted at /etc/nats
            text = data[Path(c["args"][c["args"].index("-c") + 1]).name]
            confs.append((text, data[Path(_facts(text)["include"]).name]))
        elif c["image"] == IMAGE:
            p = procs.setdefault(c["args"][0], Procs())
            p.count += d["spec"].get("replicas", 1)
            p.env.append(env)
            # $(NATS_PASSWORD): the variable of that name, from the Secret's key
            _add_urls(p, env.get("SWITCHBOARD_NATS__URL", ""),
                      lambda pw, env=env: env.get(pw.removeprefix("$(").removesuffix(")"), pw)
                      .removeprefix("<secret ").removesuffix(">"))
    return Shape(procs, nodes, passwords, confs, names)


DEPLOYS = {"compose": compose_shape, "k8s": k8s_shape}
ROWS = [(d, role) for d in DEPLOYS for role in PLAN.roles]


@pytest.fixture(scope="module", params=list(DEPLOYS))
def shape(request) -> Shape:
    return DEPLOYS[request.param]()


def test_the_same_roles_and_counts(shape: Shape) -> None:
    assert {r: p.count for r, p in shape.procs.items() if r != "init"} == PLAN.roles


@pytest.mark.parametrize("deploy,role", ROWS, ids=[f"{d}-{r}" for d, r in ROWS])
def test_each_role_logs_in_as_its_own_user(deploy: str, role: str) -> None:
    """The role's NATS user (nats/accounts.conf gives each only its own
    subjects) with that user's password, in every URL of every process."""
    p = DEPLOYS[deploy]().procs[role]
    assert p.users == {PLAN.users[role]}
    assert p.passwords == {PLAN.users[role]}


@pytest.mark.parametrize("deploy,role", ROWS, ids=[f"{d}-{r}" for d, r in ROWS])
def test_each_role_gets_the_settings_cluster_up_gives(deploy: str, role: str) -> None:
    for env in DEPLOYS[deploy]().procs[role].env:
        assert set(PLAN.env) <= set(env), f"missing {sorted(set(PLAN.env) - set(env))}"
        assert env["SWITCHBOARD_STREAMS__REPLICAS"] == str(PLAN.replicas)


def test_the_admin_step(shape: Shape) -> None:
    """Streams, consumers and KV are made once, as the admin user, at R3: a
    role may not create them, and streams made at R1 stay R1."""
    init = shape.procs["init"]
    assert init.count == 1
    assert init.users == init.passwords == {PLAN.admin_user}
    assert [e["SWITCHBOARD_STREAMS__REPLICAS"] for e in init.env] == [str(PLAN.replicas)]


def _dockerfile_env() -> set[str]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    return {n for line in re.findall(r"^ENV (.*)$", text, re.M)
            for n in re.findall(r"(\w+)=", line) if n.startswith(ENV_PREFIX)}


@pytest.mark.parametrize("deploy", [*DEPLOYS, "Dockerfile"])
def test_settings_are_spelled_as_cluster_up_spells_them(deploy: str) -> None:
    """Only SWITCHBOARD_<SECTION>__<KEY> names of real settings: a flat alias
    (SWITCHBOARD_REPLICAS) is read only when the sectioned name is absent, so
    a file mixing both spellings can be overridden by a name it does not show."""
    names = _dockerfile_env() if deploy == "Dockerfile" else DEPLOYS[deploy]().env_names
    assert names
    known = {leaf.env for leaf in leaves()}
    assert names <= known, f"not a setting's name: {sorted(names - known)}"


def _facts(text: str) -> dict[str, object]:
    """What a nats-server config says about the cluster (comments dropped)."""
    text = re.sub(r"#.*", "", text)

    def key(name: str) -> str | None:
        m = re.search(rf"^\s*{name}\s*:\s*(\S+)\s*$", text, re.M)
        return m.group(1) if m else None

    cluster = re.search(r"^\s*cluster\s*\{(.*?)\n\s*\}", text, re.M | re.S)
    block = cluster.group(1) if cluster else ""
    name = re.search(r"name\s*:\s*(\S+)", block)
    include = re.search(r"^\s*include\s+(\S+)", text, re.M)
    return {"cluster": name.group(1) if name else None, "routes": len(re.findall(r"nats-route://", block)),
            "jetstream": bool(re.search(r"^\s*jetstream\s*\{", text, re.M)),
            "max_payload": key("max_payload"), "sync_interval": key("sync_interval"),
            "include": include.group(1) if include else None}


def launcher_facts() -> dict[str, object]:
    """The same facts of the config `cluster up` writes for a node."""
    nodes = [Node(f"sb-n{k + 1}", 4222 + k, 6222 + k, 8222 + k) for k in range(PLAN.nats_nodes)]
    facts = _facts(node_config(nodes[0], nodes, Path("/store"), Settings().sync_interval))
    assert facts["routes"] == PLAN.nats_nodes and facts["include"] == "./accounts.conf"
    return facts


def test_a_nats_cluster_like_the_launchers(shape: Shape) -> None:
    assert shape.nats_nodes == PLAN.nats_nodes
    assert shape.nats_passwords == [set(PLAN.credentials)] * len(shape.nats_passwords)
    want = {k: v for k, v in launcher_facts().items() if k != "include"}
    assert shape.nats_confs
    for text, accounts in shape.nats_confs:
        assert {k: v for k, v in _facts(text).items() if k != "include"} == want
        assert accounts == ACCOUNTS.read_text(), "not the accounts of nats/accounts.conf"
