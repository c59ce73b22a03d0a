"""switchboard/reach.py: the wait for a dependency at start, in isolation
(the processes that use it: tests/e2e/test_unreachable_deps.py).

The attempts are small functions that fail a given number of times; the
clock and the sleeps are real (the backoff starts at 0.25 s), so each test
takes at most a few seconds.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from switchboard.reach import Unreachable, reach, reason


class Lines:
    """The log lines reach() writes (a structlog logger's interface)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def warning(self, event: str, **kw: Any) -> None:
        self.lines.append(("warning", event, kw))

    def info(self, event: str, **kw: Any) -> None:
        self.lines.append(("info", event, kw))


def failing(times: int, exc: BaseException, result: str = "ok"):
    calls: list[float] = []

    async def attempt() -> str:
        calls.append(time.monotonic())
        if len(calls) <= times:
            raise exc
        return result

    return attempt, calls


async def test_retries_until_it_answers_and_says_so() -> None:
    """Two refusals, then an answer: the value is returned; one warning (the
    first failure; the next would come after LOG_EVERY_SEC) and one info."""
    attempt, calls = failing(2, ConnectionRefusedError(111, "Connection refused"))
    log = Lines()
    assert await reach(attempt, what="NATS", where="nats://h:1", timeout_sec=10, retry_on=(OSError,),
                       log=log) == "ok"  # type: ignore[arg-type]
    assert len(calls) == 3
    gaps = [b - a for a, b in zip(calls, calls[1:], strict=False)]
    assert 0.15 < gaps[0] < gaps[1], gaps  # backoff: ~0.25 s, then ~0.5 s
    assert [(lvl, ev) for lvl, ev, _ in log.lines] == [("warning", "dependency unreachable; retrying"),
                                                      ("info", "dependency reached")]
    assert log.lines[0][2]["reason"] == "Connection refused" and log.lines[1][2]["attempts"] == 3


async def test_gives_up_after_the_timeout_with_the_last_reason() -> None:
    attempt, calls = failing(1000, ConnectionRefusedError(111, "x"))
    t0 = time.monotonic()
    with pytest.raises(Unreachable) as info:
        await reach(attempt, what="the store", where="cassandra://h:1/ks", timeout_sec=1.0, retry_on=(OSError,),
                    log=Lines())  # type: ignore[arg-type]
    took = time.monotonic() - t0
    assert 1.0 <= took < 1.5, took  # the limit, not an attempt more
    assert info.value.message == "cannot reach the store at cassandra://h:1/ks after 1 s: Connection refused"
    assert len(calls) >= 3


async def test_an_error_that_will_not_pass_is_raised_at_once() -> None:
    """A bad setting is not retried for a minute: only ``retry_on`` is."""
    attempt, calls = failing(1000, ValueError("bad keyspace"))
    with pytest.raises(ValueError):
        await reach(attempt, what="the store", where="x", timeout_sec=10, retry_on=(OSError,),
                    log=Lines())  # type: ignore[arg-type]
    assert len(calls) == 1


async def test_zero_waits_forever() -> None:
    """timeout_sec 0: no limit (three failures over ~1.75 s, then the answer)."""
    attempt, calls = failing(3, ConnectionRefusedError(111, "x"))
    log = Lines()
    assert await reach(attempt, what="NATS", where="n", timeout_sec=0, retry_on=(OSError,),
                       log=log) == "ok"  # type: ignore[arg-type]
    assert len(calls) == 4 and log.lines[0][2]["gives_up_in"].startswith("never")


async def test_an_attempt_that_hangs_is_bounded() -> None:
    """A server that accepts and never answers: each attempt ends after
    attempt_sec, and the reason says so."""
    async def hang() -> None:
        await asyncio.sleep(3600)

    with pytest.raises(Unreachable) as info:
        await reach(hang, what="NATS", where="n", timeout_sec=1.0, retry_on=(OSError,), log=Lines(),  # type: ignore[arg-type]
                    attempt_sec=0.3)
    assert "no answer within 0.3 s" in info.value.reason, info.value.reason


async def test_a_cancel_ends_the_wait_at_once() -> None:
    """What SIGINT/SIGTERM do while a process starts (sbctl/starting.py)."""
    attempt, _ = failing(1000, ConnectionRefusedError(111, "x"))
    task = asyncio.ensure_future(reach(attempt, what="NATS", where="n", timeout_sec=0, retry_on=(OSError,),
                                       log=Lines()))  # type: ignore[arg-type]
    await asyncio.sleep(0.5)
    t0 = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - t0 < 0.1


class NoHostAvailable(Exception):
    """Shaped like the Cassandra driver's: ``errors`` maps host -> error."""

    def __init__(self, errors: dict[str, BaseException]) -> None:
        super().__init__("Unable to connect to any servers", errors)
        self.errors = errors


def test_reason_is_one_short_line() -> None:
    wrapped = RuntimeError("cassandra: NoHostAvailable")
    wrapped.__cause__ = NoHostAvailable({"127.0.0.1:9042": ConnectionRefusedError(
        111, "Tried connecting to [('127.0.0.1', 9042)]. Last error: Connection refused")})
    assert reason(wrapped) == "127.0.0.1:9042: Connection refused"
    assert reason(OSError(111, "Connect call failed ('127.0.0.1', 1)")) == "Connection refused"
    assert reason(TimeoutError()) == "timed out"
    assert reason(RuntimeError("two\n  lines")) == "two lines"
