"""Every role's ``/metrics`` on a real ``switchboard up``, the Grafana
dashboard in deploy/grafana/ and the metrics list of docs/operations.md,
held against each other.

One ``up`` (embedded nats-server, one child process per role:
``--layout sequencer,edge,archiver,presence,pusher``) serves the module. A
little traffic runs through it (two users chat, a third one registers a
device and is sent a message while offline: a PUSH entry), then every
child's page (printed on up's ``metrics:`` line) is scraped.

What it protects:
- a dashboard panel that queries a metric no role exports (a typo, a
  rename) shows "No data" forever and nobody notices: every name every
  panel selects must be on some page;
- a role whose metrics are not served (a registry not joined, a port not
  given) or whose process metrics are missing (CPU/RSS per role);
- the edge's aggregate page listing one process's series twice (two
  ``process_cpu_seconds_total`` on one page: Prometheus rejects the scrape);
- docs/operations.md drifting from what is exported, either way.
"""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from sbctl.embedded import free_port
from switchboard_client import Client
from tests.e2e.helpers import REPO, STEP, Proc, procs, unique, until
from tests.e2e.promtext import families, promql_names, queryable, scrape
from tests.e2e.test_cli_up import URL_LINE, clean_env, cli_token

DASHBOARD = REPO / "deploy" / "grafana" / "switchboard.json"
OPERATIONS = REPO / "docs" / "operations.md"
LAYOUT = "sequencer,edge,archiver,presence,pusher"
METRICS_LINE = re.compile(r"^metrics: (.+)$", re.M)
# Per role: series its page must have (besides the process ones), and a
# counter that the traffic below must have moved.
ROLE_SERIES = {
    "sequencer": ("switchboard_sequencer_sends_total", "switchboard_sequencer_send_seconds_bucket",
                  "switchboard_sequencer_partitions_owned", "switchboard_sequencer_fence_conflicts_total",
                  "switchboard_sequencer_lease_renewals_total", "switchboard_sequencer_inbox_copies_total",
                  "switchboard_sequencer_conv_list_requests_total"),
    "edge": ("switchboard_edge_connections", "switchboard_edge_frames_in_total",
             "switchboard_edge_presence_watches"),
    "archiver": ("switchboard_archiver_lag", "switchboard_archiver_messages_total",
                 "switchboard_archiver_batch_seconds_bucket"),
    "presence": ("switchboard_presence_reports_total", "switchboard_presence_changes_total",
                 "switchboard_presence_report_seconds_bucket"),
    "pusher": ("switchboard_pusher_notifications_total", "switchboard_pusher_provider_seconds_bucket",
               "switchboard_pusher_queue_pending", "switchboard_pusher_entries_total"),
}
MOVED = {"sequencer": "switchboard_sequencer_sends_total", "edge": "switchboard_edge_frames_in_total",
         "archiver": "switchboard_archiver_messages_total", "presence": "switchboard_presence_reports_total",
         "pusher": "switchboard_pusher_registrations_total"}
PROCESS_SERIES = ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds",
                  "switchboard_process_info")


def value(page: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in page.splitlines():
        m = re.match(rf"^{re.escape(name)}(\{{.*\}})? (\S+)$", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            total += float(m.group(2))
    return total


class Up:
    def __init__(self, proc: Proc, url: str, pages: dict[str, str], data: str) -> None:
        self.proc = proc
        self.url = url  # the edge's WebSocket URL
        self.pages = pages  # child name (role) -> its /metrics URL
        self.data = data

    def scrape_all(self) -> dict[str, str]:
        return {name: scrape(u) for name, u in self.pages.items()}


@pytest.fixture(scope="module")
async def up(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("metrics-up")
    data = str(tmp / "data")
    port = free_port()
    with procs() as made:
        p = Proc(["up", "--port", str(port), "--data", data, "--layout", LAYOUT], env=clean_env(),
                 log=tmp / "up.log")
        made.append(p)
        out = await p.wait_output("\nmetrics: ", timeout=90)
        out = await p.wait_output("Switchboard is up", timeout=30)
        url = URL_LINE.search(out).group(1)
        line = METRICS_LINE.search(out).group(1)
        pages = dict(part.strip().split(" ", 1) for part in line.split(","))
        assert set(pages) == set(LAYOUT.split(",")), line
        d = Up(p, url, pages, data)
        await traffic(d)
        yield d
        assert p.terminate(timeout=30) == 0, p.output()[-2000:]


async def traffic(d: Up) -> None:
    """Two users chat; a third, offline with a device, is sent a message (a PUSH entry)."""
    alice, bob, carol = unique("alice"), unique("bob"), unique("carol")
    ta, tb, tc = [await asyncio.to_thread(cli_token, u, d.data) for u in (alice, bob, carol)]
    c = await Client(url=d.url, token=tc).connect(STEP)
    await c.register_push("apns", "ab" * 32)
    await c.close()
    a = await Client(url=d.url, token=ta).connect(STEP)
    b = await Client(url=d.url, token=tb).connect(STEP)
    for i in range(3):
        await a.send(to=bob, body=f"hello {i}")
    for _ in range(3):
        await b.next_message(STEP)
    await a.list_conversations()
    # carol's disconnect reaches the sequencer's presence view a moment
    # later; until then a message to her is not a push: send until one is.

    async def pushed() -> bool:
        await a.send(to=carol, body="are you there?")
        page = await asyncio.to_thread(scrape, d.pages["sequencer"])
        return value(page, "switchboard_sequencer_push_entries_total") > 0

    await until(pushed, 30, "a PUSH entry for an offline user", every=0.5)
    await a.close()
    await b.close()

    # The archiver writes, the pusher sends and its queue gauge refreshes within seconds.
    # (The pusher's outcomes per provider are checked against real provider
    # fakes in test_pusher_metrics.py; here its page and the registration.)
    counts: dict[str, float] = {}

    async def moved() -> bool:
        pages = await asyncio.to_thread(d.scrape_all)
        counts.update({r: value(pages[r], MOVED[r]) for r in MOVED})
        return all(counts.values())

    await until(moved, 30, lambda: f"every role's counters moved by the traffic: {counts}", every=0.3)


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, expression) of every target of every panel (rows included)."""
    dash = json.loads(DASHBOARD.read_text())
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                out.append((p["title"], t["expr"]))
            walk(p.get("panels", []))

    walk(dash["panels"])
    return out


async def test_each_role_serves_its_metrics_and_process_metrics(up):
    pages = await asyncio.to_thread(up.scrape_all)
    for role, page in pages.items():
        names = queryable(page)
        missing = [n for n in (*ROLE_SERIES[role], *PROCESS_SERIES) if n not in names]
        assert not missing, f"{role}'s /metrics lacks {missing}"
        # The traffic moved it: the page is the live process's, not a stale registry.
        assert value(page, MOVED[role]) > 0, (role, MOVED[role])
        assert value(page, "switchboard_process_info", roles=role) == 1, f"{role}: process info"
        assert value(page, "process_resident_memory_bytes") > 10e6, role  # a Python process: tens of MB
        # Only its own role's series: one process per role in this layout.
        others = [r for r in ROLE_SERIES if r != role]
        stray = sorted(n for n in names if any(n.startswith(f"switchboard_{o}_") for o in others))
        assert not stray, f"{role}'s page has other roles' series: {stray[:5]}"
    # What the traffic must show on the role that did the work.
    assert value(pages["sequencer"], "switchboard_sequencer_sends_total") >= 4
    assert value(pages["sequencer"], "switchboard_sequencer_send_seconds_count") >= 4
    assert value(pages["sequencer"], "switchboard_sequencer_conv_list_requests_total") >= 1
    assert value(pages["sequencer"], "switchboard_sequencer_partitions_owned") == \
        value(pages["sequencer"], "switchboard_sequencer_partitions")  # the only sequencer owns them all
    assert value(pages["archiver"], "switchboard_archiver_messages_total") >= 4


async def test_dashboard_queries_only_metrics_that_exist(up):
    pages = await asyncio.to_thread(up.scrape_all)
    pages["edge (public port)"] = await asyncio.to_thread(scrape, up.url.replace("ws://", "http://")
                                                          .replace("/ws", "/metrics"))
    exported = set().union(*(queryable(p) for p in pages.values()))
    exprs = dashboard_exprs()
    assert len(exprs) >= 20, "the dashboard lost its panels"
    used = set()
    for title, expr in exprs:
        names = promql_names(expr)
        assert names, f"panel {title!r}: no metric in {expr!r}"
        unknown = sorted(names - exported)
        assert not unknown, f"panel {title!r} queries {unknown}, which no role exports"
        used |= names
    # Every role is on the dashboard, and process CPU/RSS per role.
    for prefix in ("switchboard_sequencer_", "switchboard_edge_", "switchboard_archiver_", "switchboard_presence_",
                   "switchboard_pusher_", "process_cpu_seconds_total", "process_resident_memory_bytes"):
        assert any(n.startswith(prefix) for n in used), prefix


def test_dashboard_json_is_a_grafana_dashboard():
    """Structure Grafana needs to import it: unique panel ids, a grid
    position, a Prometheus data source by the variable, a refId per target."""
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 30
    assert [v["name"] for v in dash["templating"]["list"] if v["type"] == "datasource"] == ["datasource"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        assert {"h", "w", "x", "y"} <= set(p["gridPos"]) and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["expr"].count("(") == t["expr"].count(")"), t["expr"]


async def test_edge_aggregate_page_lists_each_series_once(up):
    """The edge's page on its public port re-exports the other children's
    role series, but not their process series (one process's only)."""
    page = await asyncio.to_thread(scrape, up.url.replace("ws://", "http://").replace("/ws", "/metrics"))
    types = re.findall(r"^# TYPE (\S+) ", page, re.M)
    dup = sorted({t for t in types if types.count(t) > 1})
    assert not dup, f"families twice on one page: {dup}"
    for role in ROLE_SERIES:
        assert f"switchboard_{role}_" in page, role
    assert value(page, "switchboard_process_info", roles="edge") == 1
    assert page.count("\nprocess_cpu_seconds_total ") == 1


async def test_operations_doc_lists_every_metric(up):
    """docs/operations.md, "Metrics (Prometheus)": every family a role exports is listed,
    and every switchboard_* name listed there is exported."""
    pages = await asyncio.to_thread(up.scrape_all)
    exported: dict[str, str] = {}
    for page in pages.values():
        exported.update(families(page))
    doc = OPERATIONS.read_text()
    section = doc[doc.index("### Metrics (Prometheus)"):]
    section = section[:section.index("\n## ")]
    listed = set(re.findall(r"`([a-z_:]+)(?:\{[^`]*\})?`", section))
    undocumented = sorted(n for n in exported if n not in listed)
    assert not undocumented, f"exported but not in docs/operations.md, Metrics: {undocumented}"
    stale = sorted(n for n in listed if n.startswith("switchboard_") and n not in exported)
    assert not stale, f"listed in docs/operations.md but exported by no role: {stale}"
