"""Whether ``switchboard up`` turns on the development sign-in.

``up`` is how a developer runs the fabric on their machine; there the web
app's sign-in form (any user name gets a token, edge/devsignin.py) is what
they want. It is on only when the edge binds a loopback host, which only
this machine reaches: ``up --host 0.0.0.0`` (or any other address) leaves
it off, as does ``--no-dev-signin``. Role commands (``switchboard edge``...)
never turn it on: there it is the ``dev_signin`` setting alone.
"""

from __future__ import annotations

from edge.devsignin import is_loopback


def up_dev_signin(host: str, *, disabled: bool = False) -> bool:
    """On for ``up`` binding ``host``: loopback and not ``--no-dev-signin``."""
    return not disabled and is_loopback(host)


__all__ = ["up_dev_signin"]
