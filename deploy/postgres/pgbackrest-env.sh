#!/bin/sh
# heroes-pgbackrest-env COMMAND [ARG...]: COMMAND with the stack's pgBackRest settings made usable.
# Compose passes every PGBACKREST_* variable it knows, the ones not set in .env as empty strings,
# which pgBackRest refuses ("must have a value"): those are dropped, so an unset repo2 stays
# undefined. The off-host repository's secrets come from Docker secret files, not the environment
# compose is given; an empty file (the development default) sets nothing.
set -eu
for name in $(env | sed -n 's/^\(PGBACKREST_[A-Z0-9_]*\)=$/\1/p'); do unset "$name"; done
secret() {
  if [ -s "/run/secrets/$1" ]; then export "$2=$(cat "/run/secrets/$1")"; fi
}
secret pgbackrest_s3_key PGBACKREST_REPO2_S3_KEY
secret pgbackrest_s3_key_secret PGBACKREST_REPO2_S3_KEY_SECRET
secret pgbackrest_cipher_pass PGBACKREST_REPO2_CIPHER_PASS
exec "$@"
