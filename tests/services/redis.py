"""A real redis-server for the tests, on a free loopback port.

The binary is Debian's ``redis-server`` (scripts/test installs it when it is
missing and it runs as root). Nothing is persisted (``--save "" --appendonly
no``), and the working directory is a pytest temp dir, so a run leaves no
files behind.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sbctl import procs
from sbctl.embedded import free_port
from tests.services.common import die_with_parent, log_tail, require_service

HOW_TO_ENABLE = "run scripts/test as root (it installs Debian's redis-server), or apt-get install redis-server"


class RedisStartError(RuntimeError):
    pass


def redis_binary() -> str | None:
    """$SB_REDIS_SERVER if set (a path), else redis-server from PATH or /usr/bin."""
    override = os.environ.get("SB_REDIS_SERVER")
    if override:
        return override if os.access(override, os.X_OK) else None
    found = shutil.which("redis-server")
    if found:
        return found
    for candidate in ("/usr/bin/redis-server", "/usr/sbin/redis-server", "/usr/local/bin/redis-server"):
        if Path(candidate).is_file():
            return candidate
    return None


@dataclass(kw_only=True)
class RedisServer:
    """One redis-server child process; ``stop()`` then ``start()`` keeps the port,
    so outage tests can take Redis away and bring it back at the same URL."""

    binary: str
    workdir: Path
    host: str = "127.0.0.1"
    port: int = 0  # 0: pick a free port on the first start
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def log_path(self) -> Path:
        return self.workdir / "redis.log"

    def start(self, timeout: float = 20.0) -> RedisServer:
        """Start (no-op if running) and wait until PING answers."""
        if self.running:
            return self
        if self.port == 0:
            self.port = free_port(self.host)
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [self.binary, "--save", "", "--appendonly", "no", "--port", str(self.port),
                "--bind", self.host, "--daemonize", "no", "--dir", str(self.workdir),
                "--logfile", str(self.log_path)]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                raise RedisStartError(f"redis-server exited with {code}: {log_tail(self.log_path)}")
            if self.ping():
                return self
            time.sleep(0.05)
        self.stop()
        raise RedisStartError(f"redis-server did not answer PING on {self.host}:{self.port} within {timeout}s: "
                              f"{log_tail(self.log_path)}")

    def stop(self, timeout: float = 10.0) -> None:
        p, self.process = self.process, None
        procs.terminate(p, timeout)

    def kill(self) -> None:
        """SIGKILL, for crash tests."""
        p, self.process = self.process, None
        procs.kill(p)

    def command(self, inline: bytes, timeout: float = 2.0) -> bytes:
        """Send one inline command (``b"PING"``) and return the first reply line."""
        with socket.create_connection((self.host, self.port), timeout=timeout) as s:
            s.sendall(inline + b"\r\n")
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                reply += chunk
        return reply.strip()

    def ping(self) -> bool:
        try:
            return self.command(b"PING", timeout=0.5) == b"+PONG"
        except OSError:
            return False

    def flushall(self) -> None:
        reply = self.command(b"FLUSHALL")
        if reply != b"+OK":
            raise RedisStartError(f"FLUSHALL answered {reply!r}")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The session's redis-server. Outage tests may stop()/kill() it but must
    start() it again (``redis_clean`` also restarts it for the next test)."""
    binary = redis_binary()
    if binary is None:
        require_service("redis", "redis-server not found ($SB_REDIS_SERVER, PATH, /usr/bin)", HOW_TO_ENABLE)
    server = RedisServer(binary=binary, workdir=tmp_path_factory.mktemp("redis"))
    try:
        server.start()
    except (RedisStartError, OSError) as exc:
        server.stop()
        require_service("redis", f"redis-server did not start: {exc}", HOW_TO_ENABLE)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    """``redis://127.0.0.1:<port>/0`` of the session's redis-server."""
    return redis_server.url


@pytest.fixture
def redis_clean(redis_server: RedisServer) -> str:
    """The Redis URL, with the server running and every database empty."""
    redis_server.start()
    redis_server.flushall()
    return redis_server.url
