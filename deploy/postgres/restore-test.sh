#!/usr/bin/env bash
# heroes-restore-test: backups proven by restoring them (the `restore-test` service; docs/backups.md).
#
#   heroes-restore-test once    for each repository: `pgbackrest verify`, then its newest backup
#                               restored (with the archive to its end) into this container's own
#                               volume, started as a throwaway
#                               PostgreSQL (unix socket in /tmp only, archiving off), checked
#                               (alembic head = the live database's, hero rows counted), stopped
#                               and deleted. Writes Prometheus text to $OUT/metrics.prom, which
#                               the pgbackrest service's exporter serves.
#   heroes-restore-test run     once now, then every HEROES_RESTORE_TEST_INTERVAL seconds.
set -uo pipefail
out=${HEROES_RESTORE_TEST_DIR:-/var/lib/heroes-restore-test}
data=$out/data
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
repos=(1)
[ -n "${PGBACKREST_REPO2_TYPE:-}" ] && repos+=(2)
log() { printf '{"ts":"%s","level":"%s","logger":"heroes.restore-test","msg":"%s"%s}\n' \
  "$(date -u +%FT%T.%3NZ)" "$1" "$2" "${3:+,$3}" >&2; }
live() { psql -X -At -h /var/run/postgresql -d "${POSTGRES_DB:-heroes}" -c "$1" 2>/dev/null; }
restored() { psql -X -At -h /tmp -p 5433 -d "${POSTGRES_DB:-heroes}" -c "$1"; }

# One repository: 0 when its newest backup restores, starts and holds the live schema.
test_repo() {
  local repo=$1 err head want rows conns
  # verify exits 0 when it found damage too ("completed successfully"): its summary says so.
  if ! err=$(pgbackrest verify --repo="$repo" 2>&1) || grep -q 'status: error' <<<"$err"; then
    log error "verify failed" "\"repo\":$repo,\"error\":\"$(grep -m1 -E 'ERROR|invalid' <<<"$err" | sed 's/^ *//' | tr -d '"\\')\""
    verify_ok[$repo]=0
  else
    verify_ok[$repo]=1
    verify_at[$repo]=$(date +%s)
  fi
  rm -rf "$data" && mkdir -m 0700 "$data"
  # The newest backup and the archive after it to its end (what --latest would do, so a gap or
  # a damaged segment fails here too, and the schema is the live one); archive_mode off: a
  # restored copy must never push WAL into the repository of the cluster it came from.
  if ! err=$(pgbackrest restore --repo="$repo" --pg1-path="$data" --archive-mode=off 2>&1); then
    log error "restore failed" "\"repo\":$repo,\"error\":\"$(grep -m1 ERROR <<<"$err" | tr -d '"\\')\""
    return 1
  fi
  # Recovery refuses a max_connections below the primary's: the one pg_control recorded.
  conns=$("$bin/pg_controldata" "$data" | sed -n 's/^max_connections setting: *//p')
  if ! "$bin/pg_ctl" -D "$data" -w -t 600 -l "$out/postgres.log" -o "-c listen_addresses='' \
    -c unix_socket_directories=/tmp -p 5433 -c archive_mode=off -c max_connections=${conns:-200}" \
    start >/dev/null; then
    log error "restored copy did not start" "\"repo\":$repo,\"log\":\"$(tail -n1 "$out/postgres.log" | tr -d '"\\')\""
    return 1
  fi
  until [ "$(restored 'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ]; do sleep 1; done
  head=$(restored 'SELECT version_num FROM alembic_version' 2>/dev/null)
  rows=$(restored 'SELECT count(*) FROM hero' 2>/dev/null)
  want=$(live 'SELECT version_num FROM alembic_version')
  "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null
  rm -rf "$data"
  if [ -z "$head" ] || [ -z "$rows" ] || { [ -n "$want" ] && [ "$head" != "$want" ]; }; then
    log error "restored copy fails its checks" "\"repo\":$repo,\"alembic\":\"$head\",\"live\":\"$want\",\"heroes\":\"$rows\""
    return 1
  fi
  log info "restore test passed" "\"repo\":$repo,\"alembic\":\"$head\",\"heroes\":$rows"
  restored_rows[$repo]=$rows
}

once() {
  declare -gA verify_ok verify_at restored_rows
  local repo ok prom=$out/metrics.prom.tmp
  : >"$prom"
  for repo in "${repos[@]}"; do
    local started=$SECONDS
    if test_repo "$repo"; then ok=1; else ok=0; fi
    # The last success survives a failure (kept in the file of the previous run).
    local last
    last=$(sed -n "s/^heroes_backup_restore_test_last_success_timestamp_seconds{repo=\"$repo\"} //p" \
      "$out/metrics.prom" 2>/dev/null)
    [ "$ok" = 1 ] && last=$(date +%s)
    local vlast
    vlast=$(sed -n "s/^heroes_backup_verify_last_success_timestamp_seconds{repo=\"$repo\"} //p" \
      "$out/metrics.prom" 2>/dev/null)
    [ "${verify_ok[$repo]}" = 1 ] && vlast=${verify_at[$repo]}
    printf '%s{repo="%s"} %s\n' \
      heroes_backup_restore_test_success "$repo" "$ok" \
      heroes_backup_restore_test_last_success_timestamp_seconds "$repo" "${last:-0}" \
      heroes_backup_restore_test_duration_seconds "$repo" "$((SECONDS - started))" \
      heroes_backup_restore_test_heroes "$repo" "${restored_rows[$repo]:-0}" \
      heroes_backup_verify_success "$repo" "${verify_ok[$repo]}" \
      heroes_backup_verify_last_success_timestamp_seconds "$repo" "${vlast:-0}" >>"$prom"
  done
  mv "$prom" "$out/metrics.prom"
}

case ${1:-} in
  once) once ;;
  run)
    # A new stack: the first test waits for the first backup.
    for repo in "${repos[@]}"; do
      until pgbackrest info --repo="$repo" --output=json 2>/dev/null | grep -q '"label"'; do
        sleep 10
      done
    done
    while :; do
      once
      # A failed test (or none yet: a new stack has no backup for its first minutes) is tried
      # again within 5 minutes, not a day later.
      if grep -q '^heroes_backup_restore_test_success{.*} 0$' "$out/metrics.prom"; then
        sleep "${HEROES_RESTORE_TEST_RETRY:-300}"
      else
        sleep "${HEROES_RESTORE_TEST_INTERVAL:-86400}"
      fi
    done
    ;;
  *) echo "usage: heroes-restore-test once|run" >&2; exit 2 ;;
esac
