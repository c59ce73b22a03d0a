"""``switchboard bench``: load generators and reports.

- :mod:`switchboard.bench.delivery`: clients sending at a fixed total rate,
  sent→delivered latency, throughput, lost/duplicate checks.
- :mod:`switchboard.bench.idle`: idle WebSocket connections on one edge, RSS per connection.
- :mod:`switchboard.bench.fabric`: the fabric under test, started as its own process.
- :mod:`switchboard.bench.report`: percentiles, process stats, table and JSON output (pure, unit-tested).

docs/benchmarks.md has the figures on the reference machine and the commands.
"""
