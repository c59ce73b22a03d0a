"""The fabric under test, started as its own process, and its processes.

``python -m sbctl up --data TMP --port FREE`` in a subprocess, so its
RSS and CPU are measured apart from the load generator. ``up`` supervises
nats-server and the role processes (sbctl/supervisor.py); each of
its children is found with psutil and measured on its own
(:func:`fabric_processes`), as are the processes of an existing deployment
given by pid.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

import psutil

from sbctl.bench.report import ProcStat, cpu_pct
from sbctl.embedded import free_port
from switchboard import auth

_UP_LINE = re.compile(r"ws://[^ ]+/ws")
_NATS_LINE = re.compile(r"NATS: (nats://\S+)")


def prepare_client_process() -> None:
    """Start of a load-generator process: many sockets, and uvloop if present."""
    raise_nofile()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass


def raise_nofile() -> int:
    """Raise the soft fd limit to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass
class FabricProcess:
    """``switchboard up`` in a subprocess; use as a context manager."""

    env: dict[str, str] = field(default_factory=dict)  # SWITCHBOARD_<FIELD> overrides
    layout: str | None = None  # `up --layout`; None: up's default
    data_dir: str | None = None
    startup_timeout: float = 60.0
    proc: subprocess.Popen | None = None
    ws_url: str = ""
    nats_url: str = ""
    _tmp: str | None = None
    _lines: list[str] = field(default_factory=list)

    def __enter__(self) -> FabricProcess:
        if self.data_dir is None:
            self._tmp = self.data_dir = tempfile.mkdtemp(prefix="sb-bench-")
        port = free_port()
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sbctl", "up", "--data", self.data_dir, "--port", str(port),
             "--log-level", "warning", *(["--layout", self.layout] if self.layout else [])],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
            preexec_fn=raise_nofile,  # rlimits survive exec: the edge may hold many sockets
        )
        deadline = time.monotonic() + self.startup_timeout
        assert self.proc.stdout is not None
        while not self.nats_url:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("fabric exited during start-up:\n" + "".join(self._lines[-30:]))
            self._lines.append(line)
            if m := _UP_LINE.search(line):
                self.ws_url = m.group(0)
            if m := _NATS_LINE.search(line):
                self.nats_url = m.group(1)
            if time.monotonic() > deadline:
                raise RuntimeError("fabric did not start in time")
        # Keep reading its output so a chatty process never blocks on a full pipe.
        threading.Thread(target=self._pump, daemon=True).start()
        return self

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.append(line)
            del self._lines[:-2000]

    def tail(self, n: int = 20) -> str:
        return "".join(self._lines[-n:])

    def problems(self, limit: int = 3) -> list[str]:
        """Error lines the fabric logged (its log level is warning), for the report."""
        bad = [ln.strip() for ln in self._lines if any(w in ln for w in ("error", "Error", "exception", "Traceback"))]
        return bad[:limit]

    def token(self, user: str) -> str:
        assert self.data_dir is not None
        return auth.issue(auth.dev_secret(self.data_dir), user, ttl_sec=86400)

    def processes(self) -> dict[str, psutil.Process]:
        """name -> process: ``up`` and every child (nats-server, each role process)."""
        assert self.proc is not None
        return fabric_processes([self.proc.pid])

    def edge_process(self) -> psutil.Process:
        """The process serving the WebSocket port (the edge child, or ``up`` itself with --layout single)."""
        for name, p in self.processes().items():
            if "edge" in name.split("+") or name == "up (every role)":
                return p
        raise RuntimeError("no edge process among the fabric's")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)


def label(p: psutil.Process) -> str:
    """What a fabric process is: "nats-server", "sequencer", "archiver+presence+pusher", "up (supervisor)"..."""
    try:
        name, cmd = p.name(), p.cmdline()
    except psutil.Error:
        return f"pid {p.pid}"
    if "nats-server" in name:
        return "nats-server"
    # python -m sbctl ROLE ... | .../bin/switchboard ROLE ...
    for i, a in enumerate(cmd):
        if a == "sbctl" and i > 0 and cmd[i - 1] == "-m" or a.endswith("/switchboard") and i <= 1:
            rest = cmd[i + 1:]
            if not rest:
                break
            if rest[0] == "run" and len(rest) > 1:
                return rest[1]
            if rest[0] == "up":
                has_roles = any(label(c) not in ("nats-server",) for c in _children(p))
                return "up (supervisor)" if has_roles else "up (every role)"
            return rest[0]
    return name


def _children(p: psutil.Process) -> list[psutil.Process]:
    try:
        return p.children()
    except psutil.Error:
        return []


def fabric_processes(pids: list[int]) -> dict[str, psutil.Process]:
    """label -> process for each pid and all its descendants (the children of ``up``)."""
    out: dict[str, psutil.Process] = {}
    for pid in pids:
        root = psutil.Process(pid)
        try:
            family = [root, *root.children(recursive=True)]
        except psutil.Error:
            family = [root]
        for p in family:
            name = label(p)
            out[name if name not in out else f"{name} {p.pid}"] = p
    return out


class Sampler:
    """Samples RSS and CPU of named processes in a thread during a window."""

    def __init__(self, procs: dict[str, psutil.Process], interval: float = 0.25) -> None:
        self.procs = procs
        self.interval = interval
        self._peak = {k: 0 for k in procs}
        self._cpu0: dict[str, float] = {}
        self._t0 = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _cpu(p: psutil.Process) -> float:
        t = p.cpu_times()
        return t.user + t.system

    def start(self) -> Sampler:
        self._t0 = time.monotonic()
        self._host0 = psutil.cpu_times()
        for k, p in self.procs.items():
            try:
                self._cpu0[k] = self._cpu(p)
            except psutil.Error:
                self._cpu0[k] = 0.0
        self._thread.start()
        return self

    def _sample(self) -> None:
        for k, p in self.procs.items():
            try:
                self._peak[k] = max(self._peak[k], p.memory_info().rss)
            except psutil.Error:
                pass

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def stop(self) -> list[ProcStat]:
        """Stop sampling; CPU is averaged over the window since :meth:`start`."""
        self._stop.set()
        self._thread.join()
        wall = time.monotonic() - self._t0
        out = []
        for k, p in self.procs.items():
            try:
                rss = p.memory_info().rss
                cpu = self._cpu(p) - self._cpu0.get(k, 0.0)
            except psutil.Error:
                rss, cpu = 0, 0.0
            peak = max(self._peak[k], rss)
            out.append(ProcStat(role=k, pid=p.pid, rss_mib=round(rss / 2**20, 1),
                                peak_rss_mib=round(peak / 2**20, 1), cpu_pct=cpu_pct(cpu, wall),
                                cpu_sec=round(cpu, 3)))
        # The whole host: on a shared machine other work competes for the cores.
        h0, h1 = self._host0, psutil.cpu_times()
        busy = (sum(h1) - h1.idle - getattr(h1, "iowait", 0)) - (sum(h0) - h0.idle - getattr(h0, "iowait", 0))
        ours = sum(p.cpu_pct for p in out)
        host = cpu_pct(busy, wall)
        out.append(ProcStat(role=f"other processes on host ({psutil.cpu_count()} cores)", pid=0, rss_mib=0.0,
                            peak_rss_mib=0.0, cpu_pct=round(max(0.0, host - ours), 1)))
        return out
