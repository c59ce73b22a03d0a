"""``switchboard bench``: load generators and reports.

- :mod:`switchboard.bench.delivery`: clients sending at a fixed total rate,
  sent→delivered latency, throughput, lost/duplicate checks, CPU per message
  of every process; its load-generator processes are
  :mod:`switchboard.bench.loadgen` over :mod:`switchboard.bench.wsclient`
  (a lean hand-written WebSocket client); :mod:`switchboard.bench.fakeedge`
  is an in-memory edge for measuring the load generator alone.
- :mod:`switchboard.bench.idle`: idle WebSocket connections on one edge, RSS per connection.
- :mod:`switchboard.bench.fabric`: the fabric under test (``switchboard up`` and its children).
- :mod:`switchboard.bench.report`: percentiles, process stats, table and JSON output (pure, unit-tested).

docs/benchmarks.md has the figures on the reference machine and the commands.
"""
