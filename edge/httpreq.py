"""Plain HTTP requests with a method other than GET on the WebSocket port.

websockets' handshake parser reads GET requests only, without a body (it
refuses any ``Content-Length`` but 0). :mod:`edge.transport` hands the bytes
of a connection whose first request is not a GET to a :class:`BodyReader`,
which reads the request line, the headers and a body of at most ``max_body``
bytes, then the edge answers it (e.g. ``POST /dev/token``) and closes the
connection, as it does after every plain HTTP answer.

Bounded: at most :data:`MAX_HEAD` bytes of request line and headers and
``max_body`` bytes of body are held; the connection's open timeout
(edge.transport.WsConfig.open_timeout) cuts a client that sends them too slowly.
"""

from __future__ import annotations

from http import HTTPStatus

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

# Request line plus headers: a browser's POST sends well under 2 KiB.
MAX_HEAD = 8 * 1024
MAX_HEADERS = 100


def error_response(status: HTTPStatus, text: str) -> Response:
    body = text.encode() + b"\n"
    headers = Headers([("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
                       ("Connection", "close")])
    return Response(status.value, status.phrase, headers, body)


class BodyReader:
    """Accumulates one request; :meth:`feed` returns ``(request, body)`` once
    it is complete, a :class:`Response` if it is refused, None for more bytes."""

    __slots__ = ("max_body", "_buf")

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        self._buf = bytearray()

    def feed(self, data: bytes) -> tuple[Request, bytes] | Response | None:
        buf = self._buf
        buf += data
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD:
                return error_response(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request headers too large")
            line_end = buf.find(b"\r\n")
            if line_end >= 0 and _request_line(bytes(buf[:line_end])) is None:
                return error_response(HTTPStatus.BAD_REQUEST, "bad request line")  # not HTTP: say so at once
            return None
        if end > MAX_HEAD:
            return error_response(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request headers too large")
        parsed = _parse_head(bytes(buf[:end]))
        if isinstance(parsed, Response):
            return parsed
        if "Transfer-Encoding" in parsed.headers:
            return error_response(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length")
        lengths = set(parsed.headers.get_all("Content-Length")) or {"0"}
        raw = lengths.pop()
        if lengths or not raw.isdigit():
            return error_response(HTTPStatus.BAD_REQUEST, "bad Content-Length")
        length = int(raw)
        if length > self.max_body:
            return error_response(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body larger than {self.max_body} bytes")
        start = end + 4
        if len(buf) - start < length:
            return None
        return parsed, bytes(buf[start:start + length])


def _request_line(line: bytes) -> list[str] | None:
    """(method, path, protocol) of a well-formed request line, else None."""
    try:
        parts = line.decode("ascii").split(" ")
    except UnicodeDecodeError:
        return None
    if len(parts) != 3 or not parts[0].isalpha() or not parts[1].startswith("/") \
            or parts[2] not in ("HTTP/1.1", "HTTP/1.0"):
        return None
    return parts


def _parse_head(head: bytes) -> Request | Response:
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        return error_response(HTTPStatus.BAD_REQUEST, "request line and headers must be ASCII")
    lines = text.split("\r\n")
    parts = _request_line(lines[0].encode())
    if parts is None:
        return error_response(HTTPStatus.BAD_REQUEST, "bad request line")
    if len(lines) - 1 > MAX_HEADERS:
        return error_response(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "too many headers")
    headers = Headers()
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            return error_response(HTTPStatus.BAD_REQUEST, "bad header line")
        headers[name] = value.strip()
    return Request(parts[1], headers, parts[0], parts[2])


__all__ = ["BodyReader", "MAX_HEAD", "error_response"]
