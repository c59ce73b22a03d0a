"""A minimal HTTP/2 server (h2 library, asyncio, TLS with ALPN h2)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events

from tests.fakes.tls import Cert


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""
    http2: bool = True


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], "Response | Awaitable[Response]"]


class H2Server:
    def __init__(self, *, cert: Cert, handler: Handler) -> None:
        self.cert, self.handler = cert, handler
        self.port = 0
        self._server: asyncio.Server | None = None

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def start(self) -> H2Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.cert.server_context())
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ssl_obj = writer.get_extra_info("ssl_object")
        if ssl_obj is None or ssl_obj.selected_alpn_protocol() != "h2":
            writer.close()  # only HTTP/2, as APNs
            return
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        streams: dict[int, Request] = {}
        try:
            while data := await reader.read(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        hdrs = {k.lower(): v for k, v in event.headers}
                        streams[event.stream_id] = Request(hdrs.pop(":method"), hdrs.pop(":path"), hdrs)
                    elif isinstance(event, h2.events.DataReceived):
                        streams[event.stream_id].body += event.data
                        conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded):
                        await self._answer(conn, event.stream_id, streams.pop(event.stream_id))
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        return
                writer.write(conn.data_to_send())
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _answer(self, conn: h2.connection.H2Connection, stream_id: int, req: Request) -> None:
        resp = self.handler(req)
        if inspect.isawaitable(resp):
            resp = await resp
        headers = [(":status", str(resp.status)), ("content-length", str(len(resp.body))),
                   *resp.headers.items()]
        conn.send_headers(stream_id, headers, end_stream=not resp.body)
        if resp.body:
            conn.send_data(stream_id, resp.body, end_stream=True)
