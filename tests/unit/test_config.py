"""Settings: the tree's sources, their precedence and validation (no
sockets, no env leaks: every load passes ``env=`` explicitly)."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchboard.config import ApnsSettings, EdgeSettings, PusherSettings, Settings, WebPushSettings
from switchboard.configload import environment, leaves, load
from switchboard.errors import ConfigError


def write_toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "switchboard.toml"
    path.write_text(text)
    return str(path)


def test_defaults_are_valid() -> None:
    s = Settings.load(env={})
    assert s == Settings()
    assert s.port == 8080 and s.store_url.startswith("sqlite://") and s.presence_url == "memory://"


# Which source wins: defaults < TOML < env < overrides (command-line flags),
# and within the environment the sectioned variable over the flat alias.
@pytest.mark.parametrize(
    "toml, env, overrides, expected, origin",
    [
        (None, {}, {}, 8080, "default"),
        ("[edge]\nport = 1000\n", {}, {}, 1000, "file"),
        ("[edge]\nport = 1000\n", {"SWITCHBOARD_EDGE__PORT": "2000"}, {}, 2000, "env SWITCHBOARD_EDGE__PORT"),
        ("[edge]\nport = 1000\n", {"SWITCHBOARD_PORT": "2000"}, {}, 2000, "env SWITCHBOARD_PORT"),
        ("[edge]\nport = 1000\n", {"SWITCHBOARD_EDGE__PORT": "2000"}, {"port": 3000}, 3000, "flag"),
        (None, {"SWITCHBOARD_PORT": "2000"}, {"edge.port": 3000}, 3000, "flag"),  # a flag by its dotted key
        # An override of None is a flag that was not given: it does not win.
        ("[edge]\nport = 1000\n", {"SWITCHBOARD_PORT": "2000"}, {"port": None}, 2000, "env SWITCHBOARD_PORT"),
        # Both spellings set: the sectioned one wins (what `up` hands its children).
        (None, {"SWITCHBOARD_PORT": "2000", "SWITCHBOARD_EDGE__PORT": "2500"}, {}, 2500,
         "env SWITCHBOARD_EDGE__PORT"),
    ],
)
def test_precedence(tmp_path: Path, toml, env, overrides, expected, origin) -> None:
    config_file = write_toml(tmp_path, toml) if toml else None
    got = load(config_file=config_file, env=env, overrides=overrides)
    assert got.settings.port == expected
    assert got.origins["edge.port"].startswith(origin)


def test_config_file_from_env_variable(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[store]\nurl = "cassandra://127.0.0.1/sb"\n[edge]\nrate_per_sec = 7.5\n')
    s = Settings.load(env={"SWITCHBOARD_CONFIG": path})
    assert s.store_url == "cassandra://127.0.0.1/sb"
    assert s.rate_per_sec == 7.5


def test_explicit_config_file_beats_env_variable(tmp_path: Path) -> None:
    other = tmp_path / "other.toml"
    other.write_text("[edge]\nport = 1111\n")
    chosen = write_toml(tmp_path, "[edge]\nport = 2222\n")
    assert Settings.load(config_file=chosen, env={"SWITCHBOARD_CONFIG": str(other)}).port == 2222


def test_every_section_round_trips_through_file_and_env(tmp_path: Path) -> None:
    """One key of each section, by file and by its sectioned variable: the
    key names in the file are the section's (``[archiver] batch``), not the
    field's (``archive_batch``)."""
    text = ('data_dir = "/srv/sb"\n[nats]\nurl = "nats://n1:4222"\n[streams]\nreplicas = 3\n'
            '[sequencer]\npartitions = 16\n[archiver]\nbatch = 50\n[presence]\nheartbeat_sec = 4.0\n'
            '[trace]\nsample = 0.5\n[metrics]\nport = 9100\n[log]\njson = true\n')
    s = Settings.load(config_file=write_toml(tmp_path, text), env={})
    assert (s.data_dir, s.nats_url, s.replicas, s.partitions, s.archive_batch, s.presence_heartbeat_sec,
            s.trace_sample, s.metrics_port, s.log_json) == ("/srv/sb", "nats://n1:4222", 3, 16, 50, 4.0, 0.5, 9100,
                                                             True)
    env = {"SWITCHBOARD_ARCHIVER__BATCH": "60", "SWITCHBOARD_PRESENCE__HEARTBEAT_SEC": "5",
           "SWITCHBOARD_LOG__JSON": "yes", "SWITCHBOARD_DATA_DIR": "/var/sb"}
    s = Settings.load(env=env)
    assert (s.archive_batch, s.presence_heartbeat_sec, s.log_json, s.data_dir) == (60, 5.0, True, "/var/sb")


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
    s = Settings.load(config_file=write_toml(tmp_path, '[edge]\nport = "9001"\n[log]\njson = "yes"\n'), env={})
    assert s.port == 9001 and s.log_json is True


@pytest.mark.parametrize(
    "env",
    [
        {"SWITCHBOARD_PORT": "abc"},
        {"SWITCHBOARD_PORT": "80.5"},
        {"SWITCHBOARD_EDGE__PORT": "80.5"},
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


# A bad file says which file and which key, on one line.
@pytest.mark.parametrize(
    "text, words",
    [
        ("prot = 1\n", ["unknown key prot"]),
        ("port = 1\n", ["unknown key port", "[edge] port"]),  # the flat style of before: told where it goes
        ("[edge]\nprot = 1\n", ["unknown key [edge] prot", "did you mean port"]),
        ("[edgy]\nport = 1\n", ["unknown key edgy"]),
        ("edge = 1\n", ["[edge] must be a table"]),
        ("[edge]\nport = 1.5\n", ["[edge] port = 1.5", "integer"]),
        ("[edge]\nport = true\n", ["[edge] port = True", "integer"]),
        ('[edge]\nhost = 1\n', ["[edge] host = 1", "string"]),
        ("[log]\njson = 2\n", ["[log] json = 2", "boolean"]),
        ("[pusher.webpush]\nallowed_hosts = [1]\n", ["allowed_hosts", "list of strings"]),
        ("[edge]\nport = 0\n", ["port must be in 1..65535", "([edge] port)"]),  # validation, located
        ("[worker]\nmax_deliver = 3\n", ["unknown key worker", "[pusher]"]),  # the old push file
        ("push_config = 'p.toml'\n", ["unknown key push_config", "[pusher.apns]"]),
        ("[edge\n", ["not valid TOML"]),
    ],
)
def test_bad_file_is_one_line_naming_file_and_key(tmp_path: Path, text: str, words: list[str]) -> None:
    path = write_toml(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        Settings.load(config_file=path, env={})
    message = info.value.message
    assert message.startswith(path) or message.startswith(f"file {path}"), message
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no-such.toml: no such file"):
        Settings.load(config_file=str(tmp_path / "no-such.toml"), env={})


def test_unknown_override_rejected() -> None:
    with pytest.raises(ConfigError, match="no_such_setting"):
        Settings.load(env={}, overrides={"no_such_setting": 1})


def test_unknown_flat_env_variable_is_ignored() -> None:
    # Flat SWITCHBOARD_* names are also used by other tools (the test
    # services' SWITCHBOARD_CASSANDRA_VERSION): they must not break startup.
    assert Settings.load(env={"SWITCHBOARD_NOPE": "1", "PATH": "/bin"}) == Settings()


@pytest.mark.parametrize("var, hint", [("SWITCHBOARD_EDGE__PROT", "SWITCHBOARD_EDGE__PORT"),
                                       ("SWITCHBOARD_EDGY__PORT", "SWITCHBOARD_EDGE__PORT"),
                                       ("SWITCHBOARD_PUSHER__APNS__KEYID", "SWITCHBOARD_PUSHER__APNS__KEY_ID")])
def test_unknown_sectioned_env_variable_is_refused(var: str, hint: str) -> None:
    """The sectioned form is unmistakably ours: a typo there would silently
    keep the default, so it is refused like an unknown key in the file."""
    with pytest.raises(ConfigError, match=f"{var}: names no setting .did you mean {hint}"):
        Settings.load(env={var: "1"})


def test_new_fields_have_no_flat_alias() -> None:
    """Aliases exist for the variables deploy files already use; a field
    added with the tree has its sectioned name only, so the flat namespace
    does not keep growing."""
    assert Settings.load(env={"SWITCHBOARD_INBOX_BOUNDS_TTL": "9"}).inbox_bounds_ttl == 0.5
    assert Settings.load(env={"SWITCHBOARD_EDGE__INBOX_BOUNDS_TTL": "9"}).inbox_bounds_ttl == 9.0


def test_push_config_variable_is_refused_with_directions() -> None:
    # A deployment still pointing at the old separate push file must not
    # silently lose its providers.
    with pytest.raises(ConfigError, match=r"SWITCHBOARD_PUSH_CONFIG: no longer read.*\[pusher\]"):
        Settings.load(env={"SWITCHBOARD_PUSH_CONFIG": "/etc/push.toml"})


@pytest.mark.parametrize("settings", [
    Settings(),
    Settings(port=9, log_json=True, data_dir="/srv/x", rate_per_sec=0.5, inbox_bounds_ttl=0.0),
    Settings(store_url="cassandra://h1,h2/ks", push_provider="apns,webpush",
             push_apns=ApnsSettings(key_file="k", key_id="i", team_id="t", topic="x", ca_file="ca.pem"),
             push_webpush=WebPushSettings(vapid_private_key_file="v", subject="mailto:a@b.c",
                                          allowed_hosts=(".a.example", "b.example"))),
])
def test_environment_gives_a_child_the_same_settings(settings: Settings) -> None:
    """What `up` and the tests hand a role process: the child must load
    exactly these settings, whatever the parent's shell says (its own
    SWITCHBOARD_PORT here, which would otherwise win over nothing)."""
    env = environment(settings, base={"SWITCHBOARD_PORT": "1", "SWITCHBOARD_EDGE__PORT": "2", "HOME": "/h"})
    if settings.port == 8080:  # not among the changed fields: the parent's values stay
        env = {k: v for k, v in env.items() if "PORT" not in k}
    assert load(env=env).settings == settings
    assert env["HOME"] == "/h"


def test_environment_of_chosen_fields_overrides_both_spellings() -> None:
    env = environment(Settings(nats_url="nats://up:1"), ["nats_url"],
                      base={"SWITCHBOARD_NATS_URL": "nats://shell:1", "SWITCHBOARD_NATS__URL": "nats://shell:2"})
    assert env == {"SWITCHBOARD_NATS__URL": "nats://up:1"}


def test_env_names_are_unique() -> None:
    names = [leaf.env for leaf in leaves()] + [leaf.alias for leaf in leaves() if leaf.alias]
    assert len(names) == len(set(names))


# -- data_dir --------------------------------------------------------------------------
def test_paths_are_derived_from_data_dir(tmp_path: Path) -> None:
    """The store and the device store sit in data_dir unless set; before,
    the device store ignored data_dir and the store sat in the working
    directory."""
    got = load(env={"SWITCHBOARD_DATA_DIR": "/srv/sb"})
    s = got.settings
    assert s.store_url == "sqlite:////srv/sb/switchboard.db"
    assert s.push_device_store == "sqlite:////srv/sb/devices.db"
    assert got.origins["store.url"] == got.origins["pusher.device_store"] == "data_dir"
    # set explicitly: kept, also when data_dir changes later
    s = Settings(data_dir="/a", store_url="sqlite:////elsewhere/x.db")
    moved = s.replace(data_dir="/b")
    assert moved.store_url == "sqlite:////elsewhere/x.db"
    assert moved.push_device_store == "sqlite:////b/devices.db"  # derived: moves with data_dir
    assert not moved.derived("store_url") and moved.derived("push_device_store")


# -- [pusher] --------------------------------------------------------------------------
def test_push_section_with_providers(tmp_path: Path) -> None:
    text = ('[pusher]\nprovider = "apns,webpush"\nmax_deliver = 3\ndevice_store = "memory://"\n'
            '[pusher.apns]\nkey_file = "k.p8"\nkey_id = "ABC123DEFG"\nteam_id = "T"\ntopic = "com.example"\n'
            '[pusher.webpush]\nvapid_private_key_file = "v.pem"\nsubject = "mailto:ops@example.com"\n'
            'allowed_hosts = [".example.net"]\n')
    got = load(config_file=write_toml(tmp_path, text), env={"SWITCHBOARD_PUSHER__APNS__TOPIC": "com.other"})
    s = got.settings
    assert s.push_providers == ("apns", "webpush") and s.push_max_deliver == 3
    assert s.push_apns == ApnsSettings(key_file="k.p8", key_id="ABC123DEFG", team_id="T", topic="com.other")
    assert s.push_webpush is not None and s.push_webpush.allowed_hosts == (".example.net",)
    assert s.push_fcm is None
    assert got.origins["pusher.apns.topic"] == "env SWITCHBOARD_PUSHER__APNS__TOPIC"
    assert got.origins["pusher.apns.base_url"] == "default"
    assert "pusher.fcm.base_url" not in got.origins  # no [pusher.fcm]: nothing to show


@pytest.mark.parametrize(
    "text, words",
    [
        ('[pusher.apns]\nkey_file = "k"\n', ["[pusher.apns] is missing key_id, team_id, topic"]),
        ('[pusher.apns]\nkey_file = "k"\nkey_id = "i"\nteam_id = "t"\ntopic = "x"\nsecret = "s"\n',
         ["unknown key [pusher.apns] secret"]),
        ('[pusher.webpush]\nvapid_private_key_file = "k"\nsubject = "ops@example.com"\n', ["mailto"]),
        ('[pusher]\nprovider = "apns"\n', ["no [pusher.apns] section"]),
        ('[pusher]\nprovider = "sms"\n', ["unknown push provider 'sms'"]),
        ("[pusher]\nmax_deliver = 0\n", ["push_max_deliver must be >= 1", "[pusher] max_deliver"]),
        ('[pusher]\ndevice_store = "postgres://x"\n', ["scheme"]),
    ],
)
def test_bad_push_section_rejected(tmp_path: Path, text: str, words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.load(config_file=write_toml(tmp_path, text), env={})
    for word in words:
        assert word in info.value.message, info.value.message


def test_push_provider_without_section_rejected_in_code_too() -> None:
    with pytest.raises(ConfigError, match=r"no \[pusher.fcm\] section"):
        Settings(push_provider="fcm")
    assert Settings(push_provider="log").push_providers == ("log",)


# -- validation -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "changes",
    [
        {"store_url": "postgres://db/sb"},
        {"store_url": "sqlite:switchboard.db"},  # no "://"
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
        {"open_timeout": 0},
        {"inbox_bounds_ttl": -1},
        {"recheck_batch": 0},
        {"archive_ack_wait_sec": 0},
        {"sequencer_receipt_flush_sec": 0},
        {"metrics_port": 70000},
        {"port": 0},
        {"port": 65536},
        {"max_body_bytes": 64 * 1024, "max_frame_bytes": 64 * 1024},  # body must fit in a frame
    ],
)
def test_bad_numbers_rejected(changes) -> None:
    with pytest.raises(ConfigError):
        Settings(**changes)


def test_a_section_validates_on_its_own() -> None:
    """A section is a dataclass of its own: a role or a test can build and
    check one without the rest of the tree."""
    with pytest.raises(ConfigError, match="port"):
        EdgeSettings(port=0)
    assert PusherSettings().push_durable == "sb-pusher"
    with pytest.raises(TypeError):
        EdgeSettings(8080)  # type: ignore[misc]  # keyword-only


def test_bad_number_from_env_rejected_by_validation() -> None:
    with pytest.raises(ConfigError, match="env SWITCHBOARD_PORT: port must be in 1..65535"):
        Settings.load(env={"SWITCHBOARD_PORT": "0"})


@pytest.mark.parametrize("prefix", ["a.b", "", "*", ">", "with space", "x" * 33])
def test_bad_subject_prefix_rejected(prefix: str) -> None:
    # The prefix becomes the first token of every subject: "a.b" or "*" would
    # change what every subscription matches.
    with pytest.raises(ConfigError):
        Settings(subject_prefix=prefix)


def test_replace_revalidates() -> None:
    with pytest.raises(ConfigError):
        Settings().replace(store_url="mysql://x")
    assert Settings().replace(port=9999).port == 9999


def test_secret_not_in_repr() -> None:
    assert "hunter2-secret" not in repr(Settings(jwt_secret="hunter2-secret"))


def test_every_leaf_says_why() -> None:
    """Every setting carries the comment docs/operations.md shows."""
    assert [leaf.path for leaf in leaves() if not leaf.doc] == []


def test_webpush_settings_alone() -> None:
    w = WebPushSettings(vapid_private_key_file="k", subject="https://example.com/ops", allowed_hosts=["a.example"])
    assert w.allowed_hosts == ("a.example",) and w.allows("https://a.example/x") and not w.allows("https://b.example/")


@pytest.mark.parametrize("value", ["2m", "always", "10s", "100ms", "1m30s", "1.5h"])
def test_sync_interval_accepts_what_nats_server_reads(value: str) -> None:
    assert Settings.load(env={"SWITCHBOARD_NATS__SYNC_INTERVAL": value}).sync_interval == value


@pytest.mark.parametrize("value", ["2", "0s", "", "bogus", "Always", "2 m", "-1s", "2d"])
def test_sync_interval_refuses_what_nats_server_would_misread(value: str) -> None:
    """A bare number ("2") or a unit nats-server lacks ("2d") would stop the
    embedded server at start, or worse run it with another interval than
    asked; "0s" is no interval at all. Refused at load, in one line naming
    the variable and the accepted forms."""
    with pytest.raises(ConfigError) as err:
        Settings.load(env={"SWITCHBOARD_NATS__SYNC_INTERVAL": value})
    msg = err.value.message
    assert "\n" not in msg and "SWITCHBOARD_NATS__SYNC_INTERVAL" in msg and '"always" or a duration' in msg
