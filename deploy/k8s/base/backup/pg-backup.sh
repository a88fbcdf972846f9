#!/usr/bin/env bash
# The one backup/restore logic of heroes, run inside the PostgreSQL image of the stack (so pg_dump
# and the server have the same major version) by all three callers:
#   - deploy/scripts/backup.sh and restore.sh, through `docker compose run --rm backup ...`;
#   - the compose service `backup` (profile `backup`): `schedule`, with `health` as healthcheck;
#   - the Kubernetes CronJob heroes-backup (this directory; kustomize only reads files under the
#     kustomization, which is why this file lives here and docker-compose.yml mounts it from here).
#
#   pg-backup.sh once               one archive in /backups + checksum + retention; prints its path
#   pg-backup.sh schedule           `once` every HEROES_BACKUP_INTERVAL seconds, forever
#   pg-backup.sh health             exit 0 only if the last scheduled run succeeded recently
#   pg-backup.sh check FILE [--force]    is FILE a readable archive, may it be restored now?
#   pg-backup.sh restore FILE [--force]  check, then restore FILE and move the id sequences up
#
# Connection: DATABASE_URL or DATABASE_URL_FILE (the application's URL; no password in it) and the
# password from DATABASE_PASSWORD_FILE, handed to libpq through a 0600 PGPASSFILE in /tmp: no
# password on any command line or in the environment. Archives: /backups/<db>-<UTC time>.dump
# (pg_dump custom format, one consistent snapshot taken online) and <archive>.sha256, mode 0600,
# written under a temporary name and renamed; the newest HEROES_BACKUP_KEEP (default 7) are kept.
# One JSON line per run on stderr ({"ts","level","logger":"heroes.backup","msg",...}).
set -euo pipefail
umask 077

readonly DIR=/backups
readonly STATUS=/tmp/heroes-backup.status
KEEP=${HEROES_BACKUP_KEEP:-7}
INTERVAL=${HEROES_BACKUP_INTERVAL:-86400}

die() {  # during a backup run, the failure is that run's one JSON log line
  if [ -n "${RUN_STARTED:-}" ]; then
    log_json error "backup failed" status '"failed"' error "$(json_string "$*")" \
      seconds "$(elapsed "$RUN_STARTED")"
  else
    echo "pg-backup: $*" >&2
  fi
  exit 1
}

elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }'; }

json_string() {  # a JSON string literal for $1 (backslash, quote, control characters escaped)
  local s=$1
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\t'/\\t}
  s=${s//$'\r'/\\r}
  s=${s//$'\n'/\\n}
  printf '"%s"' "$(printf '%s' "$s" | tr -d '\000-\010\013\014\016-\037')"
}

log_json() {  # log_json LEVEL MSG [key raw-json-value]...
  local level=$1 msg=$2 line
  shift 2
  line=$(printf '{"ts":"%s","level":"%s","logger":"heroes.backup","msg":%s' \
    "$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)" "$level" "$(json_string "$msg")")
  while [ $# -ge 2 ]; do
    line+=",\"$1\":$2"
    shift 2
  done
  printf '%s}\n' "$line" >&2
}

trim() {  # like the application's str.strip() of a *_FILE's content
  local s=$1
  s=${s#"${s%%[![:space:]]*}"}
  printf '%s' "${s%"${s##*[![:space:]]}"}"
}

connect() {  # sets $DB_URL (libpq URI, no password) and PGPASSFILE; once per process
  [ -n "${DB_URL:-}" ] && return 0
  local url=${DATABASE_URL:-}
  if [ -n "${DATABASE_URL_FILE:-}" ]; then
    url=$(<"$DATABASE_URL_FILE")
  fi
  [ -n "$url" ] || die "set DATABASE_URL or DATABASE_URL_FILE (postgresql://user@host:5432/db)"
  url=$(trim "$url")
  # SQLAlchemy's driver suffix (postgresql+psycopg://) is not libpq's.
  case $url in
    postgresql+*://* | postgres+*://*) url=postgresql://${url#*://} ;;
    postgresql://* | postgres://*) ;;
    *) die "DATABASE_URL must be a postgresql:// URL" ;;
  esac
  local authority=${url#*://}
  authority=${authority%%/*}
  case $authority in
    *:*@*) die "DATABASE_URL carries a password: put it in DATABASE_PASSWORD_FILE instead" ;;
  esac
  DB_URL=$url
  if [ -n "${DATABASE_PASSWORD_FILE:-}" ]; then
    local password
    password=$(trim "$(<"$DATABASE_PASSWORD_FILE")")
    password=${password//\\/\\\\}
    password=${password//:/\\:}
    PGPASSFILE=$(mktemp /tmp/pgpass.XXXXXX)
    printf '*:*:*:*:%s\n' "$password" >"$PGPASSFILE"
    export PGPASSFILE
  fi
  export PGCONNECT_TIMEOUT=${PGCONNECT_TIMEOUT:-10} PGAPPNAME=heroes-backup
}

sql() {  # one statement, unaligned tuples only
  psql -X -q -v ON_ERROR_STOP=1 -At -d "$DB_URL" -c "$1"
}

database_name() {
  local name=${DB_URL#*://}
  name=${name#*/}
  name=${name%%\?*}
  printf '%s' "${name:-postgres}"
}

prune() {  # keep the newest $KEEP archives of this database; print the names removed
  local archives=("$DIR/$(database_name)"-[0-9]*T[0-9]*Z.dump)
  [ -e "${archives[0]}" ] || return 0
  local excess=$((${#archives[@]} - KEEP)) i
  for ((i = 0; i < excess; i++)); do
    rm -f -- "${archives[i]}" "${archives[i]}.sha256"
    printf '%s\n' "${archives[i]##*/}"
  done
}

backup_once() {
  RUN_STARTED=$(date +%s.%N)
  case $KEEP in '' | *[!0-9]* | 0) die "HEROES_BACKUP_KEEP must be a positive integer, not '$KEEP'" ;; esac
  if [ ! -d "$DIR" ] || [ ! -w "$DIR" ]; then
    die "$DIR is not a writable directory for uid $(id -u)"
  fi
  connect
  local stamp name tmp errors sum bytes pruned
  stamp=$(date -u +%Y%m%dT%H%M%SZ)
  name=$(database_name)-$stamp.dump
  while [ -e "$DIR/$name" ]; do  # two backups within one second
    sleep 1
    stamp=$(date -u +%Y%m%dT%H%M%SZ)
    name=$(database_name)-$stamp.dump
  done
  tmp=$DIR/.$name.$$.partial
  errors=$(mktemp /tmp/pg_dump.err.XXXXXX)
  # Never leave a partial file behind, whatever stops this run.
  trap 'rm -f -- "$tmp" "$tmp.sha256" "$errors"' EXIT
  # pg_dump reads everything in one REPEATABLE READ snapshot: consistent while the API writes.
  if ! pg_dump --format=custom --file="$tmp" --dbname="$DB_URL" 2>"$errors"; then
    die "$(grep -v '^$' "$errors" | tail -n 1)"
  fi
  sum=$(sha256sum "$tmp" | cut -d' ' -f1)
  printf '%s  %s\n' "$sum" "$name" >"$tmp.sha256"
  sync "$tmp" "$tmp.sha256"
  mv -- "$tmp" "$DIR/$name"
  mv -- "$tmp.sha256" "$DIR/$name.sha256"
  rm -f -- "$errors"
  trap - EXIT
  bytes=$(stat -c %s "$DIR/$name")
  pruned=$(prune | sed 's/.*/"&"/' | paste -sd, -)
  log_json info "backup written" status '"ok"' archive "$(json_string "$DIR/$name")" bytes "$bytes" \
    sha256 "\"$sum\"" seconds "$(elapsed "$RUN_STARTED")" keep "$KEEP" pruned "[$pruned]"
  printf '%s\n' "$DIR/$name"
}

schedule() {
  case $INTERVAL in '' | *[!0-9]* | 0) die "HEROES_BACKUP_INTERVAL must be a positive number of seconds" ;; esac
  case $KEEP in '' | *[!0-9]* | 0) die "HEROES_BACKUP_KEEP must be a positive integer, not '$KEEP'" ;; esac
  trap 'exit 0' TERM INT
  log_json info "scheduled backups every ${INTERVAL}s" interval "$INTERVAL" keep "$KEEP"
  while :; do
    # A child process (errexit intact): a failed run is logged and recorded, the schedule goes on.
    if bash "$0" once >/dev/null; then
      echo "ok $(date +%s)" >"$STATUS"
    else
      echo "failed $(date +%s)" >"$STATUS"
    fi
    sleep "$INTERVAL" &
    wait $! || true
  done
}

health() {
  [ -f "$STATUS" ] || die "no scheduled backup has finished yet"
  local state at
  read -r state at <"$STATUS"
  [ "$state" = ok ] || die "the last scheduled backup failed (see the service's log)"
  # A schedule that hangs is as bad as one that fails: two intervals (+5 min) without success.
  [ $(($(date +%s) - at)) -le $((2 * INTERVAL + 300)) ] || die "no successful backup for $(($(date +%s) - at))s"
}

verify() {  # verify FILE: the checksum file beside it matches, and pg_restore can read the archive
  local file=$1 want have
  [ -f "$file" ] || die "no archive $file"
  [ -f "$file.sha256" ] || die "no checksum file $file.sha256: refusing an unverifiable archive"
  want=$(cut -d' ' -f1 <"$file.sha256")
  have=$(sha256sum "$file" | cut -d' ' -f1)
  [ "$want" = "$have" ] || die "checksum mismatch for $file: the archive is damaged or was altered"
  pg_restore --list "$file" >/dev/null 2>&1 || die "$file is not a pg_dump custom-format archive"
}

check() {  # check FILE [--force]: nothing is changed
  local file=$1 force=${2:-} tables
  verify "$file"
  connect
  # Non-empty = any row in any table but alembic_version (a freshly migrated database is empty).
  tables=$(sql "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables
                WHERE schemaname NOT IN ('pg_catalog', 'information_schema')
                  AND tablename <> 'alembic_version'")
  local table rows=""
  while IFS= read -r table; do
    [ -n "$table" ] || continue
    if [ "$(sql "SELECT EXISTS (SELECT 1 FROM $table)")" = t ]; then
      rows+=" $table"
    fi
  done <<<"$tables"
  if [ -n "$rows" ] && [ "$force" != --force ]; then
    die "database $(database_name) is not empty (rows in:$rows): --force restores over it"
  fi
}

restore() {  # restore FILE [--force]
  local file=$1 force=${2:-}
  check "$file" "$force"
  local started
  started=$(date +%s.%N)
  # One transaction: a failing restore leaves the database as it was.
  pg_restore --clean --if-exists --no-owner --single-transaction --exit-on-error \
    --dbname="$DB_URL" "$file"
  # Sequences are not part of pg_dump's snapshot (and an archive may lack them): move every
  # serial/identity sequence above the largest restored value of its column, never below.
  sql "DO \$\$
DECLARE r record; top bigint; last bigint; called boolean;
BEGIN
  FOR r IN
    SELECT c.table_schema AS s, c.table_name AS t, c.column_name AS col,
           pg_get_serial_sequence(format('%I.%I', c.table_schema, c.table_name), c.column_name) AS seq
    FROM information_schema.columns c
    WHERE c.table_schema NOT IN ('pg_catalog', 'information_schema')
  LOOP
    CONTINUE WHEN r.seq IS NULL;
    EXECUTE format('SELECT max(%I) FROM %I.%I', r.col, r.s, r.t) INTO top;
    EXECUTE format('SELECT last_value, is_called FROM %s', r.seq) INTO last, called;
    top := GREATEST(COALESCE(top, 0), CASE WHEN called THEN last ELSE last - 1 END);
    IF top > 0 THEN PERFORM setval(r.seq, top, true); END IF;
  END LOOP;
END \$\$"
  echo "restored ${file##*/} into database $(database_name) in $(elapsed "$started")s (one transaction, --clean --if-exists --no-owner)"
  sql "SELECT format('  %s: %s rows', c.relname,
                     (xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM %I.%I', n.nspname, c.relname), false, true, '')))[1]::text)
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
       ORDER BY 1"
  sql "SELECT format('  sequence %s: next value %s', s.sequencename,
                     CASE WHEN s.last_value IS NULL THEN s.start_value ELSE s.last_value + s.increment_by END)
       FROM pg_sequences s ORDER BY 1"
}

case ${1:-} in
  once) backup_once ;;
  schedule) schedule ;;
  health) health ;;
  check) check "${2:?usage: pg-backup.sh check FILE [--force]}" "${3:-}" ;;
  restore) restore "${2:?usage: pg-backup.sh restore FILE [--force]}" "${3:-}" ;;
  *) die "usage: pg-backup.sh once|schedule|health|check FILE [--force]|restore FILE [--force]" ;;
esac
