"""``switchboard trace``: the hops of one message, as a timeline or JSON lines.

    switchboard trace CONV SEQ            [--nats URL | --data DIR] [--config F] [--json]
    switchboard trace --id MSG_ID [--conv CONV] [--sender USER] [...]

Reads the trace stream (switchboard/trace_read.py) with a NATS user that may
read it (``admin`` in nats/accounts.conf; the embedded server of ``switchboard
up`` has no accounts). ``--data DIR``: the data directory of a local ``up``,
whose embedded nats-server logged the port it listens on to
``DIR/nats/nats-server.log`` (the same place for ``--layout single``).

Exit codes: 0 records found, 1 none (or no such message; one line says why a
message may have no trace), 2 bad arguments, 69 NATS not reachable within
CONNECT_SEC (one line), 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import re
import sys
from pathlib import Path

from switchboard import log, tls
from switchboard.config import Settings
from switchboard.errors import SwitchboardError
from switchboard.trace import TraceRecord

# Seconds to reach NATS, retrying (a person is waiting; a dead server should
# say so fast, a restarting one gets a few tries).
CONNECT_SEC = 5.0
# Seconds one read of the trace stream may take.
READ_SEC = 5.0

_LISTENING = re.compile(r"Listening for client connections on (\S+)")
# Detail fields in the order the timeline shows them.
_DETAILS = ("seq", "stream_seq", "user", "device", "cursor", "members", "mode", "provider", "reason", "code")


def add_parser(sub) -> None:
    p = sub.add_parser("trace", help="show the hops of one traced message (CONV SEQ, or --id MSG_ID)",
                       description="Show every recorded hop of one message: edge, NATS server, sequencer, "
                                   "devices, push, archive. Exit 0: found; 1: no trace records; 2: bad arguments.")
    p.add_argument("conv", nargs="?", help="conversation id")
    p.add_argument("seq", nargs="?", type=int, help="the message's seq in the conversation")
    p.add_argument("--id", dest="msg_id", help="the sender's message id (instead of CONV SEQ)")
    p.add_argument("--conv", dest="conv_opt", metavar="CONV", help="with --id: only this conversation")
    p.add_argument("--sender", help="with --id: only this sender")
    p.add_argument("--nats", help="NATS URL of a user allowed to read the trace stream (admin; "
                                  "default SWITCHBOARD_NATS_URL)")
    p.add_argument("--data", help="data directory of a local `switchboard up` (finds its NATS)")
    p.add_argument("--config", help="TOML settings file (subject_prefix, stream_prefix, nats_tls_*...)")
    p.add_argument("--json", action="store_true", help="JSON lines, one record per line")


def data_dir_nats_url(data_dir: str) -> str | None:
    """The URL of the embedded nats-server of ``up --data DIR`` (the last
    listen line of its log: the log is appended to by every start)."""
    path = Path(data_dir) / "nats" / "nats-server.log"
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    found = _LISTENING.findall(text)
    return f"nats://{found[-1]}" if found else None


def run(args: argparse.Namespace) -> int:
    if args.msg_id is None and (args.conv is None or args.seq is None):
        print("switchboard trace: give CONV SEQ, or --id MSG_ID [--conv CONV]", file=sys.stderr)
        return 2
    if args.msg_id is not None and args.seq is not None:
        print("switchboard trace: give CONV SEQ or --id MSG_ID, not both", file=sys.stderr)
        return 2
    if args.msg_id is None and (args.conv_opt or args.sender):
        print("switchboard trace: --conv and --sender go with --id", file=sys.stderr)
        return 2
    url = args.nats
    if url is None and args.data:
        url = data_dir_nats_url(args.data)
        if url is None:
            print(f"switchboard trace: no embedded nats-server log in {args.data}/nats/ (was `switchboard up "
                  f"--data {args.data}` started here without --nats?); pass --nats URL", file=sys.stderr)
            return 2
    try:
        s = Settings.load(config_file=args.config, overrides={"nats_url": url, "data_dir": args.data})
        from switchboard.trace_read import TraceQuery

        if args.msg_id is not None:
            q = TraceQuery(id=args.msg_id, conv=args.conv_opt or args.conv, sender=args.sender)
        else:
            q = TraceQuery(conv=args.conv, seq=args.seq)
        return asyncio.run(_run(s, q, as_json=args.json))
    except SwitchboardError as exc:
        print(f"switchboard trace: {log.redact(exc.message)}", file=sys.stderr)
        return 2


async def _run(s: Settings, q, *, as_json: bool) -> int:
    from sbctl.fabric import first_connect
    from switchboard import trace_read
    from switchboard.errors import BadFrame, InvalidId, NotFound
    from switchboard.reach import EXIT_UNREACHABLE, Unreachable

    log.configure(s.log_level, s.log_json)  # the wait's lines go to stderr, never into --json output
    try:
        nc = await first_connect(s, "switchboard-trace", log.get("trace"), timeout_sec=CONNECT_SEC)
    except Unreachable as exc:
        print(f"switchboard trace: {log.redact(exc.message)}", file=sys.stderr)
        return EXIT_UNREACHABLE
    try:
        tls.require_tls(nc, s)
        try:
            reply = await trace_read.answer(nc, s, q, archive=trace_read.history_lookup(nc, s), timeout=READ_SEC)
        except (BadFrame, InvalidId) as exc:
            print(f"switchboard trace: {exc.message}", file=sys.stderr)
            return 2
        except NotFound as exc:
            print(f"switchboard trace: {exc.message}", file=sys.stderr)
            return 1
        if not reply.records:
            what = f"message {reply.id!r}" + (f" of {reply.conv!r}" if reply.conv else "")
            if q.seq is not None:
                what = f"message {q.seq} of {q.conv!r} (id {reply.id!r} from {reply.sender!r})"
            print(f"switchboard trace: no trace records for {what}: {await _why_none(nc, s)}", file=sys.stderr)
            return 1
        out = sys.stdout
        try:
            if as_json:
                for r in reply.records:
                    out.write(trace_read.encode(r).decode() + "\n")
            else:
                out.write(render(reply.records, seq=q.seq))
            out.flush()
        except BrokenPipeError:
            # The reader stopped early (`... --json | head -4`): it has what it
            # wanted. Point stdout at /dev/null so the flush at exit is quiet too.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        if reply.truncated:
            print(f"switchboard trace: only the first {len(reply.records)} records are shown", file=sys.stderr)
        return 0
    finally:
        with contextlib.suppress(Exception):
            await nc.close()


async def _why_none(nc, s: Settings) -> str:
    """One line: which messages have a trace, and for how long."""
    from switchboard.trace_read import stream_name

    max_age = s.trace_max_age_sec
    with contextlib.suppress(Exception):
        info = await nc.jetstream(timeout=READ_SEC).stream_info(stream_name(s))
        max_age = info.config.max_age or max_age
    rate = (f"1 in {round(1 / s.trace_sample):,}" if s.trace_sample > 0 else "off")
    return (f"only messages sent with \"trace\": true or hit by the sample (trace_sample {s.trace_sample:g}: "
            f"{rate}) are traced, and their records are kept {_age(max_age)} (stream {stream_name(s)})")


def _age(sec: float) -> str:
    if sec >= 3600 and sec % 3600 == 0:
        return f"{int(sec // 3600)} h"
    if sec >= 60 and sec % 60 == 0:
        return f"{int(sec // 60)} min"
    return f"{sec:g} s"


def _clock(ms: int) -> str:
    t = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    return t.strftime("%H:%M:%S.") + f"{ms % 1000:03d}"


def details(r: TraceRecord) -> str:
    """The fields of a record a person reads, ``key=value`` (NATS hops: the connection and subject)."""
    parts = []
    if r.role == "nats":
        conn = getattr(r, "conn_kind", None)
        if conn:
            cid = getattr(r, "cid", None)
            parts.append(f"{conn}" + (f" cid:{cid}" if cid is not None else ""))
        if getattr(r, "conn", None):
            parts.append(f"\"{r.conn}\"")
        if getattr(r, "subject", None):
            parts.append(("sub " if r.stage == "nats.egress" else "") + str(r.subject))
        for k in ("account", "stream", "hops", "hop", "error"):
            v = getattr(r, k, None)
            if v is not None:
                parts.append(f"{k}={v}")
        return "  ".join(parts)
    for k in _DETAILS:
        v = getattr(r, k, None)
        if v is not None:
            parts.append(f"{k}={v}")
    return "  ".join(parts)


def render(records: list[TraceRecord], *, seq: int | None = None) -> str:
    """The timeline: one block per message (one, unless --id matched several
    senders or conversations), one line per hop: wall time (UTC), +ms since
    the previous hop, stage, role/instance, details."""
    blocks: dict[tuple[str, str, str], list[TraceRecord]] = {}
    for r in records:
        blocks.setdefault((r.conv, r.sender, r.id), []).append(r)
    lines: list[str] = []
    for (conv, sender, mid), recs in blocks.items():
        stored = next((r.seq for r in recs if r.seq is not None and r.stage == "sequencer.stored"), seq)
        day = dt.datetime.fromtimestamp(recs[0].at / 1000, dt.UTC).strftime("%Y-%m-%d")
        if lines:
            lines.append("")
        lines.append(f"message {mid} from {sender} in {conv}" + (f", seq {stored}" if stored is not None else "")
                     + f": {len(recs)} hops, times UTC {day}")
        width = max(len(r.stage) for r in recs)
        who_w = max(len(f"{r.role}/{r.instance}") for r in recs)
        prev = None
        for r in recs:
            delta = f"+{r.at - prev}" if prev is not None else "+0"
            prev = r.at
            who = f"{r.role}/{r.instance}"
            lines.append(f"{_clock(r.at)} {delta:>7} ms  {r.stage:<{width}}  {who:<{who_w}}  {details(r)}".rstrip())
        total = recs[-1].at - recs[0].at
        lines.append(f"{'':12} {'=' + str(total):>7} ms  from first to last hop")
    return "\n".join(lines) + "\n"
