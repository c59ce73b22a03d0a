"""nats-py internals Switchboard borrows (see :mod:`switchboard.compat`).

- ``Client._server_info``: the INFO the server sent on the current
  connection, a dict. nats-py has no public accessor for it (its properties
  expose single fields such as ``max_payload`` and ``client_id``, not
  ``tls_required``). :func:`switchboard.tls.require_tls` reads it through
  :func:`server_info` to refuse a server that would leave a ``nats_tls_*``
  connection in plain text. Were it renamed, that check would refuse every
  server (fail closed) with a misleading message; the import check says why.
- The micro service's ``$SRV.STATS`` dispatch: ``Service._handle_stats_request``
  (private) answers with ``self.stats()``, the public method
  :class:`switchboard.rpc.stats.MicroService` overrides so that ``nats micro
  stats`` shows the request/reply layer's counters. Were the handler to build
  its answer some other way, the override would be skipped without a word and
  the stats would go back to nats-py's (errors always 0, processing time of
  a hand-off only). The probe drives the handler on stubs and checks that the
  answer is what ``stats()`` returned. Also probed: the fields of
  ``EndpointStats`` the override writes (a renamed one would be set as a new
  attribute that the answer leaves out).

The hot path does not use nats-py at all (switchboard/bus/ speaks the NATS
protocol itself), so nothing here runs per message.
"""

from __future__ import annotations

import dataclasses
import json
import types
from typing import TYPE_CHECKING, Any

from switchboard import compat

if TYPE_CHECKING:
    from nats.aio.client import Client

DIST = "nats-py"
# Same specifier as pyproject.toml's requirement: the minor checked against.
SUPPORTED = ">=2.16,<2.17"


def _server_info_attr() -> object:
    from nats.aio.client import Client

    info = vars(Client())["_server_info"]  # set in __init__; KeyError when renamed
    if not isinstance(info, dict):
        raise AttributeError("_server_info is not a dict")
    return info


_PROBE_STATS = {"switchboard": "stats probe"}


class _ProbeStats:
    def to_dict(self) -> dict[str, str]:
        return _PROBE_STATS


def _stats_dispatch() -> object:
    """Run micro's STATS handler on stubs, without an event loop (it awaits
    only ``msg.respond``): its answer must be what ``self.stats()`` returned."""
    from nats.micro.service import Service

    handler: Any = Service._handle_stats_request  # AttributeError when renamed
    answers: list[bytes] = []

    class _Msg:
        async def respond(self, data: bytes = b"", **_: Any) -> None:
            answers.append(data)

    try:
        coro = handler(types.SimpleNamespace(stats=_ProbeStats), _Msg())
        try:
            coro.send(None)
        except StopIteration:
            pass
        else:
            coro.close()
            raise AttributeError("it awaits more than msg.respond")
        answered = [json.loads(a) for a in answers]
    except AttributeError:
        raise
    except Exception as exc:  # a changed signature or body: reported as the borrowed part gone
        raise AttributeError(f"_handle_stats_request: {exc!r}") from None
    if answered != [_PROBE_STATS]:
        raise AttributeError("_handle_stats_request does not answer with self.stats()")
    return handler


# The EndpointStats fields switchboard.rpc.stats.MicroService.stats() sets.
STATS_FIELDS = ("num_requests", "num_errors", "processing_time", "average_processing_time", "last_error")


def _endpoint_stats_fields() -> object:
    from nats.micro.service import EndpointStats

    gone = set(STATS_FIELDS) - {f.name for f in dataclasses.fields(EndpointStats)}
    if gone:
        raise AttributeError(f"EndpointStats has no {sorted(gone)}")
    return EndpointStats


# What is borrowed -> a probe raising AttributeError/KeyError when it is gone.
BORROWED = {
    "nats.aio.client.Client._server_info": _server_info_attr,
    "nats.micro.service.Service._handle_stats_request -> self.stats()": _stats_dispatch,
    "nats.micro.service.EndpointStats fields": _endpoint_stats_fields,
}


def check() -> str:
    """Raise IncompatibleLibrary unless the installed nats-py is supported
    and has every borrowed attribute; return its version."""
    return compat.check(DIST, SUPPORTED, BORROWED)


VERSION = check()


def server_info(nc: Client) -> dict[str, Any]:
    """The server's INFO on ``nc``'s current connection ({} before one)."""
    info = getattr(nc, "_server_info", None)
    return info if isinstance(info, dict) else {}
