"""Switchboard: a real-time chat delivery fabric on NATS/JetStream.

This package holds the shared contracts (ids, subjects, frames, config,
errors, backend Protocols), the NATS helpers, the client SDK and the CLI.
The services live in the top-level ``edge``, ``sequencer``, ``archiver`` and
``pusher`` packages, which import only this one.
"""

__version__ = "0.1.0"
