"""The edge's socket layer over real TCP, without a sequencer: HTTP routes,
admission, auth at the handshake, hello rules, frame size limits, keepalive.

The archiver role is there only because it creates the streams the edge
reads (INBOX); nothing here sends a message.
"""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
from websockets.exceptions import InvalidStatus

from tests.e2e.helpers import STEP, Raw, unique, until

MAX_FRAME = 4096
ROLES = ("archiver", "edge")


@pytest.fixture(scope="module")
async def dep(deploy_module):
    return await deploy_module(roles=ROLES, max_frame_bytes=MAX_FRAME, max_body_bytes=1024)


async def connections(d, n: int) -> bool:
    """Whether the edge counts ``n`` open WebSocket connections (its /metrics)."""
    return (await d.metrics("switchboard_edge_connections"))["switchboard_edge_connections"] == n


async def http_get(host: str, port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), STEP)
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), STEP)
    writer.close()
    return status, headers, body


@pytest.mark.parametrize("path,status,ctype", [
    ("/healthz", 200, "text/plain"), ("/metrics", 200, "text/plain; version=0.0.4"),
    ("/", 200, "text/html; charset=utf-8"), ("/index.html", 200, "text/html; charset=utf-8"),
    ("/nope", 404, "text/plain")])
async def test_http_routes(dep, path, status, ctype):
    got, headers, body = await http_get(dep.settings.host, dep.settings.port, path)
    assert (got, headers["content-type"]) == (status, ctype)
    if path == "/metrics":
        assert b"switchboard_edge_connections" in body
    if path == "/":
        assert b"<html" in body.lower()


async def test_upgrade_on_wrong_path_is_404(dep):
    with pytest.raises(InvalidStatus) as info:
        await Raw.open(dep.url.replace("/ws", "/other"), dep.token("x"))
    assert info.value.response.status_code == 404


async def test_admission_503_with_retry_after(deploy):
    """admit_per_sec=1: of two upgrades at once, one takes the second's only
    token and the other is refused with 503 and its appointment. (Opened one
    after the other, the second came more than a second later on a loaded CI
    box, found the token refilled, and was admitted.)"""
    d = await deploy(roles=ROLES, admit_per_sec=1.0)
    got = await asyncio.gather(*(Raw.open(d.url, d.token(unique(u))) for u in ("a", "b")), return_exceptions=True)
    refused = [r for r in got if isinstance(r, InvalidStatus)]
    for r in got:
        if not isinstance(r, BaseException):
            await r.close()
    assert len(refused) == 1, got
    resp = refused[0].response
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "1"


async def test_bad_token_closed_4001(dep):
    r = await dep.raw(token="not-a-jwt", hello=False)
    await asyncio.wait_for(r.closed.wait(), STEP)
    assert r.ws.close_code == 4001 and r.ws.close_reason


async def test_hello_welcome_synced_and_errors_keep_the_socket(dep):
    a = await dep.raw(unique("alice"))
    assert a.welcome["type"] == "welcome" and a.synced["cursor"] >= 0
    await a.send("{broken")
    assert (await a.expect("error"))["code"] == "bad_json"
    await a.send({"type": "send", "id": "big", "to": "bob", "body": "x" * (MAX_FRAME + 10)})
    err = await a.expect("error")
    assert (err["code"], err["ref"]) == ("frame_too_large", "big")
    await a.send({"type": "hello", "cursor": None})
    assert (await a.expect("error"))["code"] == "bad_frame"
    assert not a.closed.is_set()


async def test_frames_before_hello_answered_hello_required(dep):
    b = await dep.raw(unique("b"), hello=False)
    await b.send({"type": "ack", "cursor": 1})
    assert (await b.expect("error"))["code"] == "hello_required"
    await b.hello()  # and hello still works afterwards


async def test_hello_and_more_frames_in_one_read(dep):
    """Frames read together with hello are handled after the replay, in order."""
    a = await dep.raw(unique("c"), hello=False)
    await a.send(json.dumps({"type": "hello", "cursor": None}))
    await a.send("{x")
    await a.expect("welcome")
    await a.expect("synced")
    assert (await a.expect("error"))["code"] == "bad_json"


async def test_frame_far_above_limit_closes_1009(dep):
    a = await dep.raw(unique("alice"))
    await a.send(json.dumps({"type": "send", "id": "huge", "to": "bob", "body": "x" * (MAX_FRAME * 5)}))
    await asyncio.wait_for(a.closed.wait(), STEP)
    assert a.ws.close_code == 1009


async def test_fragmented_message_is_one_frame(dep):
    a = await dep.raw(unique("frag"))
    await a.ws.send(iter(['{"type":"hi', 'story","id":"h1",', '"conv":"c.1"}']))  # three fragments
    err = await a.expect("error")
    assert (err["code"], err["ref"]) == ("invalid_id", "h1")


async def test_no_hello_closed_4002(deploy):
    d = await deploy(roles=ROLES, hello_timeout=0.3)
    r = await d.raw(unique("quiet"), hello=False)
    await asyncio.wait_for(r.closed.wait(), STEP)
    assert r.ws.close_code == 4002


async def test_silent_peer_dropped_by_keepalive(deploy):
    """A peer that answers nothing (not even pings) is closed after
    ping_interval + ping_timeout; a live one that answers pings stays."""
    d = await deploy(roles=ROLES, ping_interval=0.2, ping_timeout=0.2)
    live = await d.raw(unique("live"))
    sock = socket.create_connection((d.settings.host, d.settings.port))
    sock.sendall(f"GET /ws?token={d.token(unique('dead'))} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 "Sec-WebSocket-Version: 13\r\n\r\n".encode())
    await until(lambda: connections(d, 2), STEP, "the silent peer's connection")
    # It never reads nor answers: pinged, then closed after 0.2 + 0.2 s.
    await until(lambda: connections(d, 1), 1.5, "the silent peer closed by keepalive")
    assert not live.closed.is_set()
    sock.close()
