"""Reaching a dependency at start: bounded, logged retries with backoff.

A process needs NATS (every role, ``switchboard init``, ``up``), a store
(the sequencer and the archiver: the archive; the pusher: its device store)
and a presence backend (the tracker) before it can serve. :func:`reach`
calls ``attempt`` until it returns:

- a failure that may pass (``retry_on``: refused, timed out, no host
  answering) is retried after a delay from the shared backoff helper
  (switchboard/backoff.py: from ``INITIAL_SEC`` doubling to ``CAP_SEC``);
  any other error (a bad setting, a missing extra) is raised at once;
- the wait is logged, never with a traceback: a WARNING at the first
  failure, then at most one line every ``LOG_EVERY_SEC`` while it lasts,
  and an INFO line when the dependency answers after failures;
- after ``timeout_sec`` (a setting: ``[nats] connect_timeout_sec``, ...;
  0 = forever) it raises :class:`Unreachable`, whose message is the one line
  the CLI prints before it exits ``EXIT_UNREACHABLE``.

A cancel (the CLI cancels the start on SIGINT/SIGTERM) ends the wait at
once, in an attempt or between two. Once a role has started, a lost
connection is its client's reconnect logic's job, not this module's; what
that client reports meanwhile goes through :func:`error_logger`: the same
policy (one line per ``LOG_EVERY_SEC``, no traceback), where nats-py's own
callback printed a traceback for every refused reconnect (every 0.5 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from structlog.typing import FilteringBoundLogger

from switchboard.backoff import Backoff

T = TypeVar("T")

# sysexits.h EX_UNAVAILABLE ("a service is unavailable"): distinct from 1
# (failed) and 2 (bad usage or settings), so a supervisor or a script can
# tell "could not reach a dependency in time" from a mistake to fix.
EXIT_UNREACHABLE = 69
# The first retry comes after ~0.25 s (a server that is just starting answers
# within a second); the pause doubles to 5 s, so a long wait costs one attempt
# per 5 s per process, and the limit is overshot by at most that much.
INITIAL_SEC = 0.25
CAP_SEC = 5.0
# One log line per this many seconds at most while a dependency is unreachable.
LOG_EVERY_SEC = 5.0
# One attempt may take this long (a server that accepts but never answers);
# callers whose client bounds its own attempts (the Cassandra driver's
# connect timeout) pass None.
ATTEMPT_SEC = 10.0
# Loggers of clients that log every failed connect with a traceback (the
# Cassandra driver): silenced during a wait (``quiet``).
QUIET_DRIVERS = ("cassandra",)


class Unreachable(Exception):
    """``what`` at ``where`` did not answer within the limit."""

    def __init__(self, what: str, where: str, waited_sec: float, reason: str) -> None:
        self.what, self.where, self.waited_sec, self.reason = what, where, waited_sec, reason
        self.message = f"cannot reach {what} at {where} after {waited_sec:g} s: {reason}"
        super().__init__(self.message)


def reason(exc: BaseException) -> str:
    """One line saying why an attempt failed (no traceback, no repr soup):
    ``Connection refused``; per host for a driver that tried several."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:  # the driver's error behind a wrapper (StoreUnavailable)
        seen.add(id(e))
        errors = getattr(e, "errors", None)
        if isinstance(errors, dict) and errors:  # cassandra's NoHostAvailable: {host: error}
            return "; ".join(f"{host}: {reason(err) if isinstance(err, BaseException) else err}"
                             for host, err in errors.items())
        e = e.__cause__
    if isinstance(exc, OSError) and isinstance(exc.errno, int) and exc.errno > 0:
        return os.strerror(exc.errno)  # "Connection refused", whatever the event loop's wording
    if isinstance(exc, OSError) and exc.strerror:
        return str(exc.strerror)  # a resolver error: "Name or service not known"
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


@contextlib.contextmanager
def _quiet(loggers: tuple[str, ...]) -> Iterator[list[bool]]:
    """Silence libraries that log each failed attempt with a traceback (the
    Cassandra driver); our own line per few seconds says it instead. The
    levels come back at the end unless the caller set ``keep[0]``: an
    attempt was given up while a driver thread may still be connecting (it
    would log its failure after we left), and the process is about to exit."""
    saved = [(logging.getLogger(name), logging.getLogger(name).level) for name in loggers]
    for logger, _ in saved:
        logger.setLevel(logging.CRITICAL)
    keep = [False]
    try:
        yield keep
    finally:
        if not keep[0]:
            for logger, level in saved:
                logger.setLevel(level)


async def reach(attempt: Callable[[], Awaitable[T]], *, what: str, where: str, timeout_sec: float,
                retry_on: tuple[type[BaseException], ...], log: FilteringBoundLogger,
                attempt_sec: float | None = ATTEMPT_SEC, quiet: tuple[str, ...] = (),
                clock: Callable[[], float] = time.monotonic) -> T:
    """``await attempt()`` until it returns (see the module docstring).

    ``what`` names the dependency ("NATS", "the store"), ``where`` its
    address, already safe to print (passwords masked). ``timeout_sec`` 0:
    retry forever. ``quiet``: stdlib loggers silenced during the wait."""
    start = clock()
    deadline = start + timeout_sec if timeout_sec > 0 else None
    backoff = Backoff(INITIAL_SEC, CAP_SEC, jitter=(0.8, 1.0))
    failures = 0
    why = ""
    last_log = -LOG_EVERY_SEC
    with _quiet(quiet) as keep_quiet:
        while True:
            bound, clamped = attempt_sec, False
            if deadline is not None:
                left = max(deadline - clock(), 0.001)
                clamped = bound is None or left < bound
                bound = left if clamped else bound
            tried = clock()
            try:
                result = await (asyncio.wait_for(attempt(), bound) if bound is not None else attempt())
            except asyncio.CancelledError:
                keep_quiet[0] = True  # a stop while an attempt runs (maybe in a driver's thread)
                raise
            except TimeoutError:  # our bound on one attempt, or the client's own
                keep_quiet[0] = True
                # cut short by the limit: the reason is the previous attempt's, if any
                why = why if clamped and failures else f"no answer within {clock() - tried:.1f} s"
            except retry_on as exc:
                why = reason(exc)
            else:
                keep_quiet[0] = False  # no attempt of ours is left running
                if failures:
                    log.info("dependency reached", dependency=what, url=where, attempts=failures + 1,
                             waited_sec=round(clock() - start, 1))
                return result
            failures += 1
            now = clock()
            pause = backoff.delay()
            if deadline is not None and now + pause >= deadline:
                # No attempt fits before the limit: wait it out, then give up
                # with the last real reason (not a cut-short attempt's).
                await asyncio.sleep(max(deadline - now, 0.0))
                raise Unreachable(what, where, timeout_sec, why)
            if now - last_log >= LOG_EVERY_SEC:
                last_log = now
                gives_up = f"{deadline - now:.0f} s" if deadline is not None else "never (timeout 0)"
                log.warning("dependency unreachable; retrying", dependency=what, url=where, reason=why,
                            attempts=failures, waited_sec=round(now - start, 1), gives_up_in=gives_up)
            await asyncio.sleep(pause)


__all__ = ["ATTEMPT_SEC", "EXIT_UNREACHABLE", "QUIET_DRIVERS", "Unreachable", "reach", "reason"]


def error_logger(log: FilteringBoundLogger, *, what: str = "NATS",
                 every_sec: float = LOG_EVERY_SEC) -> Callable[[Exception], Awaitable[None]]:
    """An error callback for a client that is up and reconnects by itself
    (nats-py's ``error_cb``): a WARNING line with the reason at the first
    error, then at most one per ``every_sec`` saying how many came since;
    never a traceback."""
    last = -every_sec
    since = 0

    async def on_error(exc: Exception) -> None:
        nonlocal last, since
        since += 1
        now = time.monotonic()
        if now - last >= every_sec:
            log.warning(f"{what} connection error; the client reconnects", error=reason(exc),
                        kind=type(exc).__name__, errors=since)
            last, since = now, 0

    return on_error
