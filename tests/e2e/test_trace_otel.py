"""OpenTelemetry export of a traced message (switchboard/trace_otel.py).

The edge, the sequencer and the archiver run as three separate processes
with only the standard ``OTEL_*`` variables pointing at a tiny OTLP/HTTP
receiver in the test (loopback; it decodes the protobuf
``ExportTraceServiceRequest``). What this protects:

- every role's hops of one message arrive as spans of ONE trace, whose id is
  derived from (conv, sender, id): processes that never talk about tracing
  still join the same trace;
- ``edge.received`` is the root span and every other hop its child;
- each process says who it is (``service.name`` switchboard-<role>);
- an untraced message produces no span, and without ``OTEL_*`` nothing of
  OpenTelemetry is even imported (zero cost when off).
"""

from __future__ import annotations

import gzip
import subprocess
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from switchboard import trace_otel
from tests.e2e.helpers import PYTHON, REPO, STEP, unique, until

pb = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2",
                         reason="the otel extra (pip install -e '.[test]' brings it)")


class Receiver:
    """An OTLP/HTTP trace receiver on 127.0.0.1: keeps every span with its
    resource's attributes."""

    def __init__(self) -> None:
        self.spans: list[tuple[dict, object]] = []
        self.requests = 0
        self.lock = threading.Lock()  # the handler thread appends, the test reads
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                enc = self.headers.get("Content-Encoding", "")
                if enc == "gzip":
                    body = gzip.decompress(body)
                elif enc == "deflate":
                    body = zlib.decompress(body)
                req = pb.ExportTraceServiceRequest.FromString(body)
                with outer.lock:
                    outer.requests += 1
                    for rs in req.resource_spans:
                        res = {a.key: a.value.string_value for a in rs.resource.attributes}
                        for ss in rs.scope_spans:
                            for span in ss.spans:
                                outer.spans.append((res, span))
                out = pb.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def all(self) -> list[tuple[dict, object]]:
        """Every span received so far (resource attributes, span)."""
        with self.lock:
            return list(self.spans)

    def of(self, trace_id: int) -> list[tuple[dict, object]]:
        want = trace_id.to_bytes(16, "big")
        with self.lock:
            return [(r, s) for r, s in self.spans if s.trace_id == want]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def attrs(span) -> dict:
    out = {}
    for a in span.attributes:
        v = a.value
        out[a.key] = v.int_value if v.HasField("int_value") else v.string_value
    return out


@pytest.fixture
def rx():
    r = Receiver()
    yield r
    r.close()


async def test_spans_of_every_role_join_one_trace(rx, deploy):
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": rx.url, "OTEL_BSP_SCHEDULE_DELAY": "100",
           "OTEL_TRACES_EXPORTER": None, "OTEL_SDK_DISABLED": None}  # none of the shell's say-no variables
    d = await deploy(roles=("sequencer", "archiver", "edge"), mode="processes", trace_sample=0.0, env=env)
    alice, bob = await d.raw("alice"), await d.raw("bob")
    mid, plain = unique("ot-"), unique("plain-")
    await alice.send({"type": "send", "id": mid, "to": "bob", "body": "traced", "trace": True})
    sent = await alice.answer(mid)
    await alice.send({"type": "send", "id": plain, "to": "bob", "body": "not traced"})
    await alice.answer(plain)
    for want in (mid, plain):
        m = await bob.expect("msg", id=want)
        await bob.send({"type": "ack", "cursor": m["cursor"]})
    conv = sent["conv"]
    tid = trace_otel.trace_id_of(conv, "alice", mid)
    root = trace_otel.root_span_id_of(conv, "alice", mid).to_bytes(8, "big")
    want = {"edge.received", "sequencer.stored", "sequencer.fanout", "edge.delivered", "edge.acked",
            "archiver.stored"}
    await until(lambda: {s.name for _, s in rx.of(tid)} >= want, 3 * STEP,
                lambda: f"spans {sorted(want)}; got {sorted(s.name for _, s in rx.of(tid))}", every=0.1)
    spans = rx.of(tid)
    # One trace across three processes, each naming its service.
    assert {r["service.name"] for r, _ in spans} == {"switchboard-edge", "switchboard-sequencer",
                                                     "switchboard-archiver"}
    roots = [s for _, s in spans if s.name == "edge.received"]
    assert len(roots) == 1 and roots[0].span_id == root and roots[0].parent_span_id == b""
    assert all(s.parent_span_id == root for _, s in spans if s.name != "edge.received")
    stored = next(s for _, s in spans if s.name == "sequencer.stored")
    a = attrs(stored)
    assert (a["sb.conv"], a["sb.id"], a["sb.sender"], a["sb.seq"]) == (conv, mid, "alice", sent["seq"])
    assert stored.start_time_unix_nano > 0 and stored.end_time_unix_nano == stored.start_time_unix_nano
    # The untraced message: no span at all.
    assert not [s for _, s in rx.all() if any(x.key == "sb.id" and x.value.string_value == plain
                                              for x in s.attributes)]
    await alice.close()
    await bob.close()
    for role in ("edge", "archiver", "sequencer"):  # a clean stop flushes the exporter and exits 0
        unit = d.unit(role)
        assert await unit.stop() == 0, unit.output()[-2000:]


def test_off_by_default_and_nothing_imported():
    """Without OTEL_* (or with them saying no) there is no hook, and a
    process that records traces never imports OpenTelemetry."""
    assert not trace_otel.wanted({})
    assert not trace_otel.wanted({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"})
    assert not trace_otel.wanted({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"})
    assert trace_otel.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert trace_otel.wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"})
    assert trace_otel.wanted({"OTEL_TRACES_EXPORTER": "console,otlp"})
    assert trace_otel.from_env("edge", "e1", env={}) is None
    code = ("import sys\n"
            "from switchboard.trace import Tracer\n"
            "t = Tracer(publish=lambda s, d: None, prefix='sb', role='edge', instance='e', sample=1.0)\n"
            "t.record('edge.received', conv='c', id='m', sender='a')\n"
            "assert t.exporters == [], t.exporters\n"
            "assert not [m for m in sys.modules if m.startswith('opentelemetry')], 'imported'\n")
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("OTEL_")}
    subprocess.run([PYTHON, "-c", code], cwd=REPO, env=env, check=True, timeout=60)


def test_trace_ids_are_deterministic_and_distinct():
    """Every process computes the same ids for one message, different ones for another."""
    a = trace_otel.trace_id_of("dm-x", "alice", "m1")
    assert a == trace_otel.trace_id_of("dm-x", "alice", "m1") and 0 < a < 2**128
    assert a != trace_otel.trace_id_of("dm-x", "alice", "m2") != trace_otel.trace_id_of("dm-x", "bob", "m1")
    assert 0 < trace_otel.root_span_id_of("dm-x", "alice", "m1") < 2**64
