"""Switchboard: a real-time chat delivery fabric on NATS/JetStream.

This package holds the shared code of the services: contracts (ids,
subjects, frames, API endpoints, config, errors, backend Protocols, the role
contract), the NATS helpers and the request/reply layer. The Python client
SDK is a distribution of its own, ``switchboard-client`` (package
``switchboard_client``, in clients/python), which this package depends on
and re-exports the wire contract of. The services live in the top-level
``edge``, ``sequencer``, ``archiver``, ``pusher`` and ``presence`` packages,
which import only this one; the CLI (``sbctl``) is the only package
importing services.
"""

import functools


@functools.cache
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("switchboard")  # one source: pyproject.toml's version, as installed
    except PackageNotFoundError:  # a source tree on sys.path that was never installed
        return "0+unknown"


def __getattr__(name: str) -> str:
    # ``__version__`` is read when asked for: importlib.metadata costs ~25 ms
    # of import time, which an SDK user importing the package should not pay.
    if name == "__version__":
        return _version()
    raise AttributeError(f"module 'switchboard' has no attribute {name!r}")
