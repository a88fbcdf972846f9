"""Launchers shared by the tests (backend/tests), the benchmark (deploy/bench) and the browser
check (deploy/scripts/browser_check.py): one for a throwaway PostgreSQL server
(``harness.postgres``), one for a gunicorn server and the production one among them
(``harness.gunicorn``). Importable with ``deploy`` on the path (PYTHONPATH, pytest's
``pythonpath``)."""
