#!/usr/bin/env bash
# Lint the Dockerfile with hadolint from the dev lock (.venv/bin/hadolint); fails on warnings too.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
deploy/scripts/bootstrap.sh
.venv/bin/hadolint --failure-threshold warning Dockerfile
echo "hadolint: Dockerfile clean"
