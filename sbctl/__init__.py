"""The `switchboard` command: CLI, role wiring, benchmarks and process supervision.

The only package that imports the services (edge, sequencer, archiver,
pusher, presence); they import only :mod:`switchboard` (shared code) and
themselves. tests/unit/test_layout.py holds that rule.
"""
