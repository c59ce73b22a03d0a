"""``switchboard config show | check | reference`` (sbctl/configcmd.py),
through the real CLI entry point; the settings reference in
docs/operations.md and the example file deploy/switchboard.toml are checked
against the settings tree, so neither can drift from the code."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from sbctl.cli import main
from sbctl.configcmd import reference
from switchboard.config import Settings
from switchboard.configload import load

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "deploy" / "switchboard.toml"
OPERATIONS = REPO / "docs" / "operations.md"
BEGIN, END = "<!-- settings reference: begin -->", "<!-- settings reference: end -->"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SWITCHBOARD_* of the shell running the tests leaks in."""
    import os

    for var in list(os.environ):
        if var.startswith("SWITCHBOARD_"):
            monkeypatch.delenv(var)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_example_file_is_accepted(capsys) -> None:
    """deploy/switchboard.toml is the file docs point operators at: check
    must accept it, and it must set what it says (the push providers)."""
    code, out, err = run(capsys, "config", "check", str(EXAMPLE))
    assert (code, out, err) == (0, f"ok: {EXAMPLE}\n", "")
    s = load(config_file=str(EXAMPLE), env={}).settings
    assert s.push_providers == ("apns", "fcm", "webpush") and s.replicas == 3 and s.host == "0.0.0.0"


@pytest.mark.parametrize("text, words", [
    ("[edge]\nprot = 1\n", ["unknown key [edge] prot", "did you mean port"]),
    ("[edge]\nport = 'x'\n", ["[edge] port = 'x' is not an integer"]),
    ("[sequencer]\nlease_ttl = 0.5\n", ["lease_ttl must be >= 1 s", "[sequencer] lease_ttl"]),
    ('[pusher]\nprovider = "fcm"\n', ["no [pusher.fcm] section"]),
    ('[nats]\nsync_interval = "2"\n', ["sync_interval '2' must be \"always\" or a duration", "[nats] sync_interval"]),
])
def test_check_bad_file_exits_1_with_one_line(tmp_path: Path, capsys, text: str, words: list[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    code, out, err = run(capsys, "config", "check", str(path))
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("switchboard config check: ") and str(path) in err
    for word in words:
        assert word in err


def test_check_file_alone_unless_env_asked(tmp_path: Path, capsys, monkeypatch) -> None:
    """CI checks the file it ships, not its own shell: a bad variable there
    does not fail `check FILE`, but does with --env (and without FILE, which
    checks what a role would load here)."""
    path = tmp_path / "ok.toml"
    path.write_text("[edge]\nport = 9000\n")
    monkeypatch.setenv("SWITCHBOARD_EDGE__PORT", "not-a-port")
    assert run(capsys, "config", "check", str(path))[0] == 0
    code, _, err = run(capsys, "config", "check", str(path), "--env")
    assert code == 1 and "SWITCHBOARD_EDGE__PORT" in err
    monkeypatch.setenv("SWITCHBOARD_CONFIG", str(path))
    assert run(capsys, "config", "check")[0] == 1


def test_show_says_where_each_value_comes_from_and_masks_secrets(tmp_path: Path, capsys, monkeypatch) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[edge]\nport = 9000\nrate_per_sec = 5.0\n[nats]\nurl = "nats://app:filepw@n1:4222"\n')
    monkeypatch.setenv("SWITCHBOARD_JWT_SECRET", "hunter2-jwt-secret")
    monkeypatch.setenv("SWITCHBOARD_EDGE__RATE_PER_SEC", "7.5")
    code, out, _ = run(capsys, "config", "show", "--config", str(path), "--port", "9100", "--data", "/srv/sb")
    assert code == 0
    lines, section = {}, ""
    for line in out.splitlines():
        if line.startswith("["):
            section = line.strip("[]") + "."
        elif " = " in line and not line.startswith("#"):
            lines[section + line.split(" = ")[0]] = line
    assert lines["edge.port"].endswith("# flag") and "9100" in lines["edge.port"]
    assert lines["edge.rate_per_sec"].endswith("# env SWITCHBOARD_EDGE__RATE_PER_SEC")
    assert lines["nats.url"].endswith(f"# file {path}") and "app:***@n1" in lines["nats.url"]
    assert "filepw" not in out
    assert lines["edge.jwt_secret"].endswith("# env SWITCHBOARD_JWT_SECRET") and "hunter2" not in out
    assert lines["edge.host"].endswith("# default")
    assert lines["data_dir"].endswith("# flag")
    assert lines["store.url"].startswith('url = "sqlite:////srv/sb/switchboard.db"')
    assert lines["store.url"].endswith("# data_dir")


def test_show_output_is_a_settings_file_giving_the_same_settings(tmp_path: Path, capsys) -> None:
    """What show prints can be saved and used (secrets aside): it is the
    effective configuration, not a description of it."""
    code, out, _ = run(capsys, "config", "show", "--config", str(EXAMPLE))
    assert code == 0
    saved = tmp_path / "shown.toml"
    saved.write_text(out)
    assert load(config_file=str(saved), env={}).settings == load(config_file=str(EXAMPLE), env={}).settings


def test_show_json(capsys) -> None:
    code, out, _ = run(capsys, "config", "show", "--json", "--port", "9001")
    data = json.loads(out)
    assert code == 0 and data["edge.port"] == {"value": 9001, "from": "flag"}
    assert data["store.url"]["from"] == "data_dir" and "pusher.apns.key_id" not in data


def test_show_bad_file_exits_1(tmp_path: Path, capsys) -> None:
    code, out, err = run(capsys, "config", "show", "--config", str(tmp_path / "missing.toml"))
    assert (code, out) == (1, "") and "missing.toml: no such file" in err


def test_operations_doc_holds_the_current_reference() -> None:
    """docs/operations.md's settings tables are `switchboard config
    reference`: a field added, renamed or re-documented in
    switchboard/config.py fails here until the document is regenerated:
    python -m sbctl config reference, pasted between the markers."""
    text = OPERATIONS.read_text()
    assert BEGIN in text and END in text
    shown = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert shown == reference().strip()


def test_reference_lists_every_key_once() -> None:
    table_rows = [line for line in reference().splitlines() if line.startswith("| `")]
    from switchboard.configload import leaves

    assert len(table_rows) == len(leaves())
    assert "| `port` | `8080` | `SWITCHBOARD_EDGE__PORT` (or `SWITCHBOARD_PORT`) |" in reference()


def test_defaults_have_their_declared_types() -> None:
    """A float setting with an int default would be printed and compared as
    an int (show, environment): every default has its annotation's type."""
    import dataclasses
    import typing

    from switchboard.config import TABLES

    for cls in (Settings, *TABLES.values()):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.default is dataclasses.MISSING or f.default is None or f.name in TABLES:
                continue
            kind = hints[f.name]
            kind = typing.get_origin(kind) or kind
            assert type(f.default) is kind or isinstance(f.default, kind), (cls.__name__, f.name)


def test_example_file_is_toml_with_known_sections_only() -> None:
    data = tomllib.loads(EXAMPLE.read_text())
    assert set(data) <= {"data_dir", "nats", "streams", "store", "edge", "sequencer", "archiver", "presence",
                         "pusher", "trace", "metrics", "log"}
