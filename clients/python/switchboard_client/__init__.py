"""Switchboard's Python client SDK, a distribution of its own (switchboard-client).

    from switchboard_client import Client

It needs websockets and msgspec only. Its modules: ``client`` (the SDK),
``ordering`` (its per-conversation order, without I/O), ``frames`` (the wire
protocol v1's frames), ``errors`` (the codes on the wire), ``ids`` (id rules,
``dm_conv``) and ``backoff`` (retry delays). The server's ``switchboard``
package re-exports ``frames``, ``errors``, ``ids`` and ``backoff``: each is
defined here once.

``Client`` and its errors are loaded on first use, so a server process that
imports only the frames does not import the websockets client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from switchboard_client.client import Client, ClientError, ConnectionLost
    from switchboard_client.errors import SwitchboardError

__all__ = ["Client", "ClientError", "ConnectionLost", "SwitchboardError"]


def __getattr__(name: str) -> Any:
    if name in ("Client", "ClientError", "ConnectionLost"):
        from switchboard_client import client
        return getattr(client, name)
    if name == "SwitchboardError":
        from switchboard_client.errors import SwitchboardError
        return SwitchboardError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
