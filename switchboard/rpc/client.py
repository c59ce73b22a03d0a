"""The client side: :func:`call` an :class:`~switchboard.rpc.endpoint.Endpoint`."""

from __future__ import annotations

import nats.errors
from nats.aio.client import Client as NATS

from switchboard.bus.replies import Replies
from switchboard.errors import Unavailable
from switchboard.rpc.endpoint import Endpoint, Rep, Req
from switchboard.subjects import Subjects

# Either connection: nats-py (services, tools) or the lean bus client's
# callback request/reply (the edge, which has no nats-py request path).
Requester = NATS | Replies


async def call(nc: Requester, endpoint: Endpoint[Req, Rep], request: Req | None, *, subjects: Subjects,
               timeout: float, **params: str) -> Rep:
    """Send ``request`` to ``endpoint`` (its subject under ``subjects``'
    prefix, ``params`` filling its ``{param}`` tokens) and return the reply.

    Raises the error the service answered, as the class of
    switchboard/errors.py with its code (``NotMember``, ``LimitExceeded``...,
    message and retry flag as sent), and :class:`Unavailable` (retry) when
    nobody serves the subject, no answer comes within ``timeout`` seconds or
    the connection is down."""
    subject = endpoint.subject_for(subjects, **params)
    data = endpoint.encode_request(request)
    if isinstance(nc, Replies):
        msg = await nc.call(subject, data, timeout=timeout)  # BusUnavailable is an Unavailable
        return endpoint.reply_of(msg.data, msg.headers)
    try:
        reply = await nc.request(subject, data, timeout=timeout)
    except nats.errors.NoRespondersError:
        raise Unavailable(f"nobody serves {subject} now; retry") from None
    except (TimeoutError, nats.errors.TimeoutError):
        raise Unavailable(f"no answer on {subject} within {timeout:g} s; retry") from None
    except nats.errors.Error as exc:  # closed, reconnecting, draining
        raise Unavailable(f"NATS connection: {type(exc).__name__}; retry") from None
    return endpoint.reply_of(reply.data, reply.headers)
