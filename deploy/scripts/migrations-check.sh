#!/usr/bin/env bash
# Migrations: single head, `alembic check` finds no drift, upgrade/downgrade/upgrade round trip and
# concurrent runners — on SQLite and PostgreSQL (TEST_DATABASE_URL, else a throwaway server).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
deploy/scripts/bootstrap.sh
heads=$(cd backend && ../.venv/bin/alembic heads | wc -l)
[ "$heads" -eq 1 ] || { echo "migrations: expected one head, found $heads" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd backend && DATABASE_URL="sqlite:///$tmp/check.db" ../.venv/bin/alembic upgrade head \
  && DATABASE_URL="sqlite:///$tmp/check.db" ../.venv/bin/alembic check)
.venv/bin/pytest -q backend/tests/test_migrations.py --backends sqlite,postgres
echo "migrations: single head, no drift, round trip and concurrent runs pass"
