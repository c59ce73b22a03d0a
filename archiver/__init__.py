"""Archiver: copies MESSAGES into the long-term store and serves history.

- :mod:`archiver.consumer`: the durable JetStream pull consumer definition.
- :mod:`archiver.puller`: batch fetches from it on the lean bus connection
  (``CONSUMER.MSG.NEXT`` requests, replies gathered by an inline handler).
- :mod:`archiver.acks`: ``+ACK`` / ``+WPI`` / ``+TERM`` publishes and the
  delivery metadata of the ack subject.
- :mod:`archiver.writer`: one fetched batch -> one store write -> acks;
  store outages (backoff) and poison messages (dead letter).
- :mod:`archiver.history`: the ``sb.api.history`` query, store + unarchived
  stream tail (read-your-writes).
- :mod:`archiver.service`: :class:`Archiver` (start/stop, fetch loop, lag
  metric, the ``sb-archiver`` micro service) and :func:`run_archiver`.

docs/archiver.md explains the choices.
"""

from archiver.service import Archiver, run_archiver

__all__ = ["Archiver", "run_archiver"]
