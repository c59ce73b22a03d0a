"""A minimal in-memory edge: measures the load generator alone.

``switchboard bench loadgen`` runs the delivery load generator against this
instead of a fabric, so its own CPU per message can be measured (and
regressions caught, tests/unit/test_bench_loadgen.py) whatever state the
real fabric is in and without the fabric's cost moving the figure.

It speaks enough of protocol v1 for the load generator: ``hello`` ->
``welcome`` + ``synced``; ``send`` (``to`` or ``conv``) -> ``sent`` to the
sender, ``msg`` (with a per-user cursor) to every member's sockets, the
sender's included; ``conv.create`` -> ``conv``; ``ack`` ignored. The token is
the user id (no auth). ``sent`` goes out in the tick the send arrived, the
``msg`` copies one tick later, so they reach the client as separate reads
as they do from the real edge (where they come from different NATS
messages). Frames are written once per tick per socket, unmasked.

``faults`` makes it misbehave on purpose (tests): ``dup_every`` sends every
n-th delivery twice, ``skip_every`` skips a seq every n-th message,
``rate_per_sec`` applies the edge's per-connection token bucket.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import msgspec

from sbctl.bench.wsclient import _GUID, apply_mask

MAX_REQUEST_BYTES = 16 * 1024  # an upgrade request is a few hundred bytes


class ClientIn(msgspec.Struct):
    type: str
    id: str = ""
    to: str | None = None
    conv: str | None = None
    body: str = ""
    members: list[str] = []


_decode = msgspec.json.Decoder(ClientIn).decode


def server_frame(payload: bytes) -> bytes:
    """One final unmasked text frame."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + payload


@dataclass
class Faults:
    dup_every: int = 0
    skip_every: int = 0
    # The edge's per-connection limit (token bucket) if > 0: frames over it are
    # counted in FakeEdge.rejected and answered with the edge's error frame.
    rate_per_sec: float = 0.0
    rate_burst: int = 200


class FakeEdge:
    """The shared state: users' sockets, conversations, seqs and cursors."""

    def __init__(self, faults: Faults | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self.faults = faults or Faults()
        self.sockets: dict[str, list[EdgeConn]] = {}
        self.cursors: dict[str, int] = {}
        self.convs: dict[str, list[str]] = {}
        self.seqs: dict[str, int] = {}
        self.dirty: list[EdgeConn] = []
        self.later: list[tuple[str, list[str]]] = []  # deliveries for the next tick
        self._scheduled = False
        self.n_msgs = 0
        self.rejected = 0
        self.server: asyncio.AbstractServer | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self.server = await self.loop.create_server(lambda: EdgeConn(self), host, port, backlog=4096)
        return self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()

    def user_of(self, token: str) -> str:
        """The user a token names: here the token is the user id (no auth)."""
        return token

    def mark(self, c: EdgeConn) -> None:
        self.dirty.append(c)
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        dirty, self.dirty = self.dirty, []
        for c in dirty:
            out, c.out = c.out, []
            if c.transport is not None and out:
                c.transport.write(b"".join(out))
        if self.later:  # next tick: the msg copies
            later, self.later = self.later, []
            self.loop.call_soon(self._deliver, later)

    def _deliver(self, items: list[tuple[str, list[str]]]) -> None:
        f = self.faults
        for text, members in items:
            for u in members:
                cur = self.cursors[u] = self.cursors.get(u, 0) + 1
                frame = server_frame(('%s,"cursor":%d}' % (text, cur)).encode())
                for c in self.sockets.get(u, ()):
                    c.write(frame)
                    if f.dup_every and self.n_msgs % f.dup_every == 0:
                        c.write(frame)

    def on_hello(self, c: EdgeConn) -> None:
        """``welcome`` and ``synced`` at the user's cursor (nothing to replay:
        the load generator says hello once, before sending)."""
        cur = self.cursors.get(c.user, 0)
        c.write(server_frame(('{"type":"welcome","user":"%s","epoch":"fake"}' % c.user).encode()))
        c.write(server_frame(b'{"type":"synced","cursor":%d}' % cur))

    def on_send(self, c: EdgeConn, m: ClientIn) -> None:
        if m.to is not None:
            a, b = sorted((c.user, m.to))
            conv = f"d-{a}-{b}"
            members = self.convs.setdefault(conv, [a, b])
        else:
            conv = m.conv or ""
            members = self.convs.get(conv, [])
        self.n_msgs += 1
        seq = self.seqs[conv] = self.seqs.get(conv, 0) + 1
        if self.faults.skip_every and self.n_msgs % self.faults.skip_every == 0:
            seq = self.seqs[conv] = seq + 1
        ts = time.time_ns() // 1_000_000
        c.write(server_frame(('{"type":"sent","id":"%s","conv":"%s","seq":%d,"ts":%d}'
                              % (m.id, conv, seq, ts)).encode()))
        text = ('{"type":"msg","conv":"%s","seq":%d,"id":"%s","from":"%s","body":"%s","ts":%d'
                % (conv, seq, m.id, c.user, m.body, ts))
        self.later.append((text, members))

    def on_create(self, c: EdgeConn, m: ClientIn) -> None:
        conv = f"g-{len(self.convs)}"
        self.convs[conv] = list(m.members)
        self.seqs[conv] = 0
        c.write(server_frame(msgspec.json.encode({"type": "conv", "conv": conv, "members": m.members,
                                                  "ref": m.id})))


class EdgeConn(asyncio.Protocol):
    def __init__(self, edge: FakeEdge) -> None:
        self.edge = edge
        self.transport: asyncio.Transport | None = None
        self.user = ""
        self.out: list[bytes] = []
        self.buf = b""
        self.open = False
        self.tokens = float(edge.faults.rate_burst)
        self.tokens_at = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        socks = self.edge.sockets.get(self.user)
        if socks and self in socks:
            socks.remove(self)

    def write(self, frame: bytes) -> None:
        if not self.out:
            self.edge.mark(self)
        self.out.append(frame)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf if len(buf) < MAX_REQUEST_BYTES else b""
                return
            lines = buf[:end].decode("latin-1").split("\r\n")
            target = lines[0].split(" ")[1]
            headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
            self.user = self.edge.user_of(parse_qs(urlsplit(target).query).get("token", ["anon"])[0])
            accept = base64.b64encode(hashlib.sha1(headers.get("sec-websocket-key", "").encode() + _GUID).digest())
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                                 b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            self.open = True
            self.edge.sockets.setdefault(self.user, []).append(self)
            buf = buf[end + 4:]
        n, pos = len(buf), 0
        while n - pos >= 6:
            b0, ln = buf[pos], buf[pos + 1] & 0x7F
            hdr = 2
            if ln == 126:
                if n - pos < 8:
                    break
                ln, hdr = int.from_bytes(buf[pos + 2:pos + 4], "big"), 4
            elif ln == 127:
                if n - pos < 14:
                    break
                ln, hdr = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
            end = pos + hdr + 4 + ln
            if end > n:
                break
            payload = apply_mask(buf[pos + hdr + 4:end], buf[pos + hdr:pos + hdr + 4])
            pos = end
            op = b0 & 0x0F
            if op == 8:  # close: answer and hang up
                if self.transport is not None:
                    self.transport.write(b"\x88\x02" + payload[:2])
                    self.transport.close()
                return
            if op == 1:
                self.on_frame(payload)
        self.buf = buf[pos:] if pos < n else b""

    def _take(self) -> bool:
        f = self.edge.faults
        now = time.monotonic()
        self.tokens = min(f.rate_burst, self.tokens + (now - self.tokens_at) * f.rate_per_sec)
        self.tokens_at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def on_frame(self, payload: bytes) -> None:
        m = _decode(payload)
        t = m.type
        if self.edge.faults.rate_per_sec > 0 and not self._take():
            self.edge.rejected += 1
            self.write(server_frame(('{"type":"error","code":"rate_limited","ref":"%s","retry":true}'
                                     % m.id).encode()))
            return
        if t == "send":
            self.edge.on_send(self, m)
        elif t == "hello":
            self.edge.on_hello(self)
        elif t == "conv.create":
            self.edge.on_create(self, m)


async def serve(port_out, faults: Faults | None = None) -> None:
    """Run until cancelled; ``port_out(port)`` is called once listening."""
    edge = FakeEdge(faults)
    port = await edge.start()
    port_out(port)
    try:
        await asyncio.Event().wait()
    finally:
        await edge.stop()


def process_main(conn, faults: Faults | None = None) -> None:
    """A fake-edge process (multiprocessing target): sends its port, runs until terminated."""
    from sbctl.bench.fabric import prepare_client_process

    prepare_client_process()
    asyncio.run(serve(conn.send, faults))
