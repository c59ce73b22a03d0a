"""The committed NATS configuration (nats/) stays valid and in step with the code.

- every server config parses with the real nats-server (``-t``: check only,
  no socket opened), with the password variables of accounts.conf set;
- nats/streams/*.json is exactly what ``switchboard nats-config`` writes for
  the default Settings, so operators applying the JSON with the nats CLI get
  the streams the services would create;
- nats/consumers/*.json (``nats consumer add STREAM --config FILE``) parse,
  name an existing stream by their file name (STREAM.DURABLE.json), filter on
  that stream's subjects, and match the consumers the archiver and the pusher
  create. (tests/e2e/test_permissions.py also compares them with the
  consumers a running deployment really created.)
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from sbctl.embedded import nats_server_binary
from switchboard.bus import streams
from switchboard.config import Settings

NATS_DIR = Path(__file__).resolve().parents[2] / "nats"
USERS = ("edge", "sequencer", "archiver", "pusher", "presence", "service", "operator", "admin", "sys")
SERVER_CONFIGS = [NATS_DIR / "single.conf", *sorted((NATS_DIR / "cluster").glob("n*.conf"))]


def password_env(missing: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SB_")}
    env.update({f"SB_{u.upper()}_PASSWORD": f"test-{u}" for u in USERS if u != missing})
    return env


def check(conf: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([nats_server_binary(), "-t", "-c", str(conf)], env=env, capture_output=True, text=True,
                          timeout=30)


def test_there_are_a_single_and_three_cluster_configs() -> None:
    assert [p.name for p in SERVER_CONFIGS] == ["single.conf", "n1.conf", "n2.conf", "n3.conf"]


@pytest.mark.parametrize("conf", SERVER_CONFIGS, ids=lambda p: p.name)
def test_server_config_is_valid(conf: Path) -> None:
    r = check(conf, password_env())
    assert r.returncode == 0, r.stdout + r.stderr
    assert "is valid" in r.stdout + r.stderr


@pytest.mark.parametrize("user", ["edge", "operator", "admin", "sys"])
def test_a_missing_password_variable_is_refused(user: str) -> None:
    # No default password can sneak in: a server started without one of the
    # variables does not start at all.
    r = check(NATS_DIR / "single.conf", password_env(missing=user))
    assert r.returncode != 0
    assert f"SB_{user.upper()}_PASSWORD" in r.stdout + r.stderr


def test_stream_json_is_what_nats_config_writes(tmp_path: Path) -> None:
    written = {p.name: p.read_text() for p in streams.write_json(Settings(), tmp_path)}
    committed = {p.name: p.read_text() for p in (NATS_DIR / "streams").glob("*.json")}
    assert sorted(committed) == sorted(written)
    for name, text in written.items():
        assert committed[name] == text, f"nats/streams/{name} drifted: run `switchboard nats-config`"


def _consumers() -> list[Path]:
    return sorted((NATS_DIR / "consumers").glob("*.json"))


def test_consumer_files_exist() -> None:
    assert [p.name for p in _consumers()] == ["MESSAGES.archiver.json", "PUSH.sb-pusher.json"]


@pytest.mark.parametrize("path", _consumers(), ids=lambda p: p.name)
def test_consumer_names_an_existing_stream(path: Path) -> None:
    cfg = json.loads(path.read_text())
    stream, durable = path.name.removesuffix(".json").split(".", 1)
    stream_file = NATS_DIR / "streams" / f"{stream}.json"
    assert stream_file.exists(), f"{path.name}: no stream {stream}"
    assert cfg["durable_name"] == durable
    subjects = json.loads(stream_file.read_text())["subjects"]
    assert cfg["filter_subject"] in subjects
    assert cfg["ack_policy"] == "explicit"  # both services ack only after the work is done


def test_archiver_consumer_matches_the_code() -> None:
    from archiver.consumer import consumer_config

    want = {k: v for k, v in consumer_config(Settings()).as_dict().items() if v not in (0, None)}
    got = json.loads((NATS_DIR / "consumers" / "MESSAGES.archiver.json").read_text())
    assert got == want


def test_pusher_consumer_matches_the_code() -> None:
    # pusher/service.py push_consumer_config (what switchboard init creates):
    # max_deliver=-1 (the worker dead-letters on its own last try),
    # max_ack_pending = 4 x concurrency.
    from pusher.service import push_consumer_config

    want = {k: v for k, v in push_consumer_config(Settings()).as_dict().items()
            if v not in (0, None) and k != "name"}
    got = json.loads((NATS_DIR / "consumers" / "PUSH.sb-pusher.json").read_text())
    assert got == want


# ---------------------------------------------------------------- deploy/ (untested templates: at least they parse)

DEPLOY = NATS_DIR.parent / "deploy"
ROLES = ("edge", "sequencer", "archiver", "presence", "pusher")


def _yaml():
    # pyyaml is not a project dependency (yet): without it these checks skip.
    return pytest.importorskip("yaml", reason="pip install pyyaml to check deploy/*.yaml")


def _docs(path: Path) -> list[dict]:
    return [d for d in _yaml().safe_load_all(path.read_text()) if d]


@pytest.mark.parametrize("path", sorted(DEPLOY.glob("**/*.yaml")), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_deploy_yaml_parses(path: Path) -> None:
    assert _docs(path)


def _k8s(kind: str, name: str) -> dict:
    for path in (DEPLOY / "k8s").glob("*.yaml"):
        for d in _docs(path):
            if d.get("kind") == kind and d["metadata"]["name"] == name:
                return d
    raise AssertionError(f"no {kind} {name} in deploy/k8s")


def test_k8s_nats_config_is_valid_and_accounts_are_a_verbatim_copy(tmp_path: Path) -> None:
    data = _k8s("ConfigMap", "nats-config")["data"]
    assert data["accounts.conf"] == (NATS_DIR / "accounts.conf").read_text(), \
        "deploy/k8s/nats.yaml: accounts.conf drifted from nats/accounts.conf"
    for name, text in data.items():
        (tmp_path / name).write_text(text)
    r = check(tmp_path / "nats.conf", {**password_env(), "POD_NAME": "nats-0"})
    assert r.returncode == 0, r.stdout + r.stderr
    sts = _k8s("StatefulSet", "nats")
    assert sts["spec"]["replicas"] == 3


def test_k8s_roles_edge_balancer_and_readiness() -> None:
    for role in ROLES:
        dep = _k8s("Deployment", f"sb-{role}")
        c = dep["spec"]["template"]["spec"]["containers"][0]
        assert c["args"] == [role]
        env = {e["name"]: e for e in c["env"]}
        assert env["SWITCHBOARD_NATS__URL"]["value"].startswith(f"nats://{role}:")  # its own NATS user
        assert env["NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == role
    edge = _k8s("Deployment", "sb-edge")["spec"]["template"]["spec"]["containers"][0]
    assert edge["readinessProbe"]["httpGet"]["path"] == "/healthz"
    svc = _k8s("Service", "sb-edge")
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["spec"]["ports"][0]["targetPort"] == "ws"
    assert "SWITCHBOARD_STREAMS__REPLICAS" in _k8s("ConfigMap", "switchboard-config")["data"]
    init = _k8s("Job", "sb-init")["spec"]["template"]["spec"]["containers"][0]
    assert init["args"] == ["init"]
    env = {e["name"]: e for e in init["env"]}
    assert env["SWITCHBOARD_NATS__URL"]["value"].startswith("nats://admin:")
    assert env["NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "admin"


def test_compose_services() -> None:
    (compose,) = _docs(DEPLOY / "compose.yaml")
    services = compose["services"]
    roles = sorted(s["command"][0] for n, s in services.items()
                   if n not in ("sb-n1", "sb-n2", "sb-n3", "cassandra", "redis", "sb-init"))
    assert roles == ["archiver", "archiver", "edge", "edge", "presence", "pusher", "sequencer", "sequencer"]
    # streams, consumers and the lease bucket: `switchboard init` as the admin user (no role may)
    assert services["sb-init"]["command"] == ["init"]
    assert services["sb-init"]["environment"]["SWITCHBOARD_NATS__URL"].startswith("nats://admin:")
    for n in ("sb-n1", "sb-n2", "sb-n3"):  # the cluster configs route to these names
        conf = services[n]["command"][1].removeprefix("/etc/nats/")
        assert (NATS_DIR / conf).exists()
        assert n in (NATS_DIR / "cluster" / "n1.conf").read_text()
    for name, s in services.items():
        if "command" in s and s["command"][0] in ROLES:
            role = s["command"][0]
            assert s["environment"]["SWITCHBOARD_NATS__URL"].startswith(f"nats://{role}:"), name


# ---------------------------------------------------------------- JetStream's flush policy (sync_interval)

@pytest.mark.parametrize("conf", SERVER_CONFIGS, ids=lambda p: p.name)
def test_server_config_states_a_quoted_sync_interval(conf: Path) -> None:
    """Every shipped server config says its flush policy, quoted: nats-server
    reads a bare ``sync_interval: 2m`` as 2,000,000 seconds (checked against
    /varz), so an unquoted edit would silently mean "almost never"."""
    lines = [line.strip() for line in conf.read_text().splitlines() if line.strip().startswith("sync_interval")]
    assert lines == ['sync_interval: "2m"'], lines


@pytest.mark.parametrize("value", ["2m", "always", "100ms"])
def test_embedded_server_config_text(tmp_path: Path, value: str) -> None:
    """What `switchboard up` hands its nats-server for each [nats]
    sync_interval: the value quoted inside jetstream {}, and a file
    nats-server accepts (tests/e2e/test_sync_interval.py reads /varz)."""
    from sbctl.embedded import CONFIG_NAME, config_args, server_config

    assert f'jetstream {{\n  sync_interval: "{value}"\n}}\n' in server_config(value)
    args = config_args(tmp_path, value)
    assert args == ["-c", str(tmp_path / CONFIG_NAME)]
    r = check(tmp_path / CONFIG_NAME, password_env())
    assert r.returncode == 0, r.stdout + r.stderr
