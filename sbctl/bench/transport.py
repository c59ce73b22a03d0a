"""CPU per message of the edge's socket layer: websockets' asyncio server (the
edge before edge.transport) against edge.transport.

Why: the socket layer was the edge's largest cost (hot-path-measured.md);
this shows what the rewrite buys, without NATS or a sequencer in the way.
Each message is what a 1:1 send costs the sender's socket: the client sends
one ``send`` frame, the server decodes and validates it (as the session
does) and writes three ~160-byte frames back (``sent`` and two ``msg``s).

The server runs in this process (its CPU time is what is reported, in µs
per message), the clients in a child process. ``--batch 1``: each client
sends one frame and waits for its three answers (one frame per read, the
interactive case); ``--batch 16``: sixteen frames per write (a busy edge,
where reads carry several frames).

    python -m sbctl.bench.transport --messages 20000 --clients 20 --batch 1
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import time

import uvloop
from websockets.asyncio.server import serve
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from edge.transport import WsConfig, WsConn, WsServer
from switchboard import frames

SEND = frames.encode(frames.Send(id="m-01HZX3ABCDEFG", to="bob", body="standup in five minutes, bring coffee"))
OUT = [frames.encode(frames.Msg(conv="dm-" + "a" * 40, seq=17, id="m-01HZX3ABCDEFG", from_="alice",
                                body="standup in five minutes, bring coffee", ts=1718000000123, cursor=1130 + i))
       for i in range(3)]
MAX_SIZE = 4 * 64 * 1024


def _handle(data: bytes | str) -> None:
    frames.decode_client_frame(data, max_body=16 * 1024)


# -- the old edge: websockets.asyncio.server + direct sans-I/O writes (edge/outbox.py) ----------
async def old_server(port: int, ready: asyncio.Event, stop: asyncio.Event) -> None:
    async def handler(ws) -> None:
        protocol, send_data = ws.protocol, ws.send_data
        try:
            async for data in ws:
                _handle(data)
                for f in OUT:  # what edge/outbox.direct_writer did: frame and write at once
                    protocol.send_text(f)
                    send_data()
        except ConnectionClosed:
            pass  # the clients leave without a closing handshake

    async with serve(handler, "127.0.0.1", port, max_size=MAX_SIZE, max_queue=8, compression=None,
                     ping_interval=20, ping_timeout=20, close_timeout=2.0, server_header=None):
        ready.set()
        await stop.wait()


# -- the new edge: edge.transport ------------------------------------------------------------
class _Echo3:
    __slots__ = ("conn",)

    def __init__(self, conn: WsConn) -> None:
        self.conn = conn

    def on_frame(self, data: bytes) -> None:
        _handle(data)
        send = self.conn.send
        for f in OUT:
            send(f)

    def on_slow_consumer(self) -> None: ...

    def on_close(self) -> None: ...


async def new_server(port: int, ready: asyncio.Event, stop: asyncio.Event) -> None:
    config = WsConfig(max_size=MAX_SIZE, outbox_bytes=1 << 20, ping_interval=20, ping_timeout=20, close_timeout=2.0)
    server = WsServer(config=config, route=lambda req: None, accept=_Echo3)
    await server.listen("127.0.0.1", port)
    ready.set()
    await stop.wait()
    await server.close(1001, "bye")


# -- clients (child process) -------------------------------------------------------------------
class _Client(asyncio.Protocol):
    def __init__(self, port: int, batch: int, rounds: int, done: asyncio.Future) -> None:
        self.proto = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/ws"), max_size=None)
        self.batch, self.rounds, self.done = batch, rounds, done
        self.got = 0
        self.open = False

    def connection_made(self, transport) -> None:
        self.t = transport
        self.proto.send_request(self.proto.connect())
        self._flush()

    def _flush(self) -> None:
        data = b"".join(self.proto.data_to_send())
        if data:
            self.t.write(data)

    def _burst(self) -> None:
        for _ in range(self.batch):
            self.proto.send_text(SEND)
        self._flush()

    def data_received(self, data: bytes) -> None:
        self.proto.receive_data(data)
        for ev in self.proto.events_received():
            if isinstance(ev, Response):
                self._burst()
            elif isinstance(ev, Frame) and ev.opcode is Opcode.TEXT:
                self.got += 1
                if self.got % (3 * self.batch) == 0:
                    self.rounds -= 1
                    if self.rounds == 0:
                        self.done.set_result(None) if not self.done.done() else None
                        return
                    self._burst()
        self._flush()


async def _clients(port: int, clients: int, batch: int, rounds: int) -> None:
    loop = asyncio.get_running_loop()
    done = [loop.create_future() for _ in range(clients)]
    for d in done:
        await loop.create_connection(lambda d=d: _Client(port, batch, rounds, d), "127.0.0.1", port)
    await asyncio.gather(*done)


def _client_main(port: int, clients: int, batch: int, rounds: int) -> None:
    uvloop.run(_clients(port, clients, batch, rounds))


# -- one run -----------------------------------------------------------------------------------
async def run(which: str, messages: int, clients: int, batch: int) -> float:
    """Server CPU µs per message for ``which`` ("old" or "new")."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ready, stop = asyncio.Event(), asyncio.Event()
    server = asyncio.create_task((old_server if which == "old" else new_server)(port, ready, stop))
    await ready.wait()
    rounds = max(1, messages // (clients * batch))
    child = multiprocessing.get_context("spawn").Process(target=_client_main, args=(port, clients, batch, rounds))
    cpu0 = time.process_time()
    child.start()
    while child.is_alive():
        await asyncio.sleep(0.01)
    cpu = time.process_time() - cpu0
    stop.set()
    await server
    return cpu / (rounds * clients * batch) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m sbctl.bench.transport", description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=20000, help="send frames per run, all clients (default 20000)")
    ap.add_argument("--clients", type=int, default=20, help="WebSocket clients, in one child process (default 20)")
    ap.add_argument("--batch", type=int, default=1, help="send frames per client write (default 1)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="old/new run pairs, alternated so drift hits both alike (default 3)")
    a = ap.parse_args()

    async def all_runs() -> None:
        for which in ("old", "new") * a.repeat:
            us = await run(which, a.messages, a.clients, a.batch)
            print(f"{which}: {us:6.2f} µs server CPU per message (1 frame in, 3 out; batch {a.batch})", flush=True)

    uvloop.run(all_runs())


if __name__ == "__main__":
    main()
