"""The lean load generator (sbctl/bench/loadgen.py, wsclient.py) against
the in-memory fake edge (sbctl/bench/fakeedge.py), all in one event loop:
its accounting (delivered, duplicates, gaps, latencies), groups, pacing under
the edge's per-connection limit, and the hand-written WebSocket framing."""

from __future__ import annotations

import asyncio
import time

import pytest

from sbctl.bench.delivery import DeliveryParams, choose_clients, needed_clients
from sbctl.bench.fakeedge import FakeEdge, Faults, server_frame
from sbctl.bench.loadgen import Worker, WorkerSpec
from sbctl.bench.wsclient import Flusher, HandshakeError, WsConn, client_frame


async def run_worker(*, clients: int = 20, group_size: int = 2, rate: float = 400.0, duration: float = 0.5,
                     faults: Faults | None = None, poll_sec: float = 0.0) -> tuple[Worker, FakeEdge]:
    edge = FakeEdge(faults)
    port = await edge.start()
    users = [(f"u{i}", f"u{i}") for i in range(clients)]
    groups = [list(range(g, g + group_size)) for g in range(0, clients, group_size)]
    spec = WorkerSpec(index=0, ws_url=f"ws://127.0.0.1:{port}/ws", users=users, groups=groups, rate=rate,
                      duration=duration, drain_idle=1.0, drain_max=10.0, poll_sec=poll_sec)
    w = Worker(spec)
    try:
        await w.setup()
        await w.run(time.monotonic_ns() + 50_000_000)
    finally:
        await w.close()
        await edge.stop()
    return w, edge


async def test_pairs_all_delivered_once_in_order():
    w, _ = await run_worker()
    r = w.result
    assert r.sent == pytest.approx(200, abs=3)
    assert r.confirmed == r.sent == r.expected == r.delivered == r.self_echo == r.offered
    assert (r.duplicates, r.gaps, r.unconfirmed, r.reconnects, r.resends) == (0, 0, 0, 0, 0)
    assert len(r.latencies_ns) == r.delivered and all(0 < v < 1e9 for v in r.latencies_ns)
    assert r.errors == {} and r.missing == []


async def test_polling_mode_delivers_the_same():
    w, _ = await run_worker(poll_sec=0.002)
    r = w.result
    assert r.confirmed == r.sent == r.delivered > 0 and (r.duplicates, r.gaps) == (0, 0)


async def test_groups_expect_every_other_member():
    w, _ = await run_worker(clients=15, group_size=5, rate=150)
    r = w.result
    assert r.confirmed == r.sent > 0
    assert r.expected == r.confirmed * 4 == r.delivered
    assert (r.duplicates, r.gaps) == (0, 0)


async def test_duplicates_and_gaps_are_counted():
    w, _ = await run_worker(faults=Faults(dup_every=7))
    assert w.result.duplicates > 0 and w.result.gaps == 0
    w, _ = await run_worker(faults=Faults(skip_every=5))
    assert w.result.gaps > 0 and w.result.duplicates == 0


async def test_lost_tail_is_reported():
    w, _ = await run_worker(duration=0.3)
    assert w.result.missing == []
    # As if the last confirmed message of a conversation never reached its
    # members: no gap to see, but the tail is missing.
    w.conv_top[next(iter(w.conv_top))] += 1
    missing = w.missing()
    assert len(missing) == 2 and all("confirmed up to" in m for m in missing)


async def test_pacing_stays_under_the_per_connection_limit():
    # rate / clients = 40 sends/s per client plus acks, against the edge's 50/s
    # with almost no burst to hide behind: nothing may be refused.
    w, edge = await run_worker(clients=10, rate=400, duration=1.5, faults=Faults(rate_per_sec=50, rate_burst=3))
    assert edge.rejected == 0 and w.result.errors == {}
    assert w.result.delivered == w.result.confirmed == w.result.sent


def test_clients_follow_the_rate():
    assert needed_clients(2000, 2) == 50
    assert needed_clients(10_000, 2) == 250
    assert needed_clients(200, 100) == 100
    assert choose_clients(DeliveryParams(clients=None, rate=2000, duration=1)) == 200
    assert choose_clients(DeliveryParams(clients=None, rate=20_000, duration=1)) == 500
    assert choose_clients(DeliveryParams(clients=None, rate=200, duration=1, group_size=100)) == 200
    with pytest.raises(ValueError, match="--clients >= 250"):
        choose_clients(DeliveryParams(clients=100, rate=10_000, duration=1))
    assert choose_clients(DeliveryParams(clients=100, rate=10_000, duration=1, lift_limits=True)) == 100


# ---------------------------------------------------------------- framing


class Recorder(WsConn):
    def __init__(self, flusher: Flusher) -> None:
        super().__init__(flusher)
        self.texts: list[bytes] = []
        self.closed = asyncio.Event()

    def on_text(self, payload: bytes) -> None:
        self.texts.append(payload)

    def on_closed(self) -> None:
        self.closed.set()


async def raw_server(respond) -> tuple[asyncio.AbstractServer, int, list[bytes]]:
    """A TCP server calling ``respond(writer, data)`` with everything a client sent so far."""
    got: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buf = b""
        while data := await reader.read(65536):
            buf += data
            got.append(data)
            await respond(writer, buf)

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    return srv, srv.sockets[0].getsockname()[1], got


def accept_for(request: bytes) -> bytes:
    import base64
    import hashlib

    from sbctl.bench.wsclient import _GUID

    key = [ln.split(b":", 1)[1].strip() for ln in request.split(b"\r\n")
           if ln.lower().startswith(b"sec-websocket-key")][0]
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


async def test_fragments_joined_ping_answered_close_recorded():
    sent_upgrade = []

    async def respond(writer: asyncio.StreamWriter, buf: bytes) -> None:
        if not sent_upgrade and b"\r\n\r\n" in buf:
            sent_upgrade.append(1)
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: " + accept_for(buf) + b"\r\n\r\n")
            big = b"x" * 70_000
            frames = (server_frame(b'{"a":1}')                       # whole
                      + bytes((0x01, 3)) + b'{"b'                    # text, not final
                      + bytes((0x80, 4)) + b'":2}'                   # continuation, final
                      + bytes((0x89, 2)) + b"hi"                     # ping
                      + server_frame(big))                           # 64-bit length
            writer.write(frames[:5])  # split mid-frame
            await writer.drain()
            await asyncio.sleep(0.02)
            writer.write(frames[5:] + bytes((0x88, 2)) + (4009).to_bytes(2, "big"))

    srv, port, got = await raw_server(respond)
    c = Recorder(Flusher(asyncio.get_running_loop()))
    await c.connect(f"ws://127.0.0.1:{port}/ws?token=t")
    await asyncio.wait_for(c.closed.wait(), 5)
    assert c.texts == [b'{"a":1}', b'{"b":2}', b"x" * 70_000]
    assert c.close_code == 4009
    tail = b"".join(got).split(b"\r\n\r\n", 1)[1]
    assert tail[0] == 0x8A and tail[1] == 0x80 | 2  # masked pong with the ping's payload
    srv.close()


async def test_handshake_refused_is_an_error_with_the_status():
    async def respond(writer: asyncio.StreamWriter, buf: bytes) -> None:
        writer.write(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n")

    srv, port, _ = await raw_server(respond)
    c = Recorder(Flusher(asyncio.get_running_loop()))
    with pytest.raises(HandshakeError) as exc:
        await c.connect(f"ws://127.0.0.1:{port}/ws")
    assert exc.value.status == 503
    srv.close()


def test_client_frames_are_masked():
    from websockets.speedups import apply_mask

    for n in (0, 5, 125, 126, 65535, 65536):
        f = client_frame(1, b"a" * n)
        assert f[0] == 0x81 and f[1] & 0x80
        hdr = 2 + {126: 2, 127: 8}.get(f[1] & 0x7F, 0)
        mask = f[hdr:hdr + 4]
        assert apply_mask(f[hdr + 4:], mask) == b"a" * n
