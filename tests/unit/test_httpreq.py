"""edge.httpreq.BodyReader: the reader of plain HTTP requests with a body
(POST /dev/token) under the WebSocket transport. It holds bytes from the
network before anything is authenticated, so every bound matters: headers
(8 KiB), body (max_body), and a clear refusal for what is not HTTP."""

from __future__ import annotations

import pytest
from websockets.http11 import Response

from edge.httpreq import MAX_HEAD, BodyReader

REQ = b"POST /dev/token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 17\r\n\r\n{\"user\": \"alice\"}"


@pytest.mark.parametrize("cut", [1, 3, 10, 40, len(REQ) - 17, len(REQ) - 1])
def test_request_in_pieces(cut):
    r = BodyReader(4096)
    assert r.feed(REQ[:cut]) is None
    request, body = r.feed(REQ[cut:])
    assert (request.method, request.path, request.headers["Host"], body) == (
        "POST", "/dev/token", "127.0.0.1", b'{"user": "alice"}')


def test_no_body_and_extra_bytes_after_it():
    request, body = BodyReader(10).feed(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\ntrailing")
    assert (request.method, body) == ("HEAD", b"")


REFUSED = [
    ("body over the bound", b"POST / HTTP/1.1\r\nContent-Length: 5000\r\n\r\n", 413),
    ("negative length", b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
    ("two lengths", b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400),
    ("chunked", b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 411),
    ("not HTTP", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n", 400),  # a TLS hello, say
    ("bad request line", b"POST nopath HTTP/1.1\r\n", 400),
    ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),
    ("bad header", b"POST / HTTP/1.1\r\nno colon here\r\n\r\n", 400),
    ("non-ASCII header", "POST / HTTP/1.1\r\nX: é\r\n\r\n".encode(), 400),
    ("headers too long", b"POST / HTTP/1.1\r\nX: " + b"a" * MAX_HEAD + b"\r\n\r\n", 431),
    ("endless headers", b"POST / HTTP/1.1\r\nX: " + b"a" * (MAX_HEAD + 1), 431),
    ("too many headers", b"POST / HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"\r\n", 431),
]


@pytest.mark.parametrize("name,data,status", REFUSED, ids=[r[0] for r in REFUSED])
def test_refused(name, data, status):
    got = BodyReader(4096).feed(data)
    assert isinstance(got, Response) and got.status_code == status
