"""Database plumbing shared by the backends: one SQLite executor
(:mod:`switchboard.db.sqlite`) and one Cassandra session helper
(:mod:`switchboard.db.cql`). The archive store and the device store build on
them instead of each keeping a copy."""
