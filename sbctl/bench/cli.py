"""``switchboard bench``: delivery | idle | archiver | presence | receipts | fuzz | storm | faults.

Every run prints the command line that reproduces it; ``--json`` prints the
report as JSON instead of a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from sbctl.bench.report import command_line, render_delivery, render_idle


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="switchboard bench", description="load generators and reports")
    sub = ap.add_subparsers(dest="what", required=True)

    d = sub.add_parser("delivery", help="clients sending at a fixed rate: latency, throughput, loss, CPU per message")
    d.add_argument("--clients", type=int, default=None,
                   help="WebSocket clients, one user each (default: 200, or more if the rate needs them to stay "
                        "under the edge's 50 frames/s per connection: rate/40)")
    d.add_argument("--rate", type=float, default=2000, help="total messages/s sent")
    d.add_argument("--duration", type=float, default=10, help="measured seconds of sending")
    d.add_argument("--warmup", type=float, default=1.0,
                   help="seconds of sending before the measured window: checked for correctness, counted in CPU, "
                        "not in the latency percentiles (default 1)")
    d.add_argument("--poll-ms", type=float, default=0.0,
                   help="load generator reads its sockets every N ms instead of per event: less CPU per message "
                        "at low rates, latencies up to N ms late (default 0)")
    d.add_argument("--group-size", type=int, default=2,
                   help="2 = 1:1 pairs (send with 'to'); >2 = groups made with conv.create "
                        "(e.g. --group-size 100 --rate 200)")
    d.add_argument("--procs", type=int, default=1, help="load-generator processes")
    d.add_argument("--ws", help="an existing edge (ws://host:port/ws); default: start `switchboard up`")
    d.add_argument("--pid", type=int, action="append", default=[],
                   help="with --ws: a fabric process to measure, with its children (repeatable; "
                        "the pid of `switchboard up` covers all of it)")
    d.add_argument("--data", help="with --ws: data dir holding the dev JWT secret")
    d.add_argument("--secret", help="with --ws: the JWT secret")
    d.add_argument("--layout", help="`switchboard up --layout` of the fabric the bench starts")
    d.add_argument("--lift-limits", action="store_true",
                   help="start the fabric with the per-connection rate limit lifted (default: the edge's "
                        "defaults, paced by using enough clients)")
    d.add_argument("--fake-edge", action="store_true",
                   help="against an in-memory fake edge instead of a fabric: the load generator's own cost")
    d.add_argument("--quiet", action="store_true", help="no progress line per second")
    d.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")

    i = sub.add_parser("idle", help="idle connections on one edge: RSS per connection")
    i.add_argument("--connections", type=int, default=10_000,
                   help="idle WebSocket connections to open, one user each (default 10,000)")
    i.add_argument("--procs", type=int, default=2, help="client processes holding the connections (default 2)")
    i.add_argument("--ws", help="an existing edge; then --pid names its process")
    i.add_argument("--pid", type=int, help="with --ws: pid of the edge process to measure")
    i.add_argument("--data", help="with --ws: data dir holding the dev JWT secret")
    i.add_argument("--secret", help="with --ws: the JWT secret")
    i.add_argument("--settle", type=float, default=3.0, help="seconds to wait before measuring RSS (default 3)")
    i.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")

    sub.add_parser("archiver", help="archiver throughput and history latency (sbctl/bench/archiver.py); "
                   "options: switchboard bench archiver --help")

    sub.add_parser("receipts", help="1:1 message cost with and without delivered+read receipts "
                   "(sbctl/bench/receipts.py); options: switchboard bench receipts --help")

    sub.add_parser("ring", help="kill -9 one node of a 3-node Cassandra ring under load: archiving and history "
                   "keep working, nothing missing (sbctl/bench/ring.py); options: switchboard bench ring --help")

    f = sub.add_parser("fuzz", help="black-box fuzzer of a live edge: hostile and mutated frames over many "
                       "connections while a control pair exchanges messages (sbctl/bench/fuzz.py)")
    f.add_argument("--frames", type=int, default=1_000_000, help="frames to send in total (default 1,000,000)")
    f.add_argument("--rate", type=float, default=2000, help="frames/s offered in total (default 2000)")
    f.add_argument("--connections", type=int, default=None,
                   help="fuzz connections open at a time (default: enough for <= 40 frames/s each, at least 16)")
    f.add_argument("--seed", type=int, default=None, help="seed of the frame generator (default: random, printed)")
    f.add_argument("--ws", help="an existing edge (ws://host:port/ws); default: start `switchboard up`")
    f.add_argument("--pid", type=int, action="append", default=[],
                   help="with --ws: a fabric process to check for crashes (repeatable; children included)")
    f.add_argument("--data", help="with --ws: data dir holding the dev JWT secret")
    f.add_argument("--secret", help="with --ws: the JWT secret")
    f.add_argument("--max-silence", type=float, default=5.0,
                   help="seconds the control pair may go without a delivery (default 5)")
    f.add_argument("--quiet", action="store_true", help="no progress line per second")
    f.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")

    from sbctl.bench.storm import add_parser as add_storm

    add_storm(sub)

    from sbctl.bench.faults import add_parser as add_faults

    add_faults(sub)

    p = sub.add_parser("presence", help="presence heartbeats and tracker CPU (sbctl/bench/tracker.py); "
                       "with --watchers: CPU, bytes and latency per change per watcher (sbctl/bench/presence.py)")
    p.add_argument("--users", type=int, default=20_000, help="users online on one reporting edge (default 20,000)")
    p.add_argument("--seconds", type=float, default=30.0, help="measured seconds of heartbeats (default 30)")
    p.add_argument("--interval-sec", type=float, default=10.0,
                   help="the edge's heartbeat interval in seconds (default 10, as [presence] heartbeat_sec)")
    p.add_argument("--presence-url", default="memory://",
                   help="the tracker's presence backend: memory:// or redis://host:port/db (default memory://)")
    p.add_argument("--nats", help="NATS URL; default: an embedded nats-server")
    p.add_argument("--watchers", type=int, default=None,
                   help="WebSocket clients watching --subjects users on a `switchboard up` the bench starts: "
                        "cost per presence change per watcher (the options below belong to this mode)")
    p.add_argument("--subjects", type=int, default=8, help="with --watchers: users whose presence changes")
    p.add_argument("--rate", type=float, default=4.0,
                   help="with --watchers: presence changes/s, all subjects together (connects and disconnects)")
    p.add_argument("--duration", type=float, default=10.0, help="with --watchers: seconds of changes per phase")
    p.add_argument("--layout", help="with --watchers: `switchboard up --layout` of the fabric the bench starts")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    return ap


def main(argv: list[str]) -> int:
    cmd = command_line(argv)
    # archiver and receipts own their options (and their --help).
    helping = bool({"-h", "--help"} & set(argv))
    if argv[:1] == ["archiver"]:
        if not helping:
            print(f"# {cmd}", file=sys.stderr, flush=True)
        return _archiver(argv[1:], cmd)
    if argv[:1] == ["receipts"]:
        if not helping:
            print(f"# {cmd}", file=sys.stderr, flush=True)
        from sbctl.bench.receipts import main as receipts_main

        return receipts_main(argv[1:])  # its options belong to bench.receipts
    if argv[:1] == ["ring"]:
        if not helping:
            print(f"# {cmd}", file=sys.stderr, flush=True)
        from sbctl.bench.ring import main as ring_main

        return ring_main(argv[1:], cmd)  # its options belong to bench.ring
    args = build_parser().parse_args(argv)
    print(f"# {cmd}", file=sys.stderr, flush=True)
    if args.what == "delivery":
        from sbctl.bench.delivery import DeliveryParams, run

        params = DeliveryParams(clients=args.clients, rate=args.rate, duration=args.duration,
                                group_size=args.group_size, procs=args.procs, ws_url=args.ws, pids=args.pid,
                                data_dir=args.data, secret=args.secret, lift_limits=args.lift_limits,
                                layout=args.layout, progress=not args.quiet, fake_edge=args.fake_edge,
                                warmup=args.warmup, poll_ms=args.poll_ms)
        try:
            rep = run(params, command=cmd)
        except ValueError as exc:
            print(f"switchboard bench delivery: {exc}", file=sys.stderr)
            return 2
        print(rep.to_json() if args.json else render_delivery(rep))
        return 0 if rep.ok else 1
    if args.what == "idle":
        from sbctl.bench.idle import IdleParams, run as run_idle

        rep = run_idle(IdleParams(connections=args.connections, procs=args.procs, ws_url=args.ws, pid=args.pid,
                                  data_dir=args.data, secret=args.secret, settle=args.settle), command=cmd)
        print(rep.to_json() if args.json else render_idle(rep))
        return 0 if rep.connected == rep.requested else 1
    if args.what == "presence" and args.watchers is not None:
        from sbctl.bench.presence import WatchParams, render as render_watch, run as run_watch

        try:
            wrep = run_watch(WatchParams(watchers=args.watchers, subjects=args.subjects, rate=args.rate,
                                         duration=args.duration, layout=args.layout), command=cmd)
        except ValueError as exc:
            print(f"switchboard bench presence: {exc}", file=sys.stderr)
            return 2
        print(wrep.to_json() if args.json else render_watch(wrep))
        return 0 if wrep.ok else 1
    if args.what == "presence":
        return _presence(args, cmd)
    if args.what == "storm":
        from sbctl.bench.storm import main as storm_main

        return storm_main(args, cmd)
    if args.what == "faults":
        from sbctl.bench.faults import main as faults_main

        return faults_main(args, cmd)
    if args.what == "fuzz":
        from sbctl.bench.fuzz import FuzzParams, render, run as run_fuzz

        try:
            rep = run_fuzz(FuzzParams(frames=args.frames, rate=args.rate, connections=args.connections,
                                      seed=args.seed, ws_url=args.ws, pids=args.pid, data_dir=args.data,
                                      secret=args.secret, max_silence=args.max_silence, progress=not args.quiet),
                           command=cmd)
        except ValueError as exc:
            print(f"switchboard bench fuzz: {exc}", file=sys.stderr)
            return 2
        print(rep.to_json() if args.json else render(rep))
        return 0 if rep.ok else 1
    return 2


def _print_result(result: object, cmd: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"command": cmd, "result": result}, indent=2, default=str))
    else:
        if isinstance(result, dict):
            from sbctl.bench.report import table

            print(table(list(result.items())))
        else:
            print(result)
        print("\nreproduce: " + cmd)


def _presence(args: argparse.Namespace, cmd: str) -> int:
    try:
        from sbctl.bench.tracker import run_on
    except ImportError as exc:
        print(f"switchboard bench presence: not available ({exc})", file=sys.stderr)
        return 2

    result = run_on(args.nats, args.users, args.seconds, interval_sec=args.interval_sec,
                    presence_url=args.presence_url)
    _print_result(result, cmd, args.json)
    return 0


def _archiver(rest: list[str], cmd: str) -> int:
    """Delegates to ``sbctl.bench.archiver``: its ``main(argv)`` if it has one, else ``run()``."""
    try:
        import sbctl.bench.archiver as ab  # type: ignore[import-not-found]
    except ImportError as exc:
        print(f"switchboard bench archiver: not available ({exc})", file=sys.stderr)
        return 2
    if hasattr(ab, "main"):
        rc = ab.main(rest)
        print("\nreproduce: " + cmd)
        return int(rc or 0)
    result = ab.run()
    if asyncio.iscoroutine(result):
        result = asyncio.run(result)
    _print_result(result, cmd, "--json" in rest)
    return 0
