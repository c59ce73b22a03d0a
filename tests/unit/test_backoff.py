"""switchboard/backoff.py: the one delay formula every retry loop uses.

Protects what each loop relies on: the first delay is about ``initial`` and
doubles; no delay is ever above ``cap`` (the pusher hands it to JetStream, the
archiver's in-progress ack must stay inside ACK_WAIT); full jitter keeps
spreading at the cap (a reconnect storm after an edge dies must not land at
one instant); a huge attempt count (a redelivery counter) does not overflow;
``reset`` starts again from ``initial``.
"""

from __future__ import annotations

import pytest

from switchboard.backoff import Backoff, delay


@pytest.mark.parametrize("attempt, lo, hi", [(0, 0.0, 0.1), (1, 0.0, 0.2), (3, 0.0, 0.8), (10, 0.0, 5.0)])
def test_full_jitter_is_uniform_below_the_capped_exponential(attempt, lo, hi):
    for r in (0.0, 0.5, 0.999):
        d = delay(attempt, initial=0.1, cap=5.0, rand=lambda r=r: r)
        assert lo <= d <= hi
    assert delay(attempt, initial=0.1, cap=5.0, rand=lambda: 0.5) == pytest.approx(hi / 2)


def test_full_jitter_spreads_at_the_cap():
    # cap first, then jitter: attempt 40 is not "always 5 s"
    assert delay(40, initial=0.1, cap=5.0, rand=lambda: 0.1) == pytest.approx(0.5)


def test_jitter_above_one_never_exceeds_the_cap():
    assert delay(2, initial=1.0, cap=100.0, jitter=(0.8, 1.2), rand=lambda: 1.0) == pytest.approx(4.8)
    assert delay(30, initial=1.0, cap=100.0, jitter=(0.8, 1.2), rand=lambda: 1.0) == 100.0
    assert delay(30, initial=1.0, cap=100.0, jitter=(0.8, 1.2), rand=lambda: 0.0) == pytest.approx(80.0)


def test_no_jitter_is_deterministic():
    assert [delay(n, initial=0.5, cap=8.0, jitter=None) for n in range(7)] == [0.5, 1, 2, 4, 8, 8, 8]


def test_huge_attempt_counts_do_not_overflow():
    assert delay(10**9, initial=2.0, cap=300.0, jitter=None) == 300.0
    assert delay(-3, initial=2.0, cap=300.0, jitter=None) == 2.0


def test_backoff_state_doubles_and_resets():
    b = Backoff(0.1, 1.0, jitter=None)
    assert [b.delay() for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    b.reset()
    assert b.delay() == 0.1


def test_backoff_jitter_stays_in_its_band():
    b = Backoff(0.1, 5.0, jitter=(0.8, 1.0))
    for expected in (0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0):
        assert 0.8 * expected <= b.delay() <= expected


@pytest.mark.parametrize("args, kw", [((1.0, 0.5), {}), ((-1.0, 1.0), {}), ((0.1, 1.0), {"jitter": (1.0, 0.5)})])
def test_bad_parameters_are_refused(args, kw):
    with pytest.raises(ValueError):
        Backoff(*args, **kw)


@pytest.mark.parametrize("header, expected", [
    ("3", 3.5), (" 7 ", 7.5), ("0", 0.5), ("600", 60.0),  # capped: a proxy's hour is not honoured
    (None, None), ("", None), ("soon", None), ("-1", None), ("1.5", None),
    ("Wed, 21 Oct 2026 07:28:00 GMT", None),  # an HTTP date: clocks differ, the client's own backoff applies
])
def test_retry_after_is_whole_seconds_plus_a_second_of_jitter(header, expected):
    from switchboard_client.backoff import retry_after
    assert retry_after(header, rand=lambda: 0.5) == expected


async def test_the_sdk_waits_as_long_as_a_refusal_asks():
    """A 503 from admission control with Retry-After: 2 (an appointment the
    edge booked, edge/retryafter.py): the SDK's next try comes 2-3 s later,
    not after its own 0.1 s backoff. Without it a storm's clients came back
    long before the edge could take them, and each refusal cost the edge
    ~90 µs and the client a connection."""
    import asyncio
    import time

    from switchboard_client import Client

    tries: list[float] = []

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        tries.append(time.monotonic())
        writer.write(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 2\r\nContent-Length: 0\r\n"
                     b"Connection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = Client(url=f"ws://127.0.0.1:{port}/ws", token="t", backoff_min=0.1, backoff_max=0.2)
    task = asyncio.create_task(client._run())
    try:
        deadline = time.monotonic() + 8
        while len(tries) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        client._closing = True
        task.cancel()
        server.close()
    assert len(tries) >= 2
    assert 2.0 <= tries[1] - tries[0] <= 3.5
