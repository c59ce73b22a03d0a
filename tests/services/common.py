"""What every real-service fixture shares.

``require_service`` is the one place that decides between skip and fail: with
``CI=true`` a service that is missing or does not start FAILS the run (a green
CI must never hide tests that did not run); elsewhere the test is skipped with
a message that says how to enable it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import time
from pathlib import Path
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes", "on")


def require_service(name: str, reason: str, how_to_enable: str) -> NoReturn:
    """Fail (under CI=true) or skip (elsewhere) a test that needs ``name``."""
    message = f"{name} unavailable: {reason}"
    if in_ci():
        pytest.fail(f"{message} (CI=true: a missing service is a failure)", pytrace=False)
    pytest.skip(f"{message}. To enable: {how_to_enable}")


def die_with_parent() -> None:
    """``preexec_fn`` for service children: SIGTERM them when pytest dies.

    Even a pytest killed with SIGKILL (a CI timeout) then leaves no server
    behind. Popen must be called from the main thread: the signal fires when
    the *thread* that forked exits.
    """
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def wait_port(host: str, port: int, timeout: float) -> bool:
    """True once something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def log_tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""
