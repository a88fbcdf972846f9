#!/usr/bin/env bash
# The test command: pytest on SQLite and PostgreSQL (a throwaway server the tests start, or
# TEST_DATABASE_URL), with the coverage gate. Usage: deploy/scripts/test.sh [all|sqlite|postgres] [pytest args]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
deploy/scripts/bootstrap.sh
backends=${1:-all}
[ $# -gt 0 ] && shift
[ "$backends" = all ] && backends=sqlite,postgres
exec .venv/bin/pytest backend/tests --backends "$backends" --cov --cov-report=term-missing:skip-covered "$@"
