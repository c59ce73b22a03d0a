"""Signals while a process starts, and how it exits when a start fails.

A role process (``switchboard edge``, ``run``, ``up``...) may wait a long
time before it serves: for NATS, its store, its presence backend
(switchboard/reach.py, up to the ``connect_timeout_sec`` settings). SIGINT
and SIGTERM must stop it then too, at once:

- :class:`Stopper`: SIGINT/SIGTERM set ``stop``; while the process is
  starting they also cancel the starting task, so whatever it awaits (a
  connect attempt, the pause between two) ends now. Once the caller calls
  :meth:`Stopper.started`, a signal only sets ``stop`` (the orderly stop
  that drains and flushes).
- :func:`exit_soon`: a start that was given up (a signal, an unreachable
  dependency) has nothing left to finish, but the interpreter's exit waits
  for worker threads, and a driver's blocking connect (Cassandra's) may sit
  in one for its own timeout. After ``ABANDON_GRACE_SEC`` the process exits
  with the code it meant to anyway.

Exit codes of a role process: 0 stopped by SIGINT/SIGTERM, whether it had
started or was still waiting; 69 (``EXIT_UNREACHABLE``) a dependency did not
answer within its ``connect_timeout_sec``; 2 a setting or usage error; 1
anything else (a stop that hung, ``up`` giving up on a child).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading

from switchboard.reach import EXIT_UNREACHABLE

__all__ = ["ABANDON_GRACE_SEC", "EXIT_INTERRUPTED", "EXIT_UNREACHABLE", "Stopper", "exit_soon"]

# What a one-shot command (`switchboard init`, `trace`) exits with on Ctrl-C:
# the shell's convention for "ended by SIGINT" (128 + 2); it did not finish.
EXIT_INTERRUPTED = 130
# A start given up has no work in flight; 1 s is ample for the loop to close
# and short of a supervisor's patience (tests/e2e/test_unreachable_deps.py
# asks for an exit within 2 s of the signal).
ABANDON_GRACE_SEC = 1.0


class Stopper:
    """SIGINT/SIGTERM handling for a process that starts, then serves (see
    the module docstring). Create it inside the task that starts."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self._starting: asyncio.Task[object] | None = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._signal)

    def _signal(self) -> None:
        self.stop.set()
        if self._starting is not None:
            self._starting.cancel()

    def started(self) -> None:
        """From now on a signal asks for the orderly stop (``stop``) only."""
        self._starting = None

    def interrupted(self, exc: asyncio.CancelledError) -> bool:
        """True if ``exc`` is this stopper's cancel of the start (the task's
        cancel request is withdrawn: the caller returns normally); False
        for any other cancel, which the caller re-raises."""
        task = asyncio.current_task()
        if not self.stop.is_set() or task is None:
            return False
        task.uncancel()
        self._starting = None  # a second signal must not cancel the cleanup that follows
        return True


def exit_soon(code: int, grace: float = ABANDON_GRACE_SEC) -> threading.Timer:
    """Exit with ``code`` within ``grace`` seconds even if a worker thread
    (a driver's blocking connect) holds ``asyncio.run``'s end, which waits
    for the loop's executor. The caller cancels the returned timer once
    ``asyncio.run`` returned (nothing holds the exit then)."""

    def force() -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    t = threading.Timer(grace, force)
    t.daemon = True
    t.start()
    return t
