"""edge.transport without sockets: a fake asyncio transport and websockets'
own sans-I/O client protocol on the other side.

Checks one transport.write per loop tick however many frames, the byte
bound of a backed-up socket (close 4008), the keepalive sweep, the HTTP
routes of the edge, auth at the handshake, and message reassembly.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from http import HTTPStatus
from types import SimpleNamespace
from unittest.mock import MagicMock

import pytest
from websockets.client import ClientProtocol
from websockets.datastructures import Headers
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from edge.transport import CLOSE_SLOW_CONSUMER, WsConfig, WsConn, WsServer
from switchboard import auth
from switchboard.config import Settings


class FakeTransport:
    """Records writes; flow control is driven by the test."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.eof = False
        self.closed = False
        self.aborted = False
        self.reading = True

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        self.limits = (high, low)

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.writes.append(bytes(data))

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = self.aborted = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_write_buffer_size(self) -> int:
        return 0


class Recorder:
    """A handler: records what the connection delivers."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.slow = 0
        self.closed = 0

    def on_frame(self, data: bytes) -> None:
        self.frames.append(data)

    def on_slow_consumer(self) -> None:
        self.slow += 1

    def on_close(self) -> None:
        self.closed += 1


CONFIG = WsConfig(max_size=4096, outbox_bytes=1000, ping_interval=0.0, ping_timeout=0.0, close_timeout=0.05)


class Peer:
    """One connection: the server side (WsConn on a FakeTransport) and a
    websockets ClientProtocol as the client."""

    def __init__(self, server: WsServer, path: str = "/ws") -> None:
        self.server = server
        self.t = FakeTransport()
        self.conn = WsConn(server)
        self.conn.connection_made(self.t)  # type: ignore[arg-type]
        self.client = ClientProtocol(parse_uri(f"ws://edge{path}"))
        self.client.send_request(self.client.connect())
        self.push()

    def push(self) -> None:
        """Client -> server: everything the client protocol has to send."""
        for data in self.client.data_to_send():
            if data:
                self.conn.data_received(data)

    def pull(self) -> list:
        """Server -> client: feed what was written; the client's events."""
        for data in self.t.writes:
            self.client.receive_data(data)
        self.t.writes.clear()
        return self.client.events_received()

    def send(self, text: str) -> None:
        self.client.send_text(text.encode())
        self.push()


def make_server(accept=None, route=None, config: WsConfig = CONFIG) -> tuple[WsServer, list[Recorder]]:
    handlers: list[Recorder] = []

    def default_accept(conn: WsConn) -> Recorder:
        handlers.append(Recorder())
        return handlers[-1]

    server = WsServer(config=config, route=route or (lambda req: None), accept=accept or default_accept)
    return server, handlers


async def tick() -> None:
    await asyncio.sleep(0)
    await asyncio.sleep(0)


def texts(events: list) -> list[bytes]:
    return [e.data for e in events if isinstance(e, Frame) and e.opcode is Opcode.TEXT]


def close_of(events: list) -> tuple[int, str] | None:
    for e in events:
        if isinstance(e, Frame) and e.opcode is Opcode.CLOSE:
            from websockets.frames import Close
            c = Close.parse(e.data)
            return c.code, c.reason
    return None


# ---------------------------------------------------------------- writes


async def test_n_frames_in_one_tick_are_one_write():
    server, handlers = make_server()
    p = Peer(server)
    await tick()
    [response] = [e for e in p.pull() if isinstance(e, Response)]
    assert response.status_code == 101
    for i in range(50):
        assert p.conn.send(b'{"n":%d}' % i)
    assert p.t.writes == []  # nothing written before the tick ends
    await tick()
    assert len(p.t.writes) == 1
    assert texts(p.pull()) == [b'{"n":%d}' % i for i in range(50)]
    assert p.conn.frames_out == 50


async def test_one_flush_for_many_sockets_each_one_write():
    server, _ = make_server()
    peers = [Peer(server) for _ in range(5)]
    await tick()
    for p in peers:
        p.pull()
    for _ in range(3):
        for p in peers:
            p.conn.send(b"x")
    await tick()
    assert [len(p.t.writes) for p in peers] == [1] * 5


async def test_received_messages_in_order_and_fragments_joined():
    server, handlers = make_server()
    p = Peer(server)
    await tick()
    p.pull()  # the 101: the client may send now
    p.send("one")
    p.send("two")
    p.client.send_text(b"thr", fin=False)
    p.client.send_continuation(b"e", fin=False)
    p.client.send_continuation(b"e", fin=True)
    p.push()
    assert handlers[0].frames == [b"one", b"two", b"three"]


async def test_ping_from_client_is_answered_in_the_tick_flush():
    server, _ = make_server()
    p = Peer(server)
    await tick()
    p.pull()
    p.client.send_ping(b"hi")
    p.push()
    await tick()
    assert [e.opcode for e in p.pull()] == [Opcode.PONG]


async def test_too_large_message_closes_1009():
    server, handlers = make_server()
    p = Peer(server)
    await tick()
    p.pull()
    p.send("x" * (CONFIG.max_size + 1))
    await tick()
    assert close_of(p.pull())[0] == 1009
    assert handlers[0].frames == []


# ---------------------------------------------------------------- backpressure


async def test_paused_socket_holds_then_writes_once_on_resume():
    server, handlers = make_server()
    p = Peer(server)
    await tick()
    p.pull()
    p.conn.pause_writing()
    for _ in range(5):
        p.conn.send(b"y" * 100)
        await tick()
    assert p.t.writes == []  # held, not written
    p.conn.resume_writing()
    assert len(p.t.writes) == 1
    assert texts(p.pull()) == [b"y" * 100] * 5
    assert handlers[0].slow == 0


async def test_byte_bound_exceeded_closes_4008():
    server, handlers = make_server()
    p = Peer(server)
    await tick()
    p.pull()
    p.conn.pause_writing()
    for _ in range(12):  # 12 x ~100 B > outbox_bytes (1000)
        p.conn.send(b"z" * 100)
        await tick()
    assert handlers[0].slow == 1
    events = p.pull()
    assert texts(events) == []  # what was held is dropped; only the close goes out
    assert close_of(events) == (CLOSE_SLOW_CONSUMER, "slow consumer: reconnect and resume from your cursor")
    assert p.conn.send(b"late") is False
    await asyncio.sleep(CONFIG.close_timeout * 2)
    assert p.t.aborted  # the peer never completed the close: cut off after close_timeout
    p.conn.connection_lost(None)
    assert handlers[0].closed == 1 and p.conn not in server.conns


async def test_drained_waits_for_resume():
    server, _ = make_server()
    p = Peer(server)
    await tick()
    p.conn.pause_writing()
    waiter = asyncio.ensure_future(p.conn.drained())
    await tick()
    assert not waiter.done()
    p.conn.resume_writing()
    await asyncio.wait_for(waiter, 1)


# ---------------------------------------------------------------- keepalive


async def test_keepalive_pings_idle_and_drops_silent_sockets():
    config = WsConfig(max_size=4096, outbox_bytes=1000, ping_interval=0.04, ping_timeout=0.04, close_timeout=1.0)
    server, handlers = make_server(config=config)
    server.start_keepalive()  # what listen() does
    talker, silent = Peer(server), Peer(server)
    await tick()
    talker.pull()
    silent.pull()
    for _ in range(20):  # 0.2 s: several ping intervals
        await asyncio.sleep(0.01)
        talker.pull()
        talker.push()  # the client protocol answered any ping with a pong
    assert silent.t.closed and not talker.t.closed
    events = silent.pull()
    assert Opcode.PING in [e.opcode for e in events if isinstance(e, Frame)]
    assert close_of(events) == (1011, "keepalive ping timeout")
    server.stop_keepalive()


async def test_open_timeout_cuts_a_socket_that_never_sends_a_request():
    server, _ = make_server(config=dataclasses.replace(CONFIG, open_timeout=0.01))  # Settings.open_timeout
    t = FakeTransport()
    conn = WsConn(server)
    conn.connection_made(t)  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    assert t.aborted


# ---------------------------------------------------------------- the edge's HTTP routes and auth


@pytest.fixture
async def edge():
    from edge.server import Edge
    e = Edge(settings=Settings(jwt_secret="s" * 32, admit_per_sec=2.0), nc=MagicMock())
    yield e
    for sess in tuple(e.sessions):  # ends their hello timers too
        sess.close(1001, "test over")


async def http(edge, path: str, headers: Headers | None = None) -> tuple[Response | None, list]:
    server = edge.make_server(CONFIG)
    p = Peer(server, path)
    await tick()
    events = p.pull()
    responses = [e for e in events if isinstance(e, Response)]
    return (responses[0] if responses else None), events, p


@pytest.mark.parametrize("path,status,ctype", [
    ("/healthz", 200, "text/plain"), ("/metrics", 200, "text/plain; version=0.0.4"),
    ("/", 200, "text/html; charset=utf-8"), ("/index.html", 200, "text/html; charset=utf-8"),
    ("/favicon.ico", 404, "text/plain")])
async def test_http_routes(edge, path, status, ctype):
    resp, _, p = await http(edge, path)
    assert (resp.status_code, resp.headers["Content-Type"]) == (status, ctype)
    assert int(resp.headers["Content-Length"]) == len(resp.body)
    assert p.t.eof  # a plain HTTP answer ends the connection


async def test_admission_503_with_retry_after(edge):
    statuses = []
    for _ in range(4):  # burst 2, then refused
        resp, _, p = await http(edge, "/ws?token=x")
        statuses.append(resp.status_code)
    assert statuses[:2] == [101, 101] and statuses[2:] == [HTTPStatus.SERVICE_UNAVAILABLE] * 2
    resp, _, _ = await http(edge, "/ws")
    # An appointment (edge/retryafter.py): later refusals are told to wait longer.
    assert int(resp.headers["Retry-After"]) >= 1


async def test_bad_token_upgrades_then_closes_4001(edge):
    resp, events, p = await http(edge, "/ws?token=forged")
    assert resp.status_code == 101
    code, reason = close_of(events)
    assert code == 4001 and reason and "forged" not in reason
    assert edge.sessions == set()


async def test_good_token_makes_a_session(edge):
    tok = auth.issue(edge.settings.jwt_secret, "alice")
    resp, events, p = await http(edge, f"/ws?token={tok}")
    assert resp.status_code == 101 and close_of(events) is None
    [sess] = edge.sessions
    assert sess.user == "alice" and p.conn.handler is sess
    sess.close(1000, "test over")


async def test_admission_refusal_is_canned_before_parsing_and_the_same_in_pieces(edge):
    """A reconnect storm is mostly refusals, so a whole /ws request over the
    admission limit is answered before websockets parses it (Edge._refuse:
    canned bytes, then the connection closes, no handler); a request that
    arrives in pieces goes the parsed way. Both must give the client the same
    503 with Retry-After (docs/protocol.md), and the burst is not used up by
    refusals."""
    req = (b"GET /ws?token=x HTTP/1.1\r\nHost: edge\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    for _ in range(2):  # the burst: admitted
        resp, _, _ = await http(edge, "/ws?token=x")
        assert resp.status_code == 101
    server = edge.make_server(CONFIG)
    whole, pieces = FakeTransport(), FakeTransport()
    conn = WsConn(server)
    conn.connection_made(whole)  # type: ignore[arg-type]
    conn.data_received(req)
    assert whole.closed and conn.handler is None
    split = WsConn(server)
    split.connection_made(pieces)  # type: ignore[arg-type]
    split.data_received(req[:30])
    split.data_received(req[30:])
    await tick()
    assert pieces.eof and split.handler is None
    canned, parsed = b"".join(whole.writes), b"".join(pieces.writes)
    assert canned.startswith(b"HTTP/1.1 503 ") and re.search(rb"\r\nRetry-After: [1-9][0-9]*\r\n", canned)
    def no_wait(b: bytes) -> bytes:  # each refusal books its own appointment
        return re.sub(rb"Retry-After: [0-9]+", b"Retry-After: N", b)
    assert no_wait(canned) == no_wait(parsed)
    assert edge.metrics.rejected.labels("admission")._value.get() == 2


async def test_admission_bounds_connections_still_opening():
    """admit_max_opening: an edge works on at most this many upgraded,
    not yet synced connections; beyond, upgrades get the admission 503 (label
    "opening") without using a token. Protects an edge slower than its
    admit_per_sec from queueing hellos until clients give up and retry (bench
    storm): the count must drop when a session goes away before its hello,
    or the edge would refuse everyone for good."""
    from edge.server import Edge
    e = Edge(settings=Settings(jwt_secret="s" * 32, admit_per_sec=100.0, admit_max_opening=1, admit_hold_sec=0),
             nc=MagicMock())
    token = auth.issue("s" * 32, "u1", ttl_sec=60)
    first, _, _ = await http(e, f"/ws?token={token}")
    assert first.status_code == 101 and e.admission.opening == 1
    refused, _, _ = await http(e, f"/ws?token={token}")
    assert refused.status_code == HTTPStatus.SERVICE_UNAVAILABLE and int(refused.headers["Retry-After"]) >= 1
    assert e.metrics.rejected.labels("opening")._value.get() == 1
    sess = next(iter(e.sessions))
    sess.conn.connection_lost(None)  # gone before its hello
    assert e.admission.opening == 0
    # ...and says nothing about how long an opening takes: a client that gave
    # up would drag the Retry-After rate (edge/retryafter.py) down
    assert e.admission._retry_after._took is None  # nothing measured
    again, _, _ = await http(e, f"/ws?token={token}")
    assert again.status_code == 101
    for s in tuple(e.sessions):
        s.close(1001, "test over")


@pytest.mark.parametrize(("hold_sec", "held", "refused"), [
    (3.0, 3, 0),  # turns 0.05, 0.10, 0.15 s away: all wait
    (0.12, 2, 1),  # the third's turn (0.15 s) is past hold_sec: refused with its appointment
    (0.0, 0, 3),  # the lobby off: refused at once, as before it existed
])
async def test_lobby_holds_upgrades_whose_turn_is_near(hold_sec, held, refused):
    """edge/lobby.py: over admit_max_opening, an upgrade whose turn (booked at
    the rate the edge completes openings: 20/s here, the floor) is within
    admit_hold_sec waits unanswered instead of getting a 503; in a reconnect
    storm each refusal is a second TCP connection, request and answer."""
    from edge.server import Edge
    e = Edge(settings=Settings(jwt_secret="s" * 32, admit_per_sec=100.0, admit_max_opening=1,
                               admit_hold_sec=hold_sec), nc=MagicMock())
    token = auth.issue("s" * 32, "u1", ttl_sec=60)
    first, _, _ = await http(e, f"/ws?token={token}")
    assert first.status_code == 101
    answers = [(await http(e, f"/ws?token={token}"))[0] for _ in range(3)]
    assert answers.count(None) == held
    assert [a.status_code for a in answers if a is not None] == [HTTPStatus.SERVICE_UNAVAILABLE] * refused
    assert e.metrics.held._value.get() == held and e.metrics.rejected.labels("opening")._value.get() == refused
    for s in tuple(e.sessions):
        s.close(1001, "test over")
    e.admission.close()


async def test_lobby_lets_the_oldest_in_when_an_opening_ends_and_skips_the_gone():
    """A held upgrade proceeds (101 and a session) as soon as a place frees,
    oldest first; one whose client left meanwhile is skipped, not upgraded
    into a dead socket that would hold the place."""
    from edge.server import Edge
    e = Edge(settings=Settings(jwt_secret="s" * 32, admit_per_sec=100.0, admit_max_opening=1), nc=MagicMock())
    token = auth.issue("s" * 32, "u1", ttl_sec=60)
    _, _, first = await http(e, f"/ws?token={token}")
    _, _, left = await http(e, f"/ws?token={token}")
    resp, _, waiting = await http(e, f"/ws?token={token}")
    assert resp is None and e.admission.waiting == 2
    left.t.closed = True  # its client gave up
    first.conn.connection_lost(None)  # the opening ends before its hello: a place is free
    await tick()
    assert [ev.status_code for ev in waiting.pull() if isinstance(ev, Response)] == [101]
    assert left.t.writes == [] and e.admission.waiting == 0
    assert e.admission.opening == 1 and waiting.conn.handler in e.sessions
    for s in tuple(e.sessions):
        s.close(1001, "test over")
    e.admission.close()


async def test_lobby_answers_an_upgrade_held_too_long():
    """If no place frees (the edge slowed down), an upgrade held twice
    admit_hold_sec gets the 503 with an appointment, before the client's
    open timeout cuts it off with nothing."""
    from edge.server import Edge
    e = Edge(settings=Settings(jwt_secret="s" * 32, admit_per_sec=100.0, admit_max_opening=1,
                               admit_hold_sec=0.06), nc=MagicMock())
    token = auth.issue("s" * 32, "u1", ttl_sec=60)
    await http(e, f"/ws?token={token}")
    resp, _, held = await http(e, f"/ws?token={token}")
    assert resp is None
    await asyncio.sleep(0.25)
    [answer] = [ev for ev in held.pull() if isinstance(ev, Response)]
    assert answer.status_code == HTTPStatus.SERVICE_UNAVAILABLE and int(answer.headers["Retry-After"]) >= 1
    assert held.t.closed and e.metrics.rejected.labels("opening")._value.get() == 1 and e.admission.waiting == 0
    for s in tuple(e.sessions):
        s.close(1001, "test over")
    e.admission.close()


@pytest.mark.parametrize(("answers", "got", "asked"), [
    (["busy", "busy", "ok"], ["g1"], 3),  # a busy spell: asked again, the hello gets its groups
    (["busy"] * 4, [], 4),  # still busy after every pause: the hello goes on without
    (["slow"], [], 1),  # a timeout (the sequencer away): not waited for again
    (["refused"], [], 1),  # not retryable (a bug, a bad id): not asked again
])
async def test_large_groups_asked_again_after_a_busy_refusal(monkeypatch, answers, got, asked):
    """A sequencer over api_max_inflight answers `unavailable` at once; in a
    reconnect storm 394 of 20,000 hellos went live without their large
    groups that way. The edge asks again after a short pause, but only when
    the refusal was quick: a timeout already cost send_timeout."""
    import edge.server as server
    from edge.server import Edge
    from switchboard.errors import BadRequest, Unavailable

    monkeypatch.setattr(server, "LARGE_GROUPS_RETRY_SEC", (0.001, 0.001, 0.001))
    monkeypatch.setattr(server, "LARGE_GROUPS_QUICK_SEC", 0.05)
    e = Edge(settings=Settings(jwt_secret="s" * 32), nc=MagicMock())
    calls = []

    async def call(endpoint, request):
        answer = answers[len(calls)]
        calls.append(request.user)
        if answer == "slow":
            await asyncio.sleep(0.1)
            raise Unavailable("no answer within send_timeout")
        if answer == "busy":
            raise Unavailable("sequencer busy; retry")
        if answer == "refused":
            raise BadRequest("no")
        return SimpleNamespace(ranges=["g1"])

    e.call = call
    assert await e.large_groups("u1") == got
    assert len(calls) == asked


async def test_inbox_bounds_one_read_in_flight_shared_by_every_caller():
    """In a reconnect storm most hellos carry a cursor newer than the cached
    INBOX bounds and asked for them afresh, each with its own stream-info
    request. Now the callers meanwhile share the one in flight; one whose
    caller is cancelled still answers the rest; and a call made after a
    shared read ended gets a new request (so a hello that joined a request
    sent before it can ask again for one sent after it)."""
    from edge.server import Edge
    e = Edge(settings=Settings(jwt_secret="s" * 32), nc=MagicMock())
    e.epoch = "x"
    gate, calls = asyncio.Event(), []

    async def stream_info(name):
        calls.append(name)
        await gate.wait()
        return SimpleNamespace(state=SimpleNamespace(first_seq=3, last_seq=40 + len(calls)),
                               config=SimpleNamespace(name=name), created=None)

    e.js = SimpleNamespace(stream_info=stream_info)
    e._check_epoch = lambda epoch: None
    callers = [asyncio.create_task(e.inbox_bounds(fresh=True)) for _ in range(50)]
    await tick()
    callers[0].cancel()  # a session closed while waiting
    gate.set()
    got = await asyncio.gather(*callers[1:])
    assert len(calls) == 1 and set(got) == {(3, 41)}
    assert await e.inbox_bounds(fresh=True) == (3, 42) and len(calls) == 2
    assert await e.inbox_bounds() == (3, 42) and len(calls) == 2  # within inbox_bounds_ttl: cached


async def test_a_held_request_that_keeps_sending_is_cut_off():
    """A held upgrade keeps the bytes that follow it (parsed when it
    proceeds); a client that streams data while held must not grow the
    edge's memory without bound."""
    from edge.server import Edge
    from edge.transport import MAX_HELD_BYTES
    e = Edge(settings=Settings(jwt_secret="s" * 32, admit_per_sec=100.0, admit_max_opening=1), nc=MagicMock())
    token = auth.issue("s" * 32, "u1", ttl_sec=60)
    await http(e, f"/ws?token={token}")
    resp, _, held = await http(e, f"/ws?token={token}")
    assert resp is None and not held.t.closed
    held.conn.data_received(b"x" * MAX_HELD_BYTES)
    assert held.t.aborted
    for s in tuple(e.sessions):
        s.close(1001, "test over")
    e.admission.close()
