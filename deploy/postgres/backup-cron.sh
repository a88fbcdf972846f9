#!/bin/sh
# heroes-backup: what the stack's backups need beyond cron and pgBackRest (docs/backups.md).
#   start   the pgbackrest service's entrypoint (root): refuses single-host backups in production,
#           runs `tick` once, then Debian's cron in the foreground (deploy/postgres/crontab)
#   tick    every minute: stanza-create once, a CHECKPOINT after each server start, and a full
#           backup of a repository that has none of the server's timeline or after archiving
#           recovered (WAL may have been dropped at the budget)
#   full|diff   the fixed-time backups, every repository (one failing does not skip the others)
#   health  the healthcheck: the stanza exists, archiving works, and every repository holds a
#           full backup of the current timeline younger than HEROES_PITR_FULL_MAX_AGE
# Jobs run as postgres through heroes-pgbackrest-env, one at a time (flock).
set -eu
state=/run/heroes-backup

# Runs what follows it as postgres, without the capabilities cron's root keeps.
postgres="setpriv --reuid=postgres --regid=postgres --init-groups --inh-caps=-all"
as_postgres() { if [ "$(id -u)" = 0 ]; then exec $postgres "$0" "$@"; fi; }
sql() { psql -X -A -t -h "${PGBACKREST_PG1_SOCKET_PATH:-/var/run/postgresql}" -d postgres -c "$1"; }
log() { # LEVEL MSG [JSON-FIELDS]: one JSON line, as the stack's other services log
  printf '{"ts":"%s","level":"%s","logger":"heroes.backup","msg":"%s"%s}\n' \
    "$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)" "$1" "$2" "${3:+,$3}" >&2
}
repos() { if [ -n "${PGBACKREST_REPO2_TYPE:-}" ]; then echo 1 2; else echo 1; fi; }

backup() { # TYPE REASON [REPO...]
  type=$1 why=$2 failed=0
  shift 2
  for repo in "$@"; do
    fields="\"repo\":$repo,\"reason\":\"$why\""
    log info "$type backup started" "$fields"
    if pgbackrest backup --type="$type" --repo="$repo"; then
      log info "$type backup written" "$fields"
    else
      log error "$type backup failed" "$fields"
      failed=1
    fi
  done
  return "$failed"
}

# Repositories without a full backup whose first WAL segment is on the server's timeline, from
# `pgbackrest info --output=json` ($1).
uncovered() {
  info=$1
  tl=$(sql "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)" 2>/dev/null) || return 0
  for repo in $(repos); do
    echo "$info" | jq -e --arg tl "$tl" --argjson r "$repo" '[.[0].backup[]? | select(.type ==
      "full" and .database["repo-key"] == $r and (.archive.start | startswith($tl)))] | length > 0' \
      >/dev/null || echo "$repo"
  done
}

tick() {
  if [ ! -e "$state/stanza" ]; then
    pgbackrest stanza-create && touch "$state/stanza" && log info "stanza ready"
  fi
  # A checkpointer that slept through recovery honours archive_timeout only after
  # checkpoint_timeout: one CHECKPOINT after each start wakes it (docs/backups.md).
  started=$(sql "SELECT pg_postmaster_start_time() FROM pg_control_checkpoint() WHERE NOT
    pg_is_in_recovery()" 2>/dev/null) || started=
  if [ -n "$started" ] && [ "$started" != "$(cat "$state/started" 2>/dev/null)" ] &&
    sql CHECKPOINT >/dev/null; then
    echo "$started" >"$state/started"
    log info "server start seen: checkpointer woken for archive_timeout"
  fi
  # Any archive failure since the last tick and none now: archiving recovered, and WAL past the
  # budget may have been dropped meanwhile, so a new full backup closes the gap. The failure
  # count, not one sample: a tick a minute can miss a short failure.
  row=$(sql "SELECT failed_count, coalesce(last_failed_time > coalesce(last_archived_time,
    '-infinity'), false) FROM pg_stat_archiver" 2>/dev/null) || return 0
  failed=${row%|*}
  seen=$(cat "$state/failed" 2>/dev/null) || seen=$failed
  info=$(pgbackrest info --output=json) || return 0
  missing=$(uncovered "$info")
  if [ -n "$missing" ]; then
    backup full "no full backup of this timeline" $missing || return 0
  elif [ "${row#*|}" = t ]; then
    return 0
  elif [ "$failed" -gt "$seen" ]; then
    backup full "archiving recovered" $(repos) || return 0
  fi
  echo "$failed" >"$state/failed"
}

health() {
  [ -e "$state/stanza" ] || { echo "stanza-create has not succeeded yet (see the log)"; exit 1; }
  [ "$(sql "SELECT coalesce(last_failed_time > coalesce(last_archived_time, '-infinity'), false)
    FROM pg_stat_archiver")" = f ] || { echo "WAL archiving is failing (pg_stat_archiver)"; exit 1; }
  # One `pgbackrest info` per check: on object storage each is a round of requests.
  info=$(pgbackrest info --output=json) || { echo "pgbackrest info failed"; exit 1; }
  missing=$(uncovered "$info")
  [ -z "$missing" ] || { echo "no full backup of the current timeline in repo $missing"; exit 1; }
  newest=$(echo "$info" | jq '[.[0].backup[]? | select(.type == "full") |
    .timestamp.stop] | max // 0')
  age=$(($(date +%s) - newest))
  [ "$age" -le "${HEROES_PITR_FULL_MAX_AGE:-1213200}" ] || { echo "newest full ${age}s old"; exit 1; }
  echo "ok: newest full backup ${age}s old, archiving works"
}

case ${1:-} in
  start)
    if [ "${ENVIRONMENT:-}" = production ] && [ -z "${PGBACKREST_REPO2_TYPE:-}" ] &&
      [ "${HEROES_BACKUP_SINGLE_HOST:-}" != accept ]; then
      echo "heroes-backup: production keeps backups off this host: set PGBACKREST_REPO2_TYPE=s3" \
        "and the PGBACKREST_REPO2_* settings (docs/backups.md), or HEROES_BACKUP_SINGLE_HOST=accept" >&2
      exit 1
    fi
    # cron starts its jobs with an empty environment: they read the stack's settings from here
    # (the secrets stay in /run/secrets, read by heroes-pgbackrest-env). Job output reaches the
    # container's log through a pipe (cron would mail it). /run/heroes-backup is postgres's
    # tmpfs: written as postgres, so root needs no CAP_DAC_OVERRIDE or CAP_CHOWN.
    export -p | grep -E '^export (PGBACKREST_|PGUSER|HEROES_|ENVIRONMENT)' |
      $postgres sh -c 'cat >"$0/env" && rm -f "$0/log" && mkfifo -m 0600 "$0/log"' "$state"
    $postgres sh -c 'exec cat <>"$0/log"' "$state" &
    $postgres heroes-pgbackrest-env "$0" tick || true
    exec cron -f
    ;;
  job)
    as_postgres "$@"
    . "$state/env"
    # A tick finding a backup running skips its turn; a scheduled backup waits for a tick's.
    wait=; [ "$2" = tick ] && wait=-n
    exec flock $wait "$state/lock" heroes-pgbackrest-env "$0" "$2" >>"$state/log" 2>&1
    ;;
  tick) tick ;;
  full) backup full "weekly" $(repos) ;;
  diff) backup diff "daily" $(repos) ;;
  health)
    as_postgres "$@"
    exec flock -w 20 "$state/health-lock" heroes-pgbackrest-env "$0" health-check
    ;;
  health-check) health ;;
  *) echo "usage: heroes-backup start|job tick|job full|job diff|health" >&2; exit 2 ;;
esac
