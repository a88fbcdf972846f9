#!/usr/bin/env bash
# Lint the Dockerfiles (the api image's, the database image's in deploy/postgres/, the S3
# stand-in's in deploy/s3-standin/) with hadolint from the dev lock (.venv/bin/hadolint); fails on
# warnings too.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
deploy/scripts/bootstrap.sh
.venv/bin/hadolint --failure-threshold warning Dockerfile deploy/postgres/Dockerfile \
  deploy/s3-standin/Dockerfile
echo "hadolint: Dockerfile, deploy/postgres/Dockerfile and deploy/s3-standin/Dockerfile clean"
