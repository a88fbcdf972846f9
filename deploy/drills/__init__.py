"""Reliability and security drills against the real compose stack: pytest tests
(``test_*.py``, fixtures in ``conftest.py``), run by ``deploy/scripts/drills.sh``.

``client`` and ``load`` are stdlib-only and also run inside a container on the compose network
(the load generator); the other modules drive Docker from the host.
"""
