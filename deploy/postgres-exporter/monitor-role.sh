#!/bin/sh
# The PostgreSQL exporter's login role: pg_monitor only, inherited (reads pg_stat_activity, pg_settings,
# the statistics views and pg_ls_waldir for the wal collector), never the superuser. Idempotent: the
# `postgres-exporter-role` one-shot service runs it on every `up` of the monitoring profile, as
# the owner (POSTGRES_USER); the role's password is the db_password secret (read by psql itself,
# never on a command line).
set -eu
export PGPASSFILE=/tmp/pgpass
printf '*:*:*:*:%s\n' "$(cat /run/secrets/db_password)" >"$PGPASSFILE"
chmod 600 "$PGPASSFILE"
exec psql -X -q -v ON_ERROR_STOP=1 -h "${PGHOST:-db}" -U "$POSTGRES_USER" -d "$POSTGRES_DB" \
  -v role="$POSTGRES_EXPORTER_USER" <<'SQL'
\set pw `cat /run/secrets/db_password`
SELECT format('CREATE ROLE %I LOGIN', :'role')
  WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
SELECT format('ALTER ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE INHERIT PASSWORD %L',
  :'role', :'pw') \gexec
SELECT format('GRANT pg_monitor TO %I', :'role') \gexec
SQL
