#!/usr/bin/env bash
# Lint the Dockerfiles (the api image's and the database image's, deploy/postgres/) with hadolint
# from the dev lock (.venv/bin/hadolint); fails on warnings too.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
deploy/scripts/bootstrap.sh
.venv/bin/hadolint --failure-threshold warning Dockerfile deploy/postgres/Dockerfile
echo "hadolint: Dockerfile and deploy/postgres/Dockerfile clean"
