"""``bench idle``: N idle connections (hello done) on one edge; RSS per connection.

The edge runs in its own process (``switchboard up`` in a subprocess, or an
existing one given by ``--ws`` and ``--pid``); the connections are held by
``procs`` client processes, spread over loopback source addresses
127.0.0.1-8 so ephemeral ports do not run out. The figure is the growth of
the edge process's RSS divided by the connections open, measured after the
process settled.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import time
import uuid
from dataclasses import dataclass
from multiprocessing.connection import Connection

import psutil
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from sbctl.bench.fabric import FabricProcess, Sampler, prepare_client_process, raise_nofile
from sbctl.bench.report import IdleReport, per_conn_kib
from switchboard import auth

SOURCES = [f"127.0.0.{i}" for i in range(1, 9)]
# Admission (new connections/s) is the edge's reconnect-storm guard; the
# bench keeps its default and retries 503 answers with jittered backoff.
CONNECT_CONCURRENCY = 100


@dataclass(kw_only=True)
class IdleParams:
    connections: int
    procs: int = 2
    ws_url: str | None = None
    pid: int | None = None
    data_dir: str | None = None
    secret: str | None = None
    settle: float = 3.0


def _holder(ws_url: str, tokens: list[str], offset: int, conn: Connection) -> None:
    prepare_client_process()

    async def main() -> None:
        import random

        sem = asyncio.Semaphore(CONNECT_CONCURRENCY)
        failed: dict[str, int] = {}
        sockets = []

        async def one(i: int, token: str) -> None:
            delay = 0.05
            async with sem:
                for _ in range(30):
                    try:
                        ws = await connect(f"{ws_url}?token={token}", compression=None, ping_interval=None,
                                           open_timeout=60, local_addr=(SOURCES[(offset + i) % len(SOURCES)], 0))
                        await ws.send('{"type":"hello","cursor":null}')
                        while True:
                            data = await ws.recv()
                            if '"synced"' in data:
                                break
                        sockets.append(ws)
                        return
                    except InvalidStatus as exc:
                        key = f"http_{exc.response.status_code}"
                        failed[key] = failed.get(key, 0) + 1
                        await asyncio.sleep(delay * (0.5 + random.random()))
                        delay = min(delay * 2, 2.0)
                    except (TimeoutError, OSError, InvalidHandshake, ConnectionClosed) as exc:
                        # An overloaded edge may drop a handshake (its 10 s
                        # open timeout): count it and try again.
                        key = type(exc).__name__
                        failed[key] = failed.get(key, 0) + 1
                        await asyncio.sleep(delay * (0.5 + random.random()))
                        delay = min(delay * 2, 2.0)

        await asyncio.gather(*(one(i, t) for i, t in enumerate(tokens)))
        conn.send(("open", len(sockets), failed))
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)

    asyncio.run(main())


def run(p: IdleParams, *, command: str) -> IdleReport:
    limit = raise_nofile()
    notes: list[str] = []
    fabric = None
    if p.ws_url is None:
        fabric = FabricProcess().__enter__()
        ws_url, token = fabric.ws_url, fabric.token
        edge = fabric.edge_process()
        procs = fabric.processes()
    else:
        if p.pid is None:
            raise SystemExit("--ws needs --pid (the edge process to measure)")
        ws_url, edge = p.ws_url, psutil.Process(p.pid)
        secret = p.secret or auth.dev_secret(p.data_dir or ".sbdata")
        token = lambda u: auth.issue(secret, u, ttl_sec=86400)  # noqa: E731
        procs = {"edge": edge}
    edge_limit = edge.rlimit(psutil.RLIMIT_NOFILE)[0] if hasattr(edge, "rlimit") else limit
    if p.connections > edge_limit - 200:
        notes.append(f"the edge's open-file limit is {edge_limit} (hard limit of this host): "
                     f"{p.connections} connections need that many sockets plus ~100 other fds")
    try:
        time.sleep(p.settle)
        before = edge.memory_info().rss
        tag = uuid.uuid4().hex[:6]
        ctx = mp.get_context("spawn")
        n = max(1, p.procs)
        holders = []
        t0 = time.monotonic()
        for k in range(n):
            idx = range(k, p.connections, n)
            tokens = [token(f"i{tag}u{i}") for i in idx]
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_holder, args=(ws_url, tokens, k, child), daemon=True)
            proc.start()
            holders.append((proc, parent))
        opened, failed = 0, {}
        for _, c in holders:
            try:
                _, k_open, k_failed = c.recv()
            except EOFError:
                notes.append("a client process died while connecting")
                continue
            opened += k_open
            for key, v in k_failed.items():
                failed[key] = failed.get(key, 0) + v
        connect_sec = time.monotonic() - t0
        for i, (proc, _) in enumerate(holders):
            procs[f"client-{i}"] = psutil.Process(proc.pid)
        sampler = Sampler(procs).start()
        time.sleep(p.settle)
        after = edge.memory_info().rss
        stats = sampler.stop()
        for _proc, c in holders:
            try:
                c.send("close")
            except OSError:
                pass
        for proc, _ in holders:
            proc.join(30)
            if proc.is_alive():
                proc.terminate()
    finally:
        if fabric is not None:
            fabric.__exit__(None, None, None)
    if "http_503" in failed:
        notes.append("http_503 = admission limit answers (retried with backoff), not lost connections")
    return IdleReport(command=command, params={"connections": p.connections, "procs": n, "ws": ws_url},
                      requested=p.connections, connected=opened, failed=failed,
                      rss_before_mib=round(before / 2**20, 1), rss_after_mib=round(after / 2**20, 1),
                      rss_per_conn_kib=per_conn_kib(before, after, opened), connect_seconds=round(connect_sec, 2),
                      processes=stats, notes=notes)
