"""The ``switchboard`` command.

    switchboard up [--host H] [--port P] [--data DIR] [--nats URL] [--store URL] [--layout L] [--no-dev-signin]
    switchboard edge|sequencer|archiver|presence|pusher [--nats URL] [...]   (one role; its own flags only)
    switchboard run ROLE+ROLE... [--nats URL] [...]       (several roles in one process)
    switchboard init --nats URL                           (streams, consumers, KV: admin NATS user)
    switchboard cluster up [--nats 3] [--edges 2] [--sequencers 2] [--archivers 2] [--data DIR]   (sbctl/cluster.py)
    switchboard token USER [--data DIR]
    switchboard trace CONV SEQ | --id MSG_ID [--conv C] [--nats URL | --data DIR] [--json]   (sbctl/trace.py)
    switchboard nats-config [--out DIR]
    switchboard bench ...
    switchboard --version

The roles come from the registry (sbctl/roles.py); each role's subcommand
has the flags that role reads, no others. Errors an operator can fix (a
port in use, a bad or missing config file, a missing optional extra, a bad
setting) are one line on stderr and a non-zero exit code, never a traceback.

Exit codes: 0 done, or a role stopped by SIGINT/SIGTERM (while it was still
waiting for a dependency too); 1 failed; 2 bad usage or settings; 69 a
dependency (NATS, the store, the presence backend) did not answer within its
``connect_timeout_sec`` (switchboard/reach.py, sbctl/starting.py); 130 a
one-shot command (init, trace) interrupted by Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import os
import sys
import threading
import tomllib
from typing import NoReturn

import switchboard
from sbctl import extras, procs
from sbctl.roles import ALL_ROLES, parse_roles
from sbctl.starting import EXIT_INTERRUPTED, EXIT_UNREACHABLE, Stopper, exit_soon
from sbctl.supervisor import DEFAULT_LAYOUT, SINGLE, parse_layout, port_free
from switchboard import auth, log
from switchboard.config import Settings
from switchboard.errors import ConfigError, SwitchboardError
from switchboard.reach import Unreachable

# Settings a flag overrides (flag dest -> Settings field).
_SETTING_OF = {"host": "host", "port": "port", "data": "data_dir", "nats": "nats_url", "store": "store_url",
               "presence": "presence_url", "edge_id": "edge_id", "log_level": "log_level"}


def _settings(args: argparse.Namespace, **extra) -> Settings:
    """Settings from the config file, the environment and the flags given.
    A missing or unreadable file, or one that is not TOML, is a ConfigError
    (one line) rather than the OSError / TOMLDecodeError it raises."""
    overrides = {field: getattr(args, dest, None) for dest, field in _SETTING_OF.items()}
    path = getattr(args, "config", None) or os.environ.get("SWITCHBOARD_CONFIG")
    try:
        return Settings.load(config_file=getattr(args, "config", None), overrides={**overrides, **extra})
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist (--config / SWITCHBOARD_CONFIG)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror or exc}") from None


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (plus where to look), exit code 2; a flag
    the command does not take is reported by that command's parser."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see: {self.prog} --help)\n")

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        ns, rest = self.parse_known_args(args, namespace)
        if rest:
            commands = getattr(self, "commands", {})
            commands.get(getattr(ns, "cmd", None), self).error(f"unrecognized arguments: {' '.join(rest)}")
        return ns


# Every flag a role command may have, with its help; each command takes the
# ones it reads (ROLE_FLAGS, up, run).
def _flag(p: argparse.ArgumentParser, name: str, *, up: bool = False) -> None:
    if name == "config":
        p.add_argument("--config", metavar="FILE",
                       help="TOML settings file, a [section] per role (default: $SWITCHBOARD_CONFIG); "
                            "SWITCHBOARD_<SECTION>__<KEY> variables and these flags override it")
    elif name == "data":
        p.add_argument("--data", metavar="DIR",
                       help="data directory (default .sbdata): the development JWT secret (edge), the SQLite "
                            "message store (sequencer, archiver) and device store (pusher) when their URL is unset")
    elif name == "nats":
        p.add_argument("--nats", metavar="URL",
                       help="use this NATS instead of starting an embedded nats-server" if up else
                       "NATS URL, a comma list for a cluster; may hold user:password@ "
                       "(default $SWITCHBOARD_NATS_URL or nats://127.0.0.1:4222)")
    elif name == "log_level":
        p.add_argument("--log-level", dest="log_level", choices=("debug", "info", "warning", "error"),
                       help="log level on stderr (default info)")
    elif name == "store":
        p.add_argument("--store", metavar="URL",
                       help="message store: sqlite:///path.db or cassandra://h1,h2/keyspace "
                            "(cassandra needs the 'cassandra' extra)")
    elif name == "presence":
        p.add_argument("--presence", metavar="URL",
                       help="presence backend: memory:// (one tracker) or redis://host:port/db "
                            "(several trackers; needs the 'redis' extra)")
    elif name == "host":
        p.add_argument("--host", help="address the edge listens on (default 127.0.0.1)")
    elif name == "port":
        p.add_argument("--port", type=int, help="the edge's WebSocket/HTTP port (default 8080)")
    elif name == "edge_id":
        p.add_argument("--edge-id", dest="edge_id", metavar="ID",
                       help="this edge's id, in its heartbeat subject and micro service (default: random)")
    else:  # a typo in the tables below
        raise ValueError(name)


COMMON_FLAGS = ("config", "nats", "log_level")
# The flags each role reads beyond the common ones. "data": data_dir, read by
# the edge (its development JWT secret when jwt_secret is unset), the
# sequencer and archiver (the SQLite store, store_url unset) and the pusher
# (its device store, push_device_store unset); the tracker keeps nothing there.
ROLE_FLAGS: dict[str, tuple[str, ...]] = {
    "edge": ("data", "host", "port", "edge_id"),
    "sequencer": ("data", "store"),
    "archiver": ("data", "store"),
    "presence": ("presence",),
    "pusher": ("data",),
}
ROLE_HELP = {
    "edge": "run an edge (WebSocket gateway) against an existing NATS",
    "sequencer": "run a sequencer (orders, stores, fans out) against an existing NATS",
    "archiver": "run the archiver (long-term store, history) against an existing NATS",
    "presence": "run the presence tracker against an existing NATS",
    "pusher": "run the push notifier against an existing NATS "
              "(providers: [pusher], [pusher.apns|fcm|webpush] in --config)",
}


def _role_flags(p: argparse.ArgumentParser, roles: tuple[str, ...]) -> None:
    for name in COMMON_FLAGS:
        _flag(p, name)
    for name in dict.fromkeys(f for r in roles for f in ROLE_FLAGS[r]):
        _flag(p, name)
    # Set by `switchboard up` for its children (hidden: not for operators).
    p.add_argument("--metrics-listen", help=argparse.SUPPRESS)  # host:port of this process's metrics
    if "edge" in roles:
        p.add_argument("--metrics-peers", default="", help=argparse.SUPPRESS)  # host:port,... the edge re-exports


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="switchboard", description="Real-time chat delivery fabric")
    parser.add_argument("--version", action="version", version=f"switchboard {switchboard.__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    up = sub.add_parser("up", help="start the whole fabric: nats-server and the roles as supervised child "
                        "processes (embedded NATS by default)")
    for name in COMMON_FLAGS:
        _flag(up, name, up=True)
    for name in ("data", "store", "presence", "host", "port"):
        _flag(up, name)
    up.add_argument("--nats-port", type=int, default=0, metavar="PORT",
                    help="port of the embedded nats-server (default: a free one)")
    up.add_argument("--layout", default=DEFAULT_LAYOUT,
                    help=f"roles per child process: '+' joins roles in one process, ',' separates processes "
                         f"(default {DEFAULT_LAYOUT}); 'single': every role inside this process")
    up.add_argument("--no-dev-signin", dest="no_dev_signin", action="store_true",
                    help="do not offer the web app's development sign-in (any user name gets a token), which "
                         "up turns on when it binds a loopback host")
    up.set_defaults(run=_serve)
    for role in ALL_ROLES:
        rp = sub.add_parser(role, help=ROLE_HELP.get(role, f"run the {role} against an existing NATS"))
        _role_flags(rp, (role,))
        rp.set_defaults(run=_serve)
    rp = sub.add_parser("run", help="run several roles in one process against an existing NATS")
    rp.add_argument("roles", help=f"roles joined by '+', e.g. archiver+presence+pusher (roles: {', '.join(ALL_ROLES)})")
    _role_flags(rp, ALL_ROLES)
    rp.set_defaults(run=_serve)
    ini = sub.add_parser("init", help="create or update the streams, consumers and KV bucket the roles use "
                         "(a NATS user with the JetStream management API, e.g. admin in nats/accounts.conf); "
                         "roles only check they exist")
    ini.add_argument("--nats", metavar="URL",
                     help="NATS URL with the admin user's credentials (default $SWITCHBOARD_NATS_URL)")
    _flag(ini, "config")
    ini.set_defaults(run=lambda args: asyncio.run(_init(_settings(args))))
    tok = sub.add_parser("token", help="print a token this deployment accepts, signed with its secret "
                         "(jwt_secret, or the data dir's jwt.secret; never a new one)")
    tok.add_argument("user", help="the user id the token names")
    _flag(tok, "data")
    _flag(tok, "config")
    tok.add_argument("--ttl", type=int, default=30 * 86400, metavar="SEC", help="lifetime in seconds (default 30 days)")
    tok.set_defaults(run=_token)
    nc = sub.add_parser("nats-config", help="write the stream definitions as JSON for the nats CLI")
    nc.add_argument("--out", default="nats/streams", metavar="DIR", help="directory to write to (default nats/streams)")
    _flag(nc, "config")
    nc.set_defaults(run=_nats_config)
    from sbctl import trace as trace_cli

    trace_cli.add_parser(sub)
    sub.choices["trace"].set_defaults(run=trace_cli.run)
    from sbctl import configcmd

    configcmd.add_parser(sub)  # config show | check (sets run=)
    from sbctl import cluster

    cluster.add_parser(sub)  # cluster up (sets run=)
    bench = sub.add_parser("bench", help="load generator and report (switchboard bench --help)")
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="the benchmark's own arguments")
    bench.set_defaults(run=_bench)
    # More commands register here: a module's add_parser(sub) that sets run= (as trace does).
    parser.commands = sub.choices  # type: ignore[attr-defined]  # for parse_args' errors
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # its own parser, so `switchboard bench --help` shows the bench's help
        return _bench(argparse.Namespace(rest=argv[1:]))
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:  # Ctrl-C in a one-shot command (init, trace); roles handle SIGINT themselves
        return EXIT_INTERRUPTED
    except SwitchboardError as exc:
        print(f"switchboard {args.cmd}: {log.redact(exc.message)}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        missing = extras.for_module(exc)
        if missing is None:
            raise
        print(f"switchboard {args.cmd}: {missing.message}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        print(f"switchboard {args.cmd}: an address this process listens on is in use ({exc.strerror}): "
              f"port, metrics_port or --nats-port", file=sys.stderr)
        return 2


def _token(args: argparse.Namespace) -> int:
    s = _settings(args)
    secret = s.jwt_secret or auth.existing_dev_secret(s.data_dir)
    if not secret:
        raise ConfigError(
            f"no secret to sign with: {os.path.join(s.data_dir, 'jwt.secret')} does not exist and jwt_secret "
            f"is not set. Pass --data DIR of the deployment (the DIR of its `switchboard up --data DIR`; "
            f"default .sbdata), or set SWITCHBOARD_JWT_SECRET to the secret its edges check; a new secret "
            f"would make a token no edge accepts")
    print(auth.issue(secret, args.user, ttl_sec=args.ttl))
    return 0


def _nats_config(args: argparse.Namespace) -> int:
    from switchboard.bus import streams

    for path in streams.write_json(_settings(args), args.out):
        print(path)
    return 0


def _bench(args: argparse.Namespace) -> int:
    from sbctl.bench.cli import main as bench_main

    return bench_main(args.rest)


async def _init(s: Settings) -> int:
    """``switchboard init``: the admin step (sbctl/init.py). NATS is waited
    for as a role waits (``[nats] connect_timeout_sec``; compose or a Job
    may start it alongside nats-server), then exit 69 with one line."""
    import nats.errors
    import nats.js.errors

    from sbctl.fabric import first_connect
    from sbctl.init import init_fabric
    from switchboard import tls

    log.configure(s.log_level, s.log_json)  # the wait's lines go to stderr
    refused: list[str] = []

    async def on_error(exc: Exception) -> None:
        if "permissions violation" in str(exc).lower():
            refused.append(str(exc))

    try:
        # TLS as every role (nats_tls_*; a server without TLS is then refused).
        nc = await first_connect(s, "switchboard-init", log.get("init"), error_cb=on_error)
    except Unreachable as exc:
        print(f"switchboard init: {log.redact(exc.message)}", file=sys.stderr)
        return EXIT_UNREACHABLE
    try:
        tls.require_tls(nc, s)
        for line in await init_fabric(nc, s):
            print(f"ok: {line}", flush=True)
    except (TimeoutError, nats.errors.TimeoutError):
        why = f" ({refused[0]})" if refused else ""
        print(f"switchboard init: the JetStream API did not answer{why}: use a NATS user allowed "
              f"$JS.API.> (admin in nats/accounts.conf)", file=sys.stderr)
        return 1
    except nats.js.errors.APIError as exc:
        print(f"switchboard init: JetStream refused: {log.redact(str(exc))}", file=sys.stderr)
        return 1
    finally:
        with contextlib.suppress(Exception):
            await nc.close()
    return 0


def _roles_of(args: argparse.Namespace) -> tuple[str, ...]:
    if args.cmd == "up":
        return ALL_ROLES
    if args.cmd == "run":
        return parse_roles(args.roles)
    return (args.cmd,)


def _refuse_unread_flags(args: argparse.Namespace, roles: tuple[str, ...]) -> None:
    """``run a+b`` offers every role's flags (the roles are an argument, so
    argparse cannot know them): one that none of the named roles reads is
    refused, as a one-role command refuses another role's flag."""
    read = {*COMMON_FLAGS, *(f for r in roles for f in ROLE_FLAGS[r])}
    for name in dict.fromkeys(f for fs in ROLE_FLAGS.values() for f in fs):
        if name not in read and getattr(args, name, None) is not None:
            readers = ", ".join(r for r in ROLE_FLAGS if name in ROLE_FLAGS[r])
            raise ConfigError(f"--{name.replace('_', '-')} is read by none of {'+'.join(roles)} "
                              f"(roles reading it: {readers})")


def _serve(args: argparse.Namespace) -> int:
    """``up``, ``run ROLES`` and the one-role commands."""
    roles = _roles_of(args)
    if args.cmd == "run":
        _refuse_unread_flags(args, roles)
    extra = {}
    if getattr(args, "metrics_listen", None):  # a child of `up`: metrics on a loopback port of its own
        extra["metrics_port"] = int(args.metrics_listen.rpartition(":")[2])
    s = _settings(args, **extra)
    extras.check(s, roles)  # before anything starts: one line with the install command
    if not s.jwt_secret and "edge" in roles:  # up hands it to its edge children
        s = s.replace(jwt_secret=auth.dev_secret(s.data_dir))
    if args.cmd == "up":
        from sbctl.devmode import up_dev_signin

        s = s.replace(dev_signin=up_dev_signin(s.host, disabled=args.no_dev_signin))
    if "edge" in roles and not port_free(s.host, s.port):
        raise ConfigError(f"port {s.port} on {s.host} is in use (--port, or port in the settings)")
    log.configure(s.log_level, s.log_json)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    embedded = args.cmd == "up" and getattr(args, "nats", None) is None
    if args.cmd == "up" and args.layout != SINGLE:
        from sbctl.supervisor import serve_up

        try:
            layout = parse_layout(args.layout)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return asyncio.run(serve_up(args, s, layout, embedded=embedded, nats_port=args.nats_port))
    from sbctl.fabric import Fabric, run

    listen = getattr(args, "metrics_listen", None)
    peers = tuple(p for p in (getattr(args, "metrics_peers", "") or "").split(",") if p)

    parent = os.getppid()

    abandoned: list[threading.Timer] = []

    async def serve() -> int:
        # SIGINT/SIGTERM: while starting (waiting for NATS, the store...) the
        # start is cancelled and the process exits 0 at once; once up, the
        # orderly stop below (sbctl/starting.py).
        stopper = Stopper()
        loop = asyncio.get_running_loop()
        try:
            # Only `up --layout single` (in-process, its own NATS or one given
            # with --nats) runs the admin step; role processes check and use.
            async with run(s, roles, embedded_nats=embedded, nats_port=getattr(args, "nats_port", 0),
                           create_streams=args.cmd == "up", metrics_host=listen.rpartition(":")[0] if listen else None,
                           metrics_peers=peers) as fab:
                stopper.started()
                await _serving(fab, stopper.stop, loop)
            return 0
        except asyncio.CancelledError as exc:
            if not stopper.interrupted(exc):
                raise
            code = 0  # stopped while starting: a stop asked for, as after the start
        except Unreachable as exc:
            print(f"switchboard {args.cmd}: {log.redact(exc.message)}", file=sys.stderr, flush=True)
            code = EXIT_UNREACHABLE
        abandoned.append(exit_soon(code))
        return code

    async def _serving(fab: Fabric, stop: asyncio.Event, loop: asyncio.AbstractEventLoop) -> None:
        """Say where the fabric is, serve until ``stop``, arm the stop watchdog."""
        if fab.edge is not None:
            ws, http = ("wss", "https") if s.tls_cert else ("ws", "http")
            note = "; dev sign-in on" if s.dev_signin else ""
            lines = [f"Switchboard is up: {ws}://{s.host}:{fab.edge.port}/ws  "
                     f"(web app: {http}://{s.host}:{fab.edge.port}/{note})",
                     f"NATS: {log.redact_url(fab.settings.nats_url)}   "
                     f"token: switchboard token USER --data {s.data_dir}"]
            if embedded:
                from sbctl import natsctx

                url = fab.settings.nats_url
                lines.append(natsctx.hint(natsctx.write(s.data_dir, url), url))
            print("\n".join(lines), flush=True)  # one write: the banner never appears alone
        else:
            print(f"switchboard {'+'.join(roles)} running (NATS {log.redact_url(fab.settings.nats_url)})",
                  flush=True)
        if s.metrics_port and not listen:  # (a child of `up`: up prints every child's)
            print(f"metrics: http://{s.host}:{s.metrics_port}/metrics", flush=True)
        procs.tune_gc()
        await stop.wait()
        orphaned = os.getppid() != parent  # `up` died: PR_SET_PDEATHSIG sent the SIGTERM
        _shutdown_watchdog(loop, "+".join(roles) if args.cmd != "up" else "up",
                           ORPHAN_GRACE_SEC if orphaned else STOP_GRACE_SEC)

    code = asyncio.run(serve())
    for timer in abandoned:  # asyncio.run is over: nothing holds the exit any more
        timer.cancel()
    return code


# A clean stop takes 1-3 s (the archiver finishes its batch, NATS drains).
# One that takes longer waits on something that is gone (a NATS server killed
# with `up`; nats-py's fetch does not always give in to a cancel while
# disconnected): the process must still end, or a stopped `up` leaves it
# behind. A child whose `up` died has no one to finish work for: 3 s.
STOP_GRACE_SEC = 15.0
ORPHAN_GRACE_SEC = 3.0


def _shutdown_watchdog(loop: asyncio.AbstractEventLoop, what: str, grace: float) -> None:
    """Exit with 1 (and the stuck tasks' stacks on stderr) if the stop takes over ``grace`` seconds."""
    import threading

    def stuck() -> None:
        print(f"switchboard {what}: stop took over {grace:.0f} s; exiting", file=sys.stderr, flush=True)
        for task in asyncio.all_tasks(loop):  # the named ones and those being cancelled (library tasks are noise)
            if not task.get_name().startswith("Task-") or task.cancelling():
                task.print_stack(limit=8, file=sys.stderr)
        sys.stderr.flush()
        os._exit(1)

    loop.call_later(grace, stuck)
    # Backstop in a thread, for a stop stuck in blocking code (the loop never runs the timer).
    t = threading.Timer(grace + 5.0, lambda: os._exit(1))
    t.daemon = True
    t.start()


if __name__ == "__main__":
    sys.exit(main())
