"""``switchboard bench``: load generators and reports.

- :mod:`sbctl.bench.delivery`: clients sending at a fixed total rate,
  sent→delivered latency, throughput, lost/duplicate checks, CPU per message
  of every process; its load-generator processes are
  :mod:`sbctl.bench.loadgen` over :mod:`sbctl.bench.wsclient`
  (a lean hand-written WebSocket client); :mod:`sbctl.bench.fakeedge`
  is an in-memory edge for measuring the load generator alone.
- :mod:`sbctl.bench.idle`: idle WebSocket connections on one edge, RSS per connection.
- :mod:`sbctl.bench.fabric`: the fabric under test (``switchboard up`` and its children).
- :mod:`sbctl.bench.report`: percentiles, process stats, table and JSON output (pure, unit-tested).

docs/benchmarks.md has the figures on the reference machine and the commands.
"""
