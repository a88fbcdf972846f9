"""Benchmark harness: the tutorial baseline, heroes and a raw-psycopg ceiling, in one run.

Run it with ``deploy/scripts/bench.sh`` (``--quick`` for CI); ``--help`` lists the options.
"""
