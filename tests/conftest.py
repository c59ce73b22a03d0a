"""Session fixtures for real services, shared by every test directory.

nats_server / make_nats (tests/services/nats.py), redis_server / redis_url /
redis_clean (tests/services/redis.py), cassandra_node / cassandra_url
(tests/services/cassandra.py). See docs/testing.md.
"""

from __future__ import annotations

import pytest

from tests.services.common import in_ci
from tests.services.nats import make_nats, nats_server  # noqa: F401
from tests.services.redis import redis_clean, redis_server, redis_url  # noqa: F401

try:
    from tests.services.cassandra import cassandra_node, cassandra_url  # noqa: F401
except ModuleNotFoundError as exc:
    # Only "the module is not there yet" is tolerated; a broken module must
    # surface, or its tests would vanish silently.
    if exc.name != "tests.services.cassandra":
        raise

# Tests that use these fixtures get the marker automatically, so
# `-m "not cassandra"` deselects them without each test being decorated.
_MARKER_BY_FIXTURE = {
    "redis_server": "redis",
    "redis_url": "redis",
    "redis_clean": "redis",
    "cassandra_node": "cassandra",
    "cassandra_url": "cassandra",
}

_MARKERS = {
    "redis": "needs a real Redis (started by the test command)",
    "cassandra": "needs a real Cassandra (started by the test command)",
}


def pytest_configure(config: pytest.Config) -> None:
    declared = {line.split(":", 1)[0].strip() for line in config.getini("markers")}
    for name, doc in _MARKERS.items():
        if name not in declared:
            config.addinivalue_line("markers", f"{name}: {doc}")


def pytest_report_header(config: pytest.Config) -> str:
    mode = "CI=true: a missing service FAILS" if in_ci() else "a missing service skips (set CI=true to fail)"
    return f"switchboard services: {mode}"


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        for fixture, marker in _MARKER_BY_FIXTURE.items():
            if fixture in names and marker not in {m.name for m in item.iter_markers()}:
                item.add_marker(marker)
