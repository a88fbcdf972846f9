#!/usr/bin/env bash
# Reliability and security drills against the real compose stack (deploy/drills/, docs/reliability.md):
# SIGTERM under write load, worker kill -9, database outage, concurrent migrations,
# schemathesis fuzzing, bearer-token auth + production refusal, container posture.
# The drills are pytest tests (deploy/drills/test_*.py, fixtures in deploy/drills/conftest.py):
# each prints its figures and fails on a miss; the run writes every figure as JSON
# (DRILLS_JSON, default /tmp/readme/drills.json) and renders the table of docs/reliability.md from it
# (DRILLS_RESULTS, default /tmp/readme/drills-results.md). Always `down -v` at the end.
#
# Environment: HEROES_IMAGE (reused when set and present, e.g. CI's loaded heroes:local; otherwise
# built with `docker compose build`), HEROES_DB_IMAGE (default heroes-postgres:local, always
# built: cached, about a second), DRILLS_PROJECT (default heroes-drills), HEROES_PORT
# (default 0 = a free loopback port). Arguments go to pytest (-k partition, --keep, -x, ...).
set -euo pipefail
# shellcheck source=deploy/scripts/lib/containers.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/containers.sh"

project=${DRILLS_PROJECT:-heroes-drills}
export HEROES_PORT=${HEROES_PORT:-0}

if [ -n "${HEROES_IMAGE:-}" ] && docker image inspect "$HEROES_IMAGE" >/dev/null 2>&1; then
  echo "drills: using the existing image $HEROES_IMAGE"
else
  export HEROES_IMAGE=${HEROES_IMAGE:-heroes:local}
  echo "drills: building $HEROES_IMAGE (docker compose build api)"
  # The tokens file only has to exist for interpolation; nothing is started here.
  DRILLS_API_TOKENS_FILE=/dev/null docker compose -p "$project" \
    -f docker-compose.yml -f deploy/compose.drills.yml build api
fi

# The database image (postgres + pgBackRest, deploy/postgres/Dockerfile) is always built: a
# cached build takes about a second, and a stale image would test an older archive setup.
export HEROES_DB_IMAGE=${HEROES_DB_IMAGE:-heroes-postgres:local}
echo "drills: building $HEROES_DB_IMAGE (docker compose build db)"
DRILLS_API_TOKENS_FILE=/dev/null docker compose -p "$project" \
  -f docker-compose.yml -f deploy/compose.drills.yml build db

# Backstop for a Python process that dies without its own cleanup (it runs `down -v` itself).
cleanup() {
  # With the monitoring profile (drills 23-26 start it), so its containers go too.
  COMPOSE_PROFILES=monitoring DRILLS_API_TOKENS_FILE=/dev/null docker compose -p "$project" \
    -f docker-compose.yml -f deploy/compose.drills.yml down -v --remove-orphans --timeout 40 \
    >/dev/null 2>&1 || true
}
case " $* " in
  *" --keep "*) ;;  # asked to leave the stack running
  *) trap cleanup EXIT ;;
esac

json=${DRILLS_JSON:-/tmp/readme/drills.json}
rm -f "$json"
status=0
.venv/bin/pytest deploy/drills -p no:cacheprovider -v -s --tb=short \
  --image "$HEROES_IMAGE" --project "$project" --drills-json "$json" "$@" || status=$?
if [ -f "$json" ]; then
  PYTHONPATH="$root/deploy" .venv/bin/python -m drills.report "$json" \
    --out "${DRILLS_RESULTS:-/tmp/readme/drills-results.md}"
fi
exit "$status"
