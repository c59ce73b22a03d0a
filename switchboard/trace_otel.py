"""OpenTelemetry export of trace records (optional: ``pip install 'switchboard[otel]'``).

When the standard variables ask for OTLP export (``OTEL_EXPORTER_OTLP_ENDPOINT``
or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` set, or ``OTEL_TRACES_EXPORTER``
naming ``otlp``; ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``
turn it off), every :class:`~switchboard.trace.Tracer` hands each record it
published to :func:`from_env`'s hook as well, which makes it a span:

- one trace per message: the trace id is derived from (conv, sender, id)
  (sha256), so the spans of the edge, the sequencer, the pusher and the
  archiver, in any process, join one trace without passing a context;
- ``edge.received`` is the trace's root span (its span id is derived too);
  every other hop is a child of it (a system message, which has no
  ``edge.received``, shows its spans under a missing root);
- a span is a point in time (start = end = the record's ``at``), named by the
  stage, with the record's fields as ``sb.*`` attributes; ``error`` hops have
  status ERROR; the resource says ``service.name`` = ``switchboard-<role>``
  (unless ``OTEL_SERVICE_NAME`` says otherwise) and ``service.instance.id``.

The OTLP/HTTP exporter (protobuf) and the batch processor read the other
``OTEL_*`` variables themselves (headers, timeout, ``OTEL_BSP_*``). Off by
default, and nothing of OpenTelemetry is imported unless export is asked
for; untraced messages never reach a tracer's exporters anyway.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from switchboard import log

if TYPE_CHECKING:
    from switchboard.trace import TraceRecord  # (trace imports this module)

_FIELDS = ("seq", "stream_seq", "device", "user", "members", "mode", "cursor", "reason", "code", "provider")
_hooks: dict[tuple[str, str], _SpanExport] = {}
_lock = threading.Lock()
_warned = False


def wanted(env: Mapping[str, str] | None = None) -> bool:
    """Whether the ``OTEL_*`` variables ask for OTLP trace export."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = [e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "").split(",") if e.strip()]
    if exporters:
        return "otlp" in exporters
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def _key(conv: str, sender: str, id: str) -> bytes:
    return hashlib.sha256(f"{conv}\n{sender}\n{id}".encode()).digest()


def trace_id_of(conv: str, sender: str, id: str) -> int:
    """The 128-bit OpenTelemetry trace id of one message (never 0)."""
    return int.from_bytes(_key(conv, sender, id)[:16], "big") or 1


def root_span_id_of(conv: str, sender: str, id: str) -> int:
    """The 64-bit span id of the message's root span (``edge.received``)."""
    return int.from_bytes(_key(conv, sender, id)[16:24], "big") or 1


def from_env(role: str, instance: str, env: Mapping[str, str] | None = None) -> Callable[[TraceRecord], None] | None:
    """The export hook for a tracer of ``role``/``instance``, or None when
    export is not asked for or the extra is not installed (said once in the
    log). One per (role, instance) in a process, shared by its tracers."""
    global _warned
    if not wanted(env):
        return None
    with _lock:
        hook = _hooks.get((role, instance))
        if hook is not None:
            return hook
        e = os.environ if env is None else env
        proto = e.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or e.get("OTEL_EXPORTER_OTLP_PROTOCOL") or ""
        if proto.startswith("grpc") and not _hooks:
            log.get("trace").warning("OTEL_EXPORTER_OTLP_PROTOCOL asks for gRPC; switchboard exports OTLP over "
                                     "HTTP (protobuf) only: point the endpoint at the collector's HTTP port")
        try:
            hook = _SpanExport(role, instance)
        except ImportError as exc:
            if not _warned:
                _warned = True
                log.get("trace").warning("OTEL_* asks for trace export but the otel extra is not installed: "
                                         "pip install 'switchboard[otel]'", error=str(exc))
            return None
        _hooks[(role, instance)] = hook
        return hook


def shutdown() -> None:
    """Flush and stop every exporter of this process (also done at exit)."""
    with _lock:
        hooks = list(_hooks.values())
        _hooks.clear()
    for h in hooks:
        h.shutdown()


class _SpanExport:
    """Records -> spans on one TracerProvider (batch processor, OTLP/HTTP)."""

    def __init__(self, role: str, instance: str) -> None:
        from opentelemetry import context as otel_context, trace as otel_trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

        import switchboard

        class Ids(RandomIdGenerator):
            """Random ids, except the root span's, which are set just before it starts."""

            def __init__(self) -> None:
                self.root: tuple[int, int] | None = None

            def generate_trace_id(self) -> int:
                return self.root[0] if self.root is not None else super().generate_trace_id()

            def generate_span_id(self) -> int:
                if self.root is not None:
                    span_id, self.root = self.root[1], None
                    return span_id
                return random.getrandbits(64) or 1

        attrs = {"service.instance.id": instance, "sb.role": role}
        if not os.environ.get("OTEL_SERVICE_NAME"):
            attrs["service.name"] = f"switchboard-{role}"
        self._ids = Ids()
        self._provider = TracerProvider(resource=Resource.create(attrs), id_generator=self._ids)
        self._provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self._tracer = self._provider.get_tracer("switchboard.trace", switchboard.__version__)
        self._trace = otel_trace
        self._empty = otel_context.Context()
        self._lock = threading.Lock()

    def __call__(self, rec: TraceRecord) -> None:
        t = self._trace
        tid = trace_id_of(rec.conv, rec.sender, rec.id)
        root = root_span_id_of(rec.conv, rec.sender, rec.id)
        attrs: dict[str, Any] = {"sb.stage": rec.stage, "sb.role": rec.role, "sb.instance": rec.instance,
                                 "sb.conv": rec.conv, "sb.sender": rec.sender, "sb.id": rec.id}
        for k in _FIELDS:
            v = getattr(rec, k, None)
            if v is not None:
                attrs[f"sb.{k}"] = v
        at = rec.at * 1_000_000
        with self._lock:  # the root's ids are handed to the generator for exactly one span
            if rec.stage == "edge.received":
                self._ids.root = (tid, root)
                ctx = self._empty
            else:
                parent = t.NonRecordingSpan(t.SpanContext(trace_id=tid, span_id=root, is_remote=True,
                                                          trace_flags=t.TraceFlags(t.TraceFlags.SAMPLED)))
                ctx = t.set_span_in_context(parent, self._empty)
            try:
                span = self._tracer.start_span(rec.stage, context=ctx, kind=t.SpanKind.INTERNAL, attributes=attrs,
                                               start_time=at)
            finally:
                self._ids.root = None
        if rec.stage == "error":
            span.set_status(t.Status(t.StatusCode.ERROR, rec.code or "error"))
        span.end(end_time=at)

    def shutdown(self) -> None:
        self._provider.shutdown()
