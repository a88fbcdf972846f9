#!/usr/bin/env bash
# One online backup of the compose stack's database, taken with the stack's own postgres image
# (the `backup` service of docker-compose.yml, so pg_dump matches the server's major version):
#
#   deploy/scripts/backup.sh            -> prints the archive's host path as its last line
#
# Environment: HEROES_BACKUP_DIR (default ./backups, created if missing), HEROES_BACKUP_KEEP
# (default 7: older archives are removed), COMPOSE_PROJECT_NAME / COMPOSE_FILE / COMPOSE_PROFILES
# exactly as `docker compose` reads them (this script runs `docker compose` in the current
# directory with no -p/-f of its own). The archive is written by the container as the calling user
# (HEROES_BACKUP_USER overrides), mode 0600, under a temporary name renamed once complete, with a
# sha256sum-format <archive>.sha256 beside it. The logic: deploy/k8s/base/backup/pg-backup.sh.
# No password is on any command line: the container reads the stack's db_password secret file.
set -euo pipefail

dir=${HEROES_BACKUP_DIR:-./backups}
mkdir -p -- "$dir"
dir=$(cd -- "$dir" && pwd -P)
# Compose interpolates it into the backup service's bind mount.
export HEROES_BACKUP_DIR=$dir

compose=(docker compose --profile backup)
if ! "${compose[@]}" ps --status running --services 2>/dev/null | grep -qx db; then
  echo "backup.sh: the db service of compose project ${COMPOSE_PROJECT_NAME:-(from the compose file)} is not running: nothing to back up" >&2
  exit 1
fi

user=${HEROES_BACKUP_USER:-$(id -u):$(id -g)}
out=$("${compose[@]}" run --rm --no-deps -T --user "$user" backup once)
archive=${out##*$'\n'}
case $archive in
  /backups/*) ;;
  *)
    echo "backup.sh: unexpected output from the backup container: $out" >&2
    exit 1
    ;;
esac
echo "$dir/${archive#/backups/}"
