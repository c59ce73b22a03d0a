"""The edge: WebSocket gateway (auth, per-user subscriptions, catch-up, backpressure)."""

from edge.server import Edge

__all__ = ["Edge"]
