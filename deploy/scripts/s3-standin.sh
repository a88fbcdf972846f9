#!/usr/bin/env bash
# A local S3-compatible object store for tests and trials of the off-host backup repository
# (docs/backups.md). NOT for production: moto's server keeps every object in memory.
#
#   deploy/scripts/s3-standin.sh up     build and start it; print last the KEY=VALUE settings that
#                                       point the stack at it (what .env holds for a real bucket)
#   deploy/scripts/s3-standin.sh down   remove it (and its objects)
#
# It is a compose project of its own (S3_STANDIN_PROJECT, default heroes-s3-standin), so taking
# the heroes stack down with -v leaves it standing like a remote service. It serves HTTPS with a
# certificate from a CA generated here, on the host's address for containers (host-gateway; the
# stack reaches it as host.docker.internal) on a free port. Its files (CA, keys, credentials,
# the repository passphrase) go to S3_STANDIN_DIR (default .s3-standin/ in the checkout, 0700).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

project=${S3_STANDIN_PROJECT:-heroes-s3-standin}
dir=${S3_STANDIN_DIR:-$PWD/.s3-standin}
bucket=${S3_STANDIN_BUCKET:-heroes-backups}
export S3_STANDIN_IMAGE=${S3_STANDIN_IMAGE:-heroes-s3-standin:local}
export S3_STANDIN_TLS_DIR=$dir/tls
compose=(docker compose -p "$project" -f deploy/s3-standin/compose.yml)

case ${1:-} in
  up) ;;
  down)
    S3_STANDIN_BIND=127.0.0.1 "${compose[@]}" down -v --remove-orphans
    exit 0
    ;;
  *)
    echo "usage: s3-standin.sh up|down" >&2
    exit 2
    ;;
esac

# The address a container's host-gateway entry resolves to (Docker's default bridge gateway).
probe=${S3_STANDIN_PROBE_IMAGE:-${POSTGRES_IMAGE:-postgres:17}}
gateway=$(docker run --rm --add-host gw:host-gateway --entrypoint getent "$probe" hosts gw | cut -d' ' -f1)
export S3_STANDIN_BIND=$gateway

mkdir -p "$dir/tls" && chmod 0700 "$dir"
if [ ! -s "$dir/tls/server.pem" ]; then
  openssl req -x509 -new -nodes -newkey rsa:2048 -days 30 -subj "/CN=heroes S3 stand-in CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$dir/ca.key" -out "$dir/tls/ca.pem" 2>/dev/null
  openssl req -new -nodes -newkey rsa:2048 -subj "/CN=host.docker.internal" \
    -keyout "$dir/tls/server.key" -out "$dir/server.csr" 2>/dev/null
  # What strict verifiers (Python 3.13, Go) ask of a server certificate.
  printf '%s\n' "subjectAltName=DNS:host.docker.internal,DNS:localhost,IP:127.0.0.1,IP:$gateway" \
    "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" \
    "authorityKeyIdentifier=keyid" "subjectKeyIdentifier=hash" >"$dir/server.ext"
  openssl x509 -req -in "$dir/server.csr" -CA "$dir/tls/ca.pem" -CAkey "$dir/ca.key" \
    -CAcreateserial -days 30 -extfile "$dir/server.ext" -out "$dir/tls/server.pem" 2>/dev/null
  # Readable by the stand-in (uid 65534) and by pgBackRest (uid 999) through bind mounts.
  cat "$dir/tls/server.pem" "$dir/tls/server.key" >"$dir/tls/server-bundle.pem"
  chmod 0755 "$dir/tls" && chmod 0644 "$dir/tls/"*
  # Credentials and the repository passphrase: secret files, as an operator keeps them.
  openssl rand -hex 10 | tr a-f A-F >"$dir/s3-key"
  openssl rand -base64 30 >"$dir/s3-key-secret"
  openssl rand -base64 48 | tr -d '\n' >"$dir/cipher-pass"
  chmod 0644 "$dir/s3-key" "$dir/s3-key-secret" "$dir/cipher-pass"
fi

"${compose[@]}" up -d --build --wait --wait-timeout 120 >&2
port=$("${compose[@]}" port tls 9443 | sed 's/.*://')
# The bucket (pgBackRest uses one, it does not create it).
"${compose[@]}" exec -T s3 python - "$bucket" <<'PY' >&2
import sys, boto3
s3 = boto3.client("s3", endpoint_url="http://127.0.0.1:9000",
                  region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
if sys.argv[1] not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
    s3.create_bucket(Bucket=sys.argv[1])
PY
echo "s3-standin: https://host.docker.internal:$port (from containers; $gateway:$port from this host), bucket $bucket" >&2
cat <<SETTINGS
PGBACKREST_REPO2_TYPE=s3
PGBACKREST_REPO2_S3_ENDPOINT=host.docker.internal
PGBACKREST_REPO2_STORAGE_PORT=$port
PGBACKREST_REPO2_S3_BUCKET=$bucket
PGBACKREST_REPO2_S3_REGION=us-east-1
PGBACKREST_REPO2_S3_URI_STYLE=path
PGBACKREST_REPO2_PATH=/heroes
HEROES_S3_CA_FILE=$dir/tls/ca.pem
HEROES_S3_KEY_FILE=$dir/s3-key
HEROES_S3_KEY_SECRET_FILE=$dir/s3-key-secret
HEROES_BACKUP_CIPHER_PASS_FILE=$dir/cipher-pass
SETTINGS
