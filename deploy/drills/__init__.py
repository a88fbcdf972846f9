"""Reliability and security drills against the real compose stack (deploy/scripts/drills.sh).

Run: ``PYTHONPATH=deploy python -m drills --help``. ``client`` and ``load`` are stdlib-only and
also run inside a container on the compose network (the load generator); the other modules drive
Docker from the host.
"""
