"""The ``switchboard`` command.

    switchboard up [--host H] [--port P] [--data DIR] [--nats URL] [--store URL] [--layout L] [--no-dev-signin]
    switchboard edge|sequencer|archiver|presence|pusher --nats URL [...]
    switchboard run ROLE+ROLE... --nats URL [...]       (several roles in one process)
    switchboard init --nats URL                           (streams, consumers, KV: admin NATS user)
    switchboard token USER [--data DIR]
    switchboard trace CONV SEQ | --id MSG_ID [--conv C] [--nats URL | --data DIR] [--json]   (sbctl/trace.py)
    switchboard nats-config [--out DIR]
    switchboard bench ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys

from switchboard import auth, log
from sbctl import procs
from sbctl.supervisor import ALL_ROLES, DEFAULT_LAYOUT, SINGLE, parse_layout
from switchboard.config import Settings
from switchboard.errors import SwitchboardError


def _settings(args: argparse.Namespace, **extra) -> Settings:
    overrides = {
        "host": getattr(args, "host", None), "port": getattr(args, "port", None),
        "data_dir": getattr(args, "data", None), "nats_url": getattr(args, "nats", None),
        "store_url": getattr(args, "store", None), "presence_url": getattr(args, "presence", None),
        "edge_id": getattr(args, "edge_id", None), "log_level": getattr(args, "log_level", None),
        **extra,
    }
    return Settings.load(config_file=getattr(args, "config", None), overrides=overrides)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML settings file (keys = Settings fields)")
    p.add_argument("--data", help="data directory (default .sbdata)")
    p.add_argument("--nats", help="NATS URL (up: use this NATS instead of starting one)")
    p.add_argument("--store", help="store URL: sqlite:///path.db or cassandra://h1,h2/keyspace")
    p.add_argument("--presence", help="presence URL: memory:// or redis://host:port/db")
    p.add_argument("--log-level", dest="log_level")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchboard", description="Real-time chat delivery fabric")
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start the whole fabric: nats-server and the roles as supervised child "
                        "processes (embedded NATS by default)")
    _common(up)
    up.add_argument("--host", default=None)
    up.add_argument("--port", type=int, default=None)
    up.add_argument("--nats-port", type=int, default=0, help="port of the embedded nats-server (default: free)")
    up.add_argument("--layout", default=DEFAULT_LAYOUT,
                    help=f"roles per child process: '+' joins roles in one process, ',' separates processes "
                         f"(default {DEFAULT_LAYOUT}); 'single': every role inside this process")
    up.add_argument("--no-dev-signin", dest="no_dev_signin", action="store_true",
                    help="do not offer the web app's development sign-in (any user name gets a token), which "
                         "up turns on when it binds a loopback host")
    for role in ("edge", "sequencer", "archiver", "presence", "pusher", "run"):
        if role == "run":
            rp = sub.add_parser("run", help="run several roles in one process against an existing NATS")
            rp.add_argument("roles", help="roles joined by '+', e.g. archiver+presence+pusher")
        else:
            rp = sub.add_parser(role, help=f"run the {role} against an existing NATS")
        _common(rp)
        rp.add_argument("--host", default=None)
        rp.add_argument("--port", type=int, default=None)
        rp.add_argument("--edge-id", dest="edge_id")
        # Set by `switchboard up` for its children (hidden: not for operators).
        rp.add_argument("--metrics-listen", help=argparse.SUPPRESS)  # host:port of this process's metrics
        rp.add_argument("--metrics-peers", default="", help=argparse.SUPPRESS)  # host:port,... the edge re-exports
    ini = sub.add_parser("init", help="create or update the streams, consumers and KV bucket the roles use "
                         "(a NATS user with the JetStream management API, e.g. admin in nats/accounts.conf); "
                         "roles only check they exist")
    ini.add_argument("--nats", help="NATS URL with the admin user's credentials (default SWITCHBOARD_NATS_URL)")
    ini.add_argument("--config", help="TOML settings file (stream_prefix, replicas, push_config, ...)")
    tok = sub.add_parser("token", help="print a token this deployment accepts")
    tok.add_argument("user")
    tok.add_argument("--data", help="data directory (default .sbdata)")
    tok.add_argument("--config")
    tok.add_argument("--ttl", type=int, default=30 * 86400, help="lifetime in seconds")
    nc = sub.add_parser("nats-config", help="write the stream definitions as JSON for the nats CLI")
    nc.add_argument("--out", default="nats/streams")
    nc.add_argument("--config")
    from sbctl import trace as trace_cli

    trace_cli.add_parser(sub)
    from sbctl import configcmd

    configcmd.add_parser(sub)  # config show | check (sets run=)
    bench = sub.add_parser("bench", help="load generator and report")
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # its own parser, so `switchboard bench --help` shows the bench's help
        from sbctl.bench.cli import main as bench_main

        return bench_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        if args.cmd == "token":
            s = _settings(args)
            secret = s.jwt_secret or auth.dev_secret(s.data_dir)
            print(auth.issue(secret, args.user, ttl_sec=args.ttl))
            return 0
        if args.cmd == "nats-config":
            from switchboard.bus import streams

            for path in streams.write_json(_settings(args), args.out):
                print(path)
            return 0
        if args.cmd == "bench":
            from sbctl.bench.cli import main as bench_main

            return bench_main(args.rest)
        if args.cmd == "init":
            return asyncio.run(_init(_settings(args)))
        if args.cmd == "config":
            return args.run(args)
        if args.cmd == "trace":
            from sbctl import trace as trace_cli

            return trace_cli.run(args)
        return _serve(args)
    except SwitchboardError as exc:
        print(f"switchboard: {log.redact(exc.message)}", file=sys.stderr)
        return 2


# Seconds `switchboard init` tries to reach NATS before it gives up (a role
# retries forever; the admin step is run by a person or a Job that retries).
INIT_CONNECT_SEC = 5.0


async def _init(s: Settings) -> int:
    """``switchboard init``: the admin step (sbctl/init.py)."""
    import nats
    import nats.errors
    import nats.js.errors

    from switchboard import tls
    from sbctl.init import init_fabric

    refused: list[str] = []
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        (refused if "permissions violation" in str(exc).lower() else errors).append(str(exc) or type(exc).__name__)

    try:
        # nats-py keeps retrying a refused first connect: bounded here. TLS as
        # every role (nats_tls_*; a server without TLS is then refused).
        nc = await asyncio.wait_for(nats.connect(servers=s.nats_servers, name="switchboard-init", error_cb=on_error,
                                                 allow_reconnect=False, max_reconnect_attempts=0,
                                                 connect_timeout=INIT_CONNECT_SEC, **tls.nats_py_options(s)),
                                    INIT_CONNECT_SEC)
    except (OSError, nats.errors.Error, asyncio.TimeoutError) as exc:
        why = str(exc) or (errors[-1] if errors else type(exc).__name__)
        print(f"switchboard init: cannot connect to NATS at {log.redact_url(s.nats_url)}: {log.redact(why)}",
              file=sys.stderr)
        return 1
    try:
        tls.require_tls(nc, s)
        for line in await init_fabric(nc, s):
            print(f"ok: {line}", flush=True)
    except (nats.errors.TimeoutError, asyncio.TimeoutError):
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


def _serve(args: argparse.Namespace) -> int:
    extra = {}
    if getattr(args, "metrics_listen", None):  # a child of `up`: metrics on a loopback port of its own
        extra["metrics_port"] = int(args.metrics_listen.rpartition(":")[2])
    s = _settings(args, **extra)
    if not s.jwt_secret:
        s = s.replace(jwt_secret=auth.dev_secret(s.data_dir))
    if args.cmd == "up" and getattr(args, "store", None) is None and s.store_url == "sqlite:///switchboard.db":
        s = s.replace(store_url=f"sqlite:///{s.data_dir}/switchboard.db")
    if args.cmd == "up":
        from sbctl.devmode import up_dev_signin

        s = s.replace(dev_signin=up_dev_signin(s.host, disabled=args.no_dev_signin))
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
            print(f"switchboard up: {exc}", file=sys.stderr)
            return 2
        return asyncio.run(serve_up(args, s, layout, embedded=embedded, nats_port=args.nats_port))
    if args.cmd == "up":
        roles = ALL_ROLES
    elif args.cmd == "run":
        roles = tuple(r.strip() for r in args.roles.split("+") if r.strip())
        bad = [r for r in roles if r not in ALL_ROLES]
        if bad or not roles:
            print(f"switchboard run: unknown roles {bad}; roles are {', '.join(ALL_ROLES)}", file=sys.stderr)
            return 2
    else:
        roles = (args.cmd,)
    from sbctl.fabric import run

    listen = getattr(args, "metrics_listen", None)
    peers = tuple(p for p in (getattr(args, "metrics_peers", "") or "").split(",") if p)

    parent = os.getppid()

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        # Only `up --layout single` (in-process, its own NATS or one given
        # with --nats) runs the admin step; role processes check and use.
        async with run(s, roles, embedded_nats=embedded, nats_port=getattr(args, "nats_port", 0),
                       create_streams=args.cmd == "up",
                       metrics_host=listen.rpartition(":")[0] if listen else None, metrics_peers=peers) as fab:
            if fab.edge is not None:
                ws, http = ("wss", "https") if s.tls_cert else ("ws", "http")
                note = "; dev sign-in on" if s.dev_signin else ""
                print(f"Switchboard is up: {ws}://{s.host}:{fab.edge.port}/ws  "
                      f"(web app: {http}://{s.host}:{fab.edge.port}/{note})", flush=True)
                print(f"NATS: {log.redact_url(fab.settings.nats_url)}   token: switchboard token USER --data {s.data_dir}",
                      flush=True)
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

    asyncio.run(serve())
    return 0


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
