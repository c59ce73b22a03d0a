"""Typed request/reply between services: one descriptor, one server wrapper, one call().

- :class:`Endpoint` (:mod:`.endpoint`): a subject (or a template under the
  prefix: ``"api.conv.get"``, ``"receipt.{conv}"``), a request type and a
  reply type (msgspec Structs). Every endpoint of the fabric is described
  once, in :mod:`switchboard.api`.
- :class:`RpcService` (:mod:`.server`): a NATS micro service whose
  endpoints all go through one wrapper. It decodes the request
  (``bad_request`` if it cannot), runs the handler in a task (bounded
  in-flight), and answers errors one way: the micro error headers
  ``Nats-Service-Error-Code`` / ``Nats-Service-Error`` plus the body
  ``{"error": {"code", "message", "retry"}}`` (a
  :class:`~switchboard.errors.SwitchboardError` keeps its code and retry
  flag; anything else is ``internal``, retry). It counts requests, errors by
  code and the time from arrival to answer; ``nats micro stats`` shows those
  counts (``$SRV.STATS``), not nats-py's, which time only the hand-off to
  the task and never see an error.
- :func:`call` (:mod:`.client`): encode, request (nats-py or the edge's
  lean :class:`~switchboard.bus.replies.Replies`), decode, and raise the
  answered error as its class of switchboard/errors.py; no responder, a
  timeout or a closed connection is :class:`~switchboard.errors.Unavailable`
  (retry). :meth:`Endpoint.reply_of` does the same check for a callback
  caller (the edge's receipt batches).

Prometheus: :class:`RpcCollector` (:mod:`.stats`) is a ``prometheus_client``
collector over one or more services; a role registers it in its registry::

    registry.register(RpcCollector(sequencer.rpc))

and exports ``switchboard_rpc_requests_total{service,endpoint}``,
``switchboard_rpc_errors_total{service,endpoint,code}`` and the histogram
``switchboard_rpc_seconds{service,endpoint}`` (buckets in :data:`BUCKETS`).
Each service role keeps its :class:`RpcService` as ``.rpc``.

Not here: the hot path. A user's send (edge/sends.py -> the sequencer's
sequencer/pipeline.py, over switchboard/bus/replies.py) stays a callback
pipeline on the lean bus client with no task, future or decode beyond its
own, because it is measured for speed (docs/benchmarks.md); it shares only
the reply type (``SendReply``) with this layer.
"""

from switchboard.rpc.client import Requester, call
from switchboard.rpc.endpoint import ERROR_CODE_HEADER, ERROR_HEADER, Endpoint, ErrorReply, encode_error, error_body
from switchboard.rpc.server import MAX_INFLIGHT, RpcService
from switchboard.rpc.stats import BUCKETS, EndpointCounts, RpcCollector

__all__ = ["BUCKETS", "ERROR_CODE_HEADER", "ERROR_HEADER", "MAX_INFLIGHT", "Endpoint", "EndpointCounts",
           "ErrorReply", "Requester", "RpcCollector", "RpcService", "call", "encode_error", "error_body"]
