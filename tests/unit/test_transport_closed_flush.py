"""edge.transport: a socket whose transport is already closed when the
tick's flush reaches it (uvloop raises RuntimeError "the handler is closed"
on such a write; the fake transport raises too) must not strand the other
sockets flushed in the same tick.

What it protects: before the fix the exception ended WsServer._flush; every
socket after the failing one in that tick's list kept its dirty flag and was
never written again (its answers, messages and pings piled up unsent). The
black-box fuzzer saw these as stalled sockets (`switchboard bench fuzz`,
role processes on uvloop, "the handler is closed" in the edge's log)."""

from __future__ import annotations

import pytest

from tests.unit.test_edge_transport import Peer, make_server, texts, tick


@pytest.mark.parametrize("closed", [0, 1, 2], ids=["first", "middle", "last"])
async def test_a_closed_socket_in_the_flush_does_not_strand_the_others(closed: int) -> None:
    server, _ = make_server()
    peers = [Peer(server) for _ in range(3)]
    await tick()
    for p in peers:
        p.pull()
    for p in peers:
        assert p.conn.send(b"x")
    peers[closed].t.closed = True  # gone under us; connection_lost not delivered yet
    await tick()
    others = [p for i, p in enumerate(peers) if i != closed]
    assert [texts(p.pull()) for p in others] == [[b"x"], [b"x"]]
    for p in others:  # and they keep being written in later ticks
        assert p.conn.send(b"y")
    await tick()
    assert [texts(p.pull()) for p in others] == [[b"y"], [b"y"]]
