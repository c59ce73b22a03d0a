"""The reply JetStream sends to a publish: its ack, or an API error.

A JetStream publish over the lean bus (:mod:`switchboard.bus.replies`) gets
this JSON back; decoded with msgspec into a small struct, never nats-py's
dataclasses (the send pipeline decodes one per stored copy).
"""

from __future__ import annotations

import msgspec

# err_code of "wrong last sequence": a Nats-Expected-Last-Subject-Sequence
# fence (a conversation's, or a KV revision compare-and-set) was not met.
WRONG_LAST_SEQUENCE = 10071


class ApiError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class PubAck(msgspec.Struct):
    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: ApiError | None = None


decode_ack = msgspec.json.Decoder(PubAck).decode
