"""Settings: precedence of the sources and validation (no sockets, no env leaks:
every load passes ``env=`` explicitly)."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchboard.config import Settings
from switchboard.errors import ConfigError


def write_toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "switchboard.toml"
    path.write_text(text)
    return str(path)


def test_defaults_are_valid() -> None:
    s = Settings.load(env={})
    assert s == Settings()
    assert s.port == 8080 and s.store_url.startswith("sqlite://") and s.presence_url == "memory://"


# Which source wins: defaults < TOML < env < overrides (command-line flags).
@pytest.mark.parametrize(
    "toml, env, overrides, expected",
    [
        (None, {}, {}, 8080),
        ("port = 1000\n", {}, {}, 1000),
        ("port = 1000\n", {"SWITCHBOARD_PORT": "2000"}, {}, 2000),
        ("port = 1000\n", {"SWITCHBOARD_PORT": "2000"}, {"port": 3000}, 3000),
        (None, {"SWITCHBOARD_PORT": "2000"}, {"port": 3000}, 3000),
        # An override of None is a flag that was not given: it does not win.
        ("port = 1000\n", {"SWITCHBOARD_PORT": "2000"}, {"port": None}, 2000),
    ],
)
def test_precedence(tmp_path: Path, toml, env, overrides, expected) -> None:
    config_file = write_toml(tmp_path, toml) if toml else None
    s = Settings.load(config_file=config_file, env=env, overrides=overrides)
    assert s.port == expected


def test_config_file_from_env_variable(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'store_url = "cassandra://127.0.0.1/sb"\nrate_per_sec = 7.5\n')
    s = Settings.load(env={"SWITCHBOARD_CONFIG": path})
    assert s.store_url == "cassandra://127.0.0.1/sb"
    assert s.rate_per_sec == 7.5


def test_explicit_config_file_beats_env_variable(tmp_path: Path) -> None:
    other = tmp_path / "other.toml"
    other.write_text("port = 1111\n")
    chosen = write_toml(tmp_path, "port = 2222\n")
    assert Settings.load(config_file=chosen, env={"SWITCHBOARD_CONFIG": str(other)}).port == 2222


@pytest.mark.parametrize(
    "name, raw, expected",
    [
        ("port", "9000", 9000),
        ("rate_per_sec", "12.5", 12.5),
        ("log_json", "true", True),
        ("log_json", "YES", True),
        ("log_json", "0", False),
        ("log_json", "off", False),
        ("subject_prefix", "tenant-1", "tenant-1"),
        ("presence_url", "redis://127.0.0.1:1/0", "redis://127.0.0.1:1/0"),
    ],
)
def test_env_values_are_coerced(name: str, raw: str, expected) -> None:
    s = Settings.load(env={f"SWITCHBOARD_{name.upper()}": raw})
    assert getattr(s, name) == expected
    assert type(getattr(s, name)) is type(expected)


def test_strings_in_toml_are_coerced_like_env(tmp_path: Path) -> None:
    s = Settings.load(config_file=write_toml(tmp_path, 'port = "9001"\nlog_json = "yes"\n'), env={})
    assert s.port == 9001 and s.log_json is True


@pytest.mark.parametrize(
    "env",
    [
        {"SWITCHBOARD_PORT": "abc"},
        {"SWITCHBOARD_PORT": "80.5"},
        {"SWITCHBOARD_RATE_PER_SEC": "fast"},
        {"SWITCHBOARD_LOG_JSON": "maybe"},
        {"SWITCHBOARD_MAX_FRAME_BYTES": ""},
    ],
)
def test_env_values_that_are_not_numbers_are_rejected(env: dict[str, str]) -> None:
    (key, raw), = env.items()
    with pytest.raises(ConfigError) as info:
        Settings.load(env=env)
    assert key in info.value.message  # the message names the variable at fault


def test_unknown_setting_in_toml_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="prot"):
        Settings.load(config_file=write_toml(tmp_path, "prot = 1\n"), env={})


def test_unknown_override_rejected() -> None:
    with pytest.raises(ConfigError, match="no_such_setting"):
        Settings.load(env={}, overrides={"no_such_setting": 1})


def test_unknown_env_variable_is_ignored() -> None:
    # Only SWITCHBOARD_<FIELD> is read; other variables of the environment
    # (including typos) must not break startup.
    assert Settings.load(env={"SWITCHBOARD_NOPE": "1", "PATH": "/bin"}) == Settings()


@pytest.mark.parametrize(
    "changes",
    [
        {"store_url": "postgres://db/sb"},
        {"store_url": "sqlite:switchboard.db"},  # no "://"
        {"store_url": ""},
        {"presence_url": "memcached://127.0.0.1"},
        {"presence_url": "redis"},
    ],
)
def test_bad_scheme_rejected(changes) -> None:
    with pytest.raises(ConfigError, match="scheme"):
        Settings(**changes)


@pytest.mark.parametrize(
    "changes",
    [
        {"max_frame_bytes": 0},
        {"max_body_bytes": 0},
        {"send_queue_frames": -1},
        {"replicas": 0},
        {"archive_batch": 0},
        {"rate_per_sec": 0.0},
        {"send_timeout": -1.0},
        {"hello_timeout": 0},
        {"port": 0},
        {"port": 65536},
        {"max_body_bytes": 64 * 1024, "max_frame_bytes": 64 * 1024},  # body must fit in a frame
    ],
)
def test_bad_numbers_rejected(changes) -> None:
    with pytest.raises(ConfigError):
        Settings(**changes)


def test_bad_number_from_env_rejected_by_validation() -> None:
    with pytest.raises(ConfigError, match="port"):
        Settings.load(env={"SWITCHBOARD_PORT": "0"})


@pytest.mark.parametrize("prefix", ["a.b", "", "*", ">", "with space", "x" * 33])
def test_bad_subject_prefix_rejected(prefix: str) -> None:
    # The prefix becomes the first token of every subject: "a.b" or "*" would
    # change what every subscription matches. Subjects raises ValueError today
    # (not ConfigError), so both are accepted here.
    with pytest.raises((ConfigError, ValueError)):
        Settings(subject_prefix=prefix)


def test_replace_revalidates() -> None:
    with pytest.raises(ConfigError):
        Settings().replace(store_url="mysql://x")
    assert Settings().replace(port=9999).port == 9999
