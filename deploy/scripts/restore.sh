#!/usr/bin/env bash
# Restore the compose stack's database, from pgBackRest (point in time) or from a pg_dump archive:
#
#   deploy/scripts/restore.sh [--force] --latest         everything archived (after a lost volume)
#   deploy/scripts/restore.sh [--force] --to TIMESTAMP   the state at TIMESTAMP (ISO 8601 with a
#                                                        zone: 2026-12-02T10:15:00Z)
#   deploy/scripts/restore.sh [--force] FILE             a pg_dump archive (backup.sh)
#
# Point in time (--latest, --to; docs/backups.md): pgBackRest restores the newest backup that
# ended before the target (from the first repository that has one: repo1 local, repo2 off-host)
# into the db-data volume, and PostgreSQL replays the archived WAL up to the target (--latest: to
# the end of the archive), then promotes. On a new host, run it before the first `up`.
#  1. refuses (one line on stderr, exit 1, nothing stopped or changed) a volume that already holds
#     a database cluster unless --force, an unreadable repository (unreachable store, wrong
#     passphrase), no backup, a TIMESTAMP that is not ISO 8601 with a zone, in the future, before
#     the oldest backup, or past what the archive reaches from the backup that would be used (its
#     end, or a gap: the last commit found there), naming the reachable range;
#  2. with the database running: stops the writers (api, pgbackrest, a scheduled backup), commits
#     one transaction and archives the current WAL (`pgbackrest check`), then checks again (a
#     refusal starts the writers again);
#  3. stops db; `pgbackrest restore` (--delta over an existing cluster with --force);
#  4. starts db, waits for the end of recovery (promotion), archives the new timeline's first
#     WAL (`pgbackrest check`); 5. the migrate one-shot;
#  6. starts the stack and waits for readiness (`up -d --wait`): the pgbackrest service is healthy
#     only once every repository holds a full backup of the new timeline, so a later --latest
#     never starts from the abandoned one.
#
# pg_dump archive (FILE):
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
# the database work in the stack's postgres image (deploy/k8s/base/backup/pg-backup.sh; for point
# in time deploy/postgres/pgbackrest_restore.py) with the stack's db_password secret file, and puts
# no password on any command line.
set -euo pipefail

usage="usage: restore.sh [--force] --latest | --to TIMESTAMP | FILE"
force=
file=
to=
latest=
while [ $# -gt 0 ]; do
  case $1 in
    --force) force=--force ;;
    --latest) latest=1 ;;
    --to)
      [ $# -ge 2 ] || { echo "restore.sh: --to needs a TIMESTAMP ($usage)" >&2; exit 2; }
      to=$2
      shift
      ;;
    --to=*) to=${1#--to=} ;;
    -h | --help)
      sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    -*)
      echo "restore.sh: unknown option $1 ($usage)" >&2
      exit 2
      ;;
    *) file=$1 ;;
  esac
  shift
done
modes=0
for given in "$latest" "$to" "$file"; do
  if [ -n "$given" ]; then modes=$((modes + 1)); fi
done
[ "$modes" = 1 ] || { echo "$usage" >&2; exit 2; }

refuse() {
  echo "restore.sh: REFUSED: $*; nothing was changed" >&2
  exit 1
}
say() { echo "restore.sh: $*"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

if [ -z "$file" ]; then
  # --- point in time (pgBackRest) ------------------------------------------------------------
  started=$(now)
  target_epoch=
  if [ -n "$to" ]; then
    # ISO 8601 with its zone, nothing else: a time without one means a different instant on
    # every host, and GNU date's free forms ("yesterday") are no way to name a restore point.
    iso='^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)$'
    [[ $to =~ $iso ]] ||
      refuse "'$to' is not an ISO 8601 time with a zone (write it like 2026-12-02T10:15:00Z or 2026-12-02 10:15:00+01:00)"
    target_epoch=$(date -u -d "$to" +%s.%N 2>/dev/null) || refuse "'$to' is not a valid time"
    # In UTC, in the one form pgBackRest's backup set selection reads (it refuses the "T").
    to=$(date -u -d "@$target_epoch" '+%Y-%m-%d %H:%M:%S.%6N+00:00')
    awk -v t="$target_epoch" -v n="$(now)" 'BEGIN { exit !(t <= n) }' || refuse "$to is in the future"
  fi
  compose=(docker compose --profile backup)
  # The db service's container definition (image, volumes, PGBACKREST_* settings and secrets),
  # one-off, as the postgres user: the restore writes into the same db-data volume the server uses.
  grows=
  agent() {
    "${compose[@]}" run --rm --no-deps -T --user 999:999 -e "HEROES_PITR_TARGET_EPOCH=$target_epoch" \
      -e "HEROES_PITR_ARCHIVE_GROWS=$grows" --entrypoint heroes-pgbackrest-env db heroes-pitr-restore "$@"
  }
  in_db=("${compose[@]}" exec -T -u postgres db heroes-pgbackrest-env)
  what=(${to:+--to "$to"} ${force:+"$force"})
  running=$("${compose[@]}" ps --status running --services)
  check_or_refuse() {
    local check reason
    if ! check=$(agent check-restore "${what[@]}" 2>&1 >/dev/null); then
      reason=$(sed -n 's/^heroes-pitr-restore: //p' <<<"$check" | tail -n1)
      refuse "${reason:-$(grep -v '^ *$' <<<"$check" | tail -n1)}"
    fi
  }
  # A first check with everything still running: most refusals need nothing stopped. While the
  # server runs, the end of the archive is judged by the last check only (it archives first).
  if grep -qx db <<<"$running"; then grows=1; fi
  check_or_refuse
  grows=

  stop=(api pgbackrest)
  grep -qx backup <<<"$running" && stop+=(backup)
  if grep -qx db <<<"$running"; then
    # The writers stop first, so the last check sees the archive as the restore will.
    say "stopping ${stop[*]} (the writers) for the last check"
    "${compose[@]}" stop "${stop[@]}"
    restart_writers() {
      local rc=$?
      trap - EXIT
      "${compose[@]}" up -d --wait --wait-timeout 180 --no-deps "${stop[@]}" >&2 || rc=$?
      exit "$rc"
    }
    trap restart_writers EXIT
    # One committed transaction (recovery to a time stops only at a commit), then the WAL
    # written since the last segment switch, into the repositories now. ERROR [028]: the running
    # cluster is not the archived one (a new volume after a loss, replaced with --force).
    # shellcheck disable=SC2016  # the variables are the db container's
    "${compose[@]}" exec -T db sh -c 'psql -X -q -U "$POSTGRES_USER" -d "$POSTGRES_DB" -c "SELECT txid_current()"' >/dev/null || true
    if ! out=$("${in_db[@]}" pgbackrest check 2>&1) && ! grep -q 'ERROR: \[028\]' <<<"$out"; then
      refuse "the current WAL cannot be archived, so the newest changes would be missing: $(grep ERROR <<<"$out" | tail -n1)"
    fi
    check_or_refuse
    trap - EXIT
  fi

  say "stopping ${stop[*]} and db for the restore"
  "${compose[@]}" stop "${stop[@]}" db
  # Before the restore has begun nothing has changed: a failure starts everything again. After,
  # the volume is being replaced: starting db could initialise an empty cluster in it instead.
  # shellcheck disable=SC2317  # run by the EXIT trap
  restart() {
    local rc=$?
    trap - EXIT
    if [ -z "${restore_began:-}" ]; then
      say "starting db ${stop[*]} and waiting for readiness"
      "${compose[@]}" up -d --wait --wait-timeout 180 --no-deps db "${stop[@]}" || rc=$?
    else
      echo "restore.sh: FAILED after the restore began: db-data is incomplete and ${stop[*]} stay" \
        "stopped; fix the cause, then run restore.sh --force again" >&2
    fi
    exit "$rc"
  }
  trap restart EXIT

  say "pgbackrest restore ${to:+to $to}${latest:+to the end of the archive}"
  t=$(now)
  restore_began=1
  agent restore "${what[@]}"
  restore_s=$(since "$t")

  say "starting db: WAL replay from the archive, then promotion"
  t=$(now)
  "${compose[@]}" up -d --no-deps db
  deadline=$(($(date +%s) + ${HEROES_PITR_RECOVERY_TIMEOUT:-1800}))
  # shellcheck disable=SC2016  # the variables are the db container's
  until [ "$("${compose[@]}" exec -T db sh -c 'psql -X -At -U "$POSTGRES_USER" -d "$POSTGRES_DB" -c "SELECT pg_is_in_recovery()"' 2>/dev/null)" = f ]; do
    if [ "$(date +%s)" -gt "$deadline" ] || ! "${compose[@]}" ps --status running --services | grep -qx db; then
      "${compose[@]}" logs --no-color --tail 20 db >&2 || true
      echo "restore.sh: the database did not finish its recovery (log above)" >&2
      exit 1
    fi
    sleep 0.5
  done
  recovery_s=$(since "$t")
  # The new timeline's first WAL, into the repository now: until it is there, a later --latest
  # would follow the old timeline past the target (the undone mistake included).
  if ! out=$("${in_db[@]}" pgbackrest check 2>&1); then
    echo "restore.sh: warning: the new timeline's WAL could not be archived yet:" \
      "$(grep ERROR <<<"$out" | tail -n1)" >&2
  fi

  say "migrating the schema to alembic head (migrate one-shot)"
  "${compose[@]}" run --rm --no-deps -T migrate

  trap - EXIT
  say "starting ${stop[*]} and waiting for readiness"
  t=$(now)
  # The proxy too: on a new host (nothing was running) the stack starts here.
  "${compose[@]}" up -d --wait --wait-timeout 600 --no-deps db proxy "${stop[@]}"
  say "done: pgbackrest restore ${restore_s}s, recovery ${recovery_s}s, ${stop[*]} ready" \
    "$(since "$t")s later; $(since "$started")s in all"
  exit 0
fi

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
