"""The cassandra-driver internal the archive's batch writes use (see :mod:`switchboard.compat`).

The Cassandra store (switchboard/store/cassandra.py) adds the 2nd..nth row of
a batch with values it serialized itself (``row_values``: the same bytes the
driver would bind, checked by tests/contract/test_cassandra_rows.py) through
``BatchStatement._add_statement_and_params(is_prepared, query_id, values)``,
the private method ``BatchStatement.add`` itself ends in: binding a row
through ``add`` costs the archiver about a third more CPU per message
(docs/archiver.md, "The Cassandra write path"). Checked at import of this
module (the store imports it when it opens, so only a Cassandra deployment
needs the driver); exported as :func:`add_serialized_row`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from cassandra.query import BatchStatement

from switchboard import compat

DIST = "cassandra-driver"
# Same specifier as pyproject.toml's cassandra extra.
SUPPORTED = ">=3.29,<3.31"

BORROWED: dict[str, Callable[[], object]] = {
    "cassandra.query.BatchStatement._add_statement_and_params":
        lambda: BatchStatement._add_statement_and_params,  # noqa: SLF001 - the borrowed internal
}


def check() -> str:
    """Raise IncompatibleLibrary unless the installed driver is supported and
    has what is borrowed; return its version."""
    return compat.check(DIST, SUPPORTED, BORROWED)


VERSION = check()


def add_serialized_row(batch: BatchStatement, query_id: bytes, values: Sequence[bytes]) -> None:
    """Append one row of a prepared statement to ``batch`` with its values
    already serialized (what ``batch.add(prepared, params)`` appends after
    binding)."""
    batch._add_statement_and_params(True, query_id, values)  # noqa: SLF001
