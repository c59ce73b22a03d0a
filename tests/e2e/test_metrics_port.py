"""``metrics_port`` of a process running several roles (``up --layout
single``, ``switchboard run a+b``): one page with every role's series and
the process's, served while the roles run and gone when they stop.

What it protects: a role whose registry is not joined on the page (its
series silently missing from Prometheus), process metrics missing or listed
twice (the edge's page and the metrics_port page are built from the same
collectors), a listener left behind after stop (the port stays taken: the
next start fails), and a port in use that ends in a traceback instead of
one line naming ``metrics_port``.
"""

from __future__ import annotations

import asyncio
import re
import socket

import pytest

from sbctl.embedded import free_port
from sbctl.roles import ALL_ROLES
from switchboard.errors import ConfigError
from tests.e2e.promtext import scrape

ROLE_PREFIXES = [f"switchboard_{r}_" for r in ALL_ROLES]


def twice(page: str) -> list[str]:
    types = re.findall(r"^# TYPE (\S+) ", page, re.M)
    return sorted({t for t in types if types.count(t) > 1})


async def test_one_page_with_every_role_and_the_process(deploy):
    port = free_port()
    d = await deploy(roles=ALL_ROLES, metrics_port=port)
    a, b = await d.sdk("alice"), await d.sdk("bob")
    await a.send(to="bob", body="hi")
    await b.next_message(10)
    page = await asyncio.to_thread(scrape, f"http://127.0.0.1:{port}/metrics")
    for prefix in ROLE_PREFIXES:
        assert prefix in page, f"{prefix}* missing from the metrics_port page"
    assert re.search(r"^switchboard_sequencer_sends_total 1\.0$", page, re.M), "the live registry, counting"
    assert re.search(r'^switchboard_process_info\{roles="' + "\\+".join(ALL_ROLES) + r'",', page, re.M)
    assert "\nprocess_cpu_seconds_total " in page and "\nprocess_resident_memory_bytes " in page
    assert not twice(page)
    # The edge's page on its WebSocket port: the same roles, the process once.
    edge_page = await asyncio.to_thread(scrape, f"http://127.0.0.1:{d.port}/metrics")
    for prefix in ROLE_PREFIXES:
        assert prefix in edge_page, prefix
    assert edge_page.count("\nprocess_cpu_seconds_total ") == 1 and not twice(edge_page)

    await d.aclose()
    with socket.socket() as s:  # the listener is gone with the roles: the port can be bound again
        # (SO_REUSEADDR: the scrape's closed connection may sit in TIME_WAIT;
        # Linux still refuses the bind while anything listens on the port)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()


async def test_metrics_port_in_use_is_one_line(deploy):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match=f"metrics_port {port} on 127.0.0.1"):
            await deploy(roles=("sequencer",), metrics_port=port)
