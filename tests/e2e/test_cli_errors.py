"""The ``switchboard`` command as an operator meets it: ``--version``, the
help of each role showing only the flags it reads, and every input an
operator can get wrong ending in one line on stderr, no traceback and a
non-zero exit code (a port in use, a missing or broken config file, a
setting that needs an optional extra that is not installed, a token asked
for outside a data dir that has a secret, a flag the command does not take).

Each case runs the real CLI in a child process (``python -m sbctl``). None of
them needs NATS: every check here happens before the process connects.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import socket
import subprocess
from pathlib import Path

import pytest

from sbctl.cli import COMMON_FLAGS, ROLE_FLAGS
from tests.e2e.helpers import PYTHON, REPO

# Runs the CLI with some modules made unimportable, as if their optional
# extra were not installed (sys.modules[name] = None is how Python marks a
# module as absent: import raises ModuleNotFoundError, find_spec says None).
WITHOUT = ("import sys; [sys.modules.__setitem__(m, None) for m in sys.argv[1].split(',')]; "
           "from sbctl.cli import main; sys.exit(main(sys.argv[2:]))")


def cli(args: list[str], *, env: dict[str, str] | None = None, without: tuple[str, ...] = (),
        cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("SWITCHBOARD_", "OTEL_"))}
    e.update(env or {})
    argv = [PYTHON, "-c", WITHOUT, ",".join(without), *args] if without else [PYTHON, "-m", "sbctl", *args]
    return subprocess.run(argv, cwd=cwd, env=e, capture_output=True, text=True, timeout=60)


def assert_one_line_error(p: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert p.returncode != 0, f"exit 0:\n{p.stdout}\n{p.stderr}"
    assert "Traceback" not in p.stderr, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, f"{len(lines)} lines on stderr:\n{p.stderr}"
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def busy_port():
    """A port something already listens on (the test holds it)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


def test_version_is_the_package_metadata():
    p = cli(["--version"])
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == f"switchboard {importlib.metadata.version('switchboard')}"


ALL_FLAGS = {"--config", "--data", "--nats", "--log-level", "--store", "--presence", "--host", "--port", "--edge-id"}


def help_flags(text: str) -> set[str]:
    return set(re.findall(r"(--[a-z][a-z-]*)", text))


@pytest.mark.parametrize("role", sorted(ROLE_FLAGS))
def test_role_help_shows_only_the_flags_it_reads(role):
    """`switchboard edge --help` must not offer --store (the sequencer's),
    nor `switchboard pusher --help` a --port it would ignore."""
    p = cli([role, "--help"])
    assert p.returncode == 0, p.stderr
    want = {"--" + f.replace("_", "-") for f in (*COMMON_FLAGS, *ROLE_FLAGS[role])}
    assert help_flags(p.stdout) & ALL_FLAGS == want, p.stdout
    assert "--metrics-listen" not in p.stdout and "--metrics-peers" not in p.stdout  # up's, hidden


BENCHES = ("delivery", "idle", "archiver", "receipts", "fuzz", "presence", "storm", "ring")
# Every parser an operator meets: the commands, each role, config's and
# bench's subcommands (archiver and receipts parse their own options), and
# the benchmark modules run alone (python -m ...).
HELP_COMMANDS = [[], ["up"], ["cluster", "up"], ["run"], ["init"], ["token"], ["nats-config"], ["trace"],
                 ["config", "show"], ["config", "check"], *([r] for r in ROLE_FLAGS), ["bench"],
                 *(["bench", b] for b in BENCHES)]
HELP_MODULES = ["sbctl.bench.tracker", "sbctl.bench.transport", "sbctl.bench.cells"]


@pytest.mark.parametrize("argv", [*(["sbctl", *c] for c in HELP_COMMANDS), *([m] for m in HELP_MODULES)],
                         ids=lambda argv: " ".join(argv))
def test_every_flag_has_help_text(argv):
    """argparse prints an option without help as its name alone: each
    option of every command's help must go on with words. A command whose
    help lists no option besides -h would pass vacuously, so the number of
    options seen is checked against the usage line's."""
    e = {k: v for k, v in os.environ.items() if not k.startswith(("SWITCHBOARD_", "OTEL_"))}
    p = subprocess.run([PYTHON, "-m", *argv, "--help"], cwd=REPO, env=e, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    usage, opts = p.stdout.split("options:", 1)
    entries = re.split(r"\n  (?=-)", opts)[1:]
    for entry in entries:
        first, *more = entry.split("\n")
        words = (first.split("  ", 1)[1] if "  " in first else "") + " ".join(m.strip() for m in more)
        assert words.strip(), f"{' '.join(argv)}: {first.strip()} has no help text"
    assert len(entries) >= len(set(re.findall(r"\[(--?[a-z][\w-]*)", usage))), p.stdout


def test_edge_help_hides_sequencer_flags():
    out = cli(["edge", "--help"]).stdout
    assert "--port" in out and "--edge-id" in out
    assert "--store" not in out and "--presence" not in out and "--layout" not in out


# (id, argv, environment, modules made absent, what the one line must say).
# {tmp}: the test's directory (bad.toml, unknown.toml, secret/ made there);
# {busy}: a port the test listens on.
CASES = [
    ("edge-port-in-use", ["edge", "--port", "{busy}", "--data", "{tmp}/d"], {}, (), ("port {busy}", "in use")),
    ("up-port-in-use", ["up", "--port", "{busy}", "--data", "{tmp}/d"], {}, (), ("port {busy}", "in use")),
    ("run-port-in-use", ["run", "edge+presence", "--port", "{busy}", "--data", "{tmp}/d"], {}, (), ("in use",)),
    ("config-missing", ["sequencer", "--config", "{tmp}/missing.toml"], {}, (), ("missing.toml",)),
    ("config-missing-env", ["archiver"], {"SWITCHBOARD_CONFIG": "{tmp}/missing.toml"}, (), ("missing.toml",)),
    ("config-not-toml", ["edge", "--config", "{tmp}/bad.toml"], {}, (), ("bad.toml",)),
    ("config-unknown-key", ["edge", "--config", "{tmp}/unknown.toml"], {}, (), ("no_such_setting",)),
    ("token-config-missing", ["token", "alice", "--config", "{tmp}/missing.toml"], {}, (), ("missing.toml",)),
    ("bad-store-scheme", ["sequencer", "--store", "mysql://db/x"], {}, (), ("store",)),
    ("cassandra-extra", ["sequencer", "--store", "cassandra://127.0.0.1/sb"], {}, ("cassandra",),
     ("pip install 'switchboard[cassandra]'",)),
    ("cassandra-extra-archiver", ["archiver", "--store", "cassandra://127.0.0.1/sb"], {}, ("cassandra",),
     ("pip install 'switchboard[cassandra]'",)),
    ("cassandra-extra-up", ["up", "--store", "cassandra://127.0.0.1/sb", "--data", "{tmp}/d"], {}, ("cassandra",),
     ("pip install 'switchboard[cassandra]'",)),
    ("redis-extra", ["presence", "--presence", "redis://127.0.0.1:6379/0"], {}, ("redis",),
     ("pip install 'switchboard[redis]'",)),
    ("otel-extra", ["edge", "--data", "{tmp}/d"], {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"},
     ("opentelemetry",), ("pip install 'switchboard[otel]'",)),
    ("token-without-secret", ["token", "alice", "--data", "{tmp}/empty"], {}, (),
     ("jwt.secret does not exist", "--data", "SWITCHBOARD_JWT_SECRET")),
    ("flag-of-another-role", ["pusher", "--port", "9000"], {}, (), ("switchboard pusher", "--port")),
    # the tracker keeps nothing under data_dir: --data is not offered to it
    ("presence-ignores-data", ["presence", "--data", "{tmp}/d"], {}, (), ("switchboard presence", "--data")),
    # run shows every role's flags; one none of the named roles reads is refused
    ("run-flag-no-role-reads", ["run", "edge+presence", "--store", "sqlite:///{tmp}/x.db", "--data", "{tmp}/d"], {},
     (), ("switchboard run", "--store", "edge+presence", "sequencer, archiver")),
    ("run-data-no-role-reads", ["run", "presence", "--data", "{tmp}/d"], {}, (), ("--data", "presence")),
    ("unknown-role", ["run", "archiver+web"], {}, (), ("unknown roles ['web']",)),
    ("role-twice", ["run", "archiver+archiver"], {}, (), ("twice",)),
    ("bad-layout", ["up", "--layout", "sequencer,edge", "--data", "{tmp}/d"], {}, (), ("missing",)),
    ("bad-log-level", ["edge", "--log-level", "loud"], {}, (), ("--log-level",)),
    ("no-command", [], {}, (), ("COMMAND",)),
]


@pytest.mark.parametrize("argv,env,without,needles", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line(argv, env, without, needles, tmp_path, busy_port):
    (tmp_path / "bad.toml").write_text("port = \n")
    (tmp_path / "unknown.toml").write_text("no_such_setting = 1\n")

    def fill(text: str) -> str:
        return text.format(tmp=tmp_path, busy=busy_port)

    p = cli([fill(a) for a in argv], env={k: fill(v) for k, v in env.items()}, without=without)
    line = assert_one_line_error(p, *map(fill, needles))
    assert line.startswith("switchboard"), line


def test_token_never_invents_a_secret(tmp_path):
    """A new secret would sign a token no running edge accepts: `token`
    refuses, and leaves the data dir without one (the next `up` makes it)."""
    p = cli(["token", "alice", "--data", str(tmp_path / "d")])
    assert_one_line_error(p)
    assert not (tmp_path / "d" / "jwt.secret").exists()
    # The control: the same command in a data dir with a secret signs with it.
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "jwt.secret").write_text("a-development-secret-of-32-bytes-or-more\n")
    p = cli(["token", "alice", "--data", str(tmp_path / "d")])
    assert p.returncode == 0, p.stderr
    from switchboard import auth

    assert auth.verify("a-development-secret-of-32-bytes-or-more", p.stdout.strip()) == "alice"
    # ... or with the configured one, anywhere.
    other = "another-secret-of-32-bytes-or-more"
    p = cli(["token", "bob", "--data", str(tmp_path / "none")], env={"SWITCHBOARD_JWT_SECRET": other})
    assert p.returncode == 0 and auth.verify(other, p.stdout.strip()) == "bob"


def test_extras_present_pass_the_check(tmp_path, busy_port):
    """The control of the extras cases: with the modules importable, the same
    command gets past the extras check (and stops at the next problem, the
    port this test holds)."""
    p = cli(["run", "sequencer+edge", "--store", "cassandra://127.0.0.1/sb", "--port", str(busy_port),
             "--data", str(tmp_path)])
    line = assert_one_line_error(p, "in use")
    assert "pip install" not in line
