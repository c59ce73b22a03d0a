"""A delivery path that breaks without the edge's connection breaking: the
path tick makes the edge re-read INBOX (edge/pathtick.py, sequencer/pathtick.py).

Live INBOX entries travel as INBOX's republish (core NATS) from the stream's
server to the edge's server. Here those are two cells of one node each
(two clusters joined by a gateway, as ``cluster up --cells 2``): INBOX, the
other streams and the sequencer in cell 1, the edge and its client in cell
2, and every gateway connection goes through a TCP proxy the test cuts (new
ones refused until it heals). The cut drops the gateway only; the edge's own
connection to its node never drops, so it gets no reconnect and, before the
path tick, no signal at all: a message stored during the cut and answered
``sent`` reached the socket only with the conversation's next message
(scripts/gateway-cut shows it on ``cluster up --cells 2``).

What it protects: the entry stored while the gateway was down reaches the
recipient's socket after it is back, without any further message, and the
edge counted the break (``switchboard_edge_path_breaks_total``) while its
bus stayed connected throughout. A short cut (a tick lost: re-read at
once) and one longer than three tick intervals (a silence: counted, and the
re-read waits for the ticks to be back, since a read across the cut would
fail and close the socket: the client must keep its socket throughout).
With ``tick_interval = 0`` (no ticks) the message does not arrive within
10 s (tried by hand).
"""

from __future__ import annotations

import asyncio
import time

import msgspec
import nats
import nats.errors
import pytest

from sbctl.embedded import free_port
from switchboard.events import SendReply, SendRequest
from tests.e2e.helpers import STEP, CuttableProxy, unique, until


def cell_config(k: int, route_port: int, gateway_port: int, proxies: dict[int, CuttableProxy]) -> str:
    """Cell ``k`` (1 or 2), one node: a cluster of itself (a supercluster
    needs one), a gateway that listens on ``gateway_port`` and reaches the
    other cell only through that cell's proxy (it advertises its own proxy,
    so gossip never offers the other cell a way around it)."""
    other = 3 - k
    return (f"cluster {{ name: c{k}, listen: 127.0.0.1:{route_port}, routes: [nats-route://127.0.0.1:{route_port}] }}\n"
            f"gateway {{ name: c{k}, listen: 127.0.0.1:{gateway_port}, advertise: 127.0.0.1:{proxies[k].port},\n"
            f"  gateways: [ {{ name: c{other}, urls: [nats://127.0.0.1:{proxies[other].port}] }} ] }}\n")


class Cut:
    """The gateway connections between the two cells, through the proxies."""

    def __init__(self, proxies: dict[int, CuttableProxy]) -> None:
        self.proxies = proxies

    def cut(self) -> None:
        for p in self.proxies.values():
            p.cut()

    def heal(self) -> None:
        for p in self.proxies.values():
            p.heal()


@pytest.fixture
async def cells(make_nats, tmp_path):
    """(node of cell 1, the cut, node of cell 2)."""
    gateway_ports = {1: free_port(), 2: free_port()}
    proxies = {k: CuttableProxy(port) for k, port in gateway_ports.items()}
    for p in proxies.values():
        await p.start()
    nodes = []
    for k in (1, 2):
        conf = tmp_path / f"cell{k}.conf"
        conf.write_text(cell_config(k, free_port(), gateway_ports[k], proxies))
        nodes.append(make_nats(name=f"sb-path-{k}", extra_args=["-c", str(conf)]))
    nc = await nats.connect(nodes[0].url)
    try:  # the meta group spans both cells: JetStream answers once the gateways are up
        await until(lambda: nc.jetstream(timeout=1).account_info(), 45, "JetStream in the supercluster",
                    every=0.2, ignore=(nats.errors.Error, TimeoutError))
    finally:
        await nc.close()
    yield nodes[0], Cut(proxies), nodes[1]
    for p in proxies.values():
        await p.close()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("cut_for", [0.8, 2.5], ids=["short_cut", "long_cut"])
async def test_entry_stored_while_the_gateway_is_cut_arrives_after_it_heals(cells, deploy, cut_for):
    node1, proxy, node2 = cells
    d = await deploy(roles=("sequencer",), nats_url=node1.url)
    edge_unit = await d.start("edge", nats_url=node2.url)
    edge = edge_unit.component("edge")
    alice, bob = unique("alice"), unique("bob")
    nc = await d.nats()  # node 1: where a system send reaches the sequencer during the cut
    b = await d.sdk(bob, edge=edge_unit)
    conv = await b.create_conversation([alice], title="cells")

    async def system_send(body: str) -> SendReply:
        req = SendRequest(sender="system", id=unique("sys"), conv=conv.conv, body=body, kind="system")
        msg = await nc.request(d.settings.subjects.api("system", "send"), msgspec.json.encode(req), timeout=STEP)
        return msgspec.json.decode(msg.data, type=SendReply)

    first = await system_send("before the cut")
    assert (await b.next_message(STEP)).seq == first.seq
    await until(lambda: edge.path.chain.seq != 0, STEP, "ticks reaching the edge across the gateway")
    reconnects = edge.bus.stats.reconnects
    sockets = b.reconnects

    proxy.cut()  # the gateways drop; each side retries and the proxies refuse until heal
    await asyncio.sleep(0.3)
    reply = await system_send("stored while cut")  # cell 1 alone: stored, answered
    assert reply.error is None and reply.seq == first.seq + 1
    await asyncio.sleep(cut_for - 0.3)  # republished meanwhile: cell 2 is out of reach
    healed = time.monotonic()
    proxy.heal()

    got = await b.next_message(10)  # no later message: only the re-read can bring it
    took = time.monotonic() - healed
    print(f"cut {cut_for} s: delivered {took:.2f} s after the gateway was healed")
    assert (got.seq, got.body) == (reply.seq, "stored while cut")
    assert edge.bus.is_connected and edge.bus.stats.reconnects == reconnects  # no reconnect to say so
    reg = edge.metrics.registry
    breaks = {r: reg.get_sample_value("switchboard_edge_path_breaks_total", {"reason": r})
              for r in ("tick_lost", "silent")}
    assert breaks["silent" if cut_for > 1.5 + 0.5 else "tick_lost"], breaks
    assert b.reconnects == sockets  # the socket stayed open: no read across the cut closed it
