#!/usr/bin/env bash
# Restore an archive made by backup.sh (or the scheduled `backup` service) into the compose stack:
#
#   deploy/scripts/restore.sh [--force] FILE
#
#  1. verifies FILE against FILE.sha256 and that pg_restore can read it, and refuses a database
#     that holds any row unless --force: a refusal is one line on stderr, exit 1, nothing changed;
#  2. stops the api service (and the scheduled backup, if it runs) so nothing writes meanwhile;
#  3. pg_restore --clean --if-exists --no-owner in one transaction, then every id sequence is set
#     above the largest restored id; 4. the migrate one-shot brings the schema to alembic head;
#  5. starts what it stopped and waits for readiness (`up -d --wait --no-deps`: the schema is
#     already migrated; the api's healthcheck is
#     /health/ready). On a failure after step 2, the services are started again all the same.
#
# Like backup.sh it honours COMPOSE_PROJECT_NAME / COMPOSE_FILE as `docker compose` does, runs
# the database work in the stack's postgres image (deploy/k8s/base/backup/pg-backup.sh) with the
# stack's db_password secret file, and puts no password on any command line.
set -euo pipefail

force=
file=
for arg in "$@"; do
  case $arg in
    --force) force=--force ;;
    -h | --help)
      sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    -*)
      echo "restore.sh: unknown option $arg (usage: restore.sh [--force] FILE)" >&2
      exit 2
      ;;
    *) file=$arg ;;
  esac
done
[ -n "$file" ] || { echo "usage: restore.sh [--force] FILE" >&2; exit 2; }

refuse() {
  echo "restore.sh: REFUSED: $*; nothing was changed" >&2
  exit 1
}
say() { echo "restore.sh: $*"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

[ -f "$file" ] || refuse "no such archive: $file"
[ -f "$file.sha256" ] || refuse "no checksum file $file.sha256 beside the archive"
want=$(cut -d' ' -f1 <"$file.sha256")
have=$( (sha256sum "$file" 2>/dev/null || shasum -a 256 "$file") | cut -d' ' -f1)
[ "$want" = "$have" ] || refuse "checksum mismatch for $file (archive damaged or altered)"

started=$(now)
dir=$(cd -- "$(dirname -- "$file")" && pwd -P)
name=$(basename -- "$file")
compose=(docker compose --profile backup)
# The archive's directory, read-only; the container runs as the archive's owner (it is 0600).
pg_backup=("${compose[@]}" run --rm --no-deps -T -v "$dir:/restore:ro"
  --user "$(stat -c %u:%g -- "$file")" backup)

running=$("${compose[@]}" ps --status running --services)
grep -qx db <<<"$running" || refuse "the db service is not running (docker compose up -d --wait db)"
# One line for a refusal: the container prints it; compose's own chatter is dropped.
if ! check=$("${pg_backup[@]}" check "/restore/$name" ${force:+"$force"} 2>&1 >/dev/null); then
  reason=$(sed -n 's/^pg-backup: //p' <<<"$check" | tail -n1)
  refuse "${reason:-$(grep -v '^ *$' <<<"$check" | tail -n1)}"
fi

# What to stop: the api (the only writer) and a running scheduled backup.
stop=(api)
grep -qx backup <<<"$running" && stop+=(backup)
say "stopping ${stop[*]} for the restore (no writes meanwhile)"
"${compose[@]}" stop "${stop[@]}"
# Whatever happens next, bring back what was stopped (a failed restore has rolled back).
restart() {
  local rc=$?
  trap - EXIT
  say "starting ${stop[*]} and waiting for readiness"
  "${compose[@]}" up -d --wait --wait-timeout 180 --no-deps "${stop[@]}" || rc=$?
  exit "$rc"
}
trap restart EXIT

say "restoring $file (sha256 $want)"
t=$(now)
"${pg_backup[@]}" restore "/restore/$name" ${force:+"$force"}
restore_s=$(since "$t")

say "migrating the schema to alembic head (migrate one-shot)"
"${compose[@]}" run --rm --no-deps -T migrate

trap - EXIT
say "starting ${stop[*]} and waiting for readiness"
t=$(now)
"${compose[@]}" up -d --wait --wait-timeout 180 --no-deps "${stop[@]}"
say "done: $name restored in ${restore_s}s, ${stop[*]} ready $(since "$t")s later;" \
  "$(since "$started")s in all"
