"""Stopping child processes (nats-server here; redis-server and Cassandra in the tests)."""

from __future__ import annotations

import signal
import subprocess


def terminate(p: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """SIGTERM (the server flushes and exits), SIGKILL if it is not gone after ``timeout``."""
    if p is None or p.poll() is not None:
        return
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        kill(p)


def kill(p: subprocess.Popen | None) -> None:
    """SIGKILL and reap, for crash tests and as the last resort."""
    if p is not None and p.poll() is None:
        p.kill()
        p.wait()
