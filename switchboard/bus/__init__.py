"""NATS plumbing.

- :mod:`~switchboard.bus.conn` (+ ``proto``, ``replies``): the lean client of
  the hot path (edge, sequencer, archiver): inline handlers, one write per
  loop tick, callback request/reply.
- :mod:`~switchboard.bus.streams`: stream definitions; :mod:`~switchboard.bus.direct`:
  batch direct gets.

nats-py stays for everything off the hot path: JetStream management, KV,
micro services.
"""
