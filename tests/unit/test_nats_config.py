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

from switchboard.bus import streams
from switchboard.bus.embedded import nats_server_binary
from switchboard.config import Settings

NATS_DIR = Path(__file__).resolve().parents[2] / "nats"
USERS = ("edge", "sequencer", "archiver", "pusher", "presence", "service", "operator", "sys")
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


@pytest.mark.parametrize("user", ["edge", "operator", "sys"])
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
    # pusher/service.py builds its ConsumerConfig inline from WorkerConfig:
    # max_deliver=-1 (the worker dead-letters on its own last try),
    # max_ack_pending = 4 x concurrency.
    from pusher.config import WorkerConfig

    w = WorkerConfig()
    got = json.loads((NATS_DIR / "consumers" / "PUSH.sb-pusher.json").read_text())
    assert got["durable_name"] == w.durable
    assert got["ack_wait"] == int(w.ack_wait * 1e9)
    assert got["max_ack_pending"] == w.concurrency * 4
    assert got["max_deliver"] == -1
    assert got["filter_subject"] == Settings().subjects.push_all
