#!/usr/bin/env bash
# Lint, format check and strict typing of everything Python in the repo.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
deploy/scripts/bootstrap.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
echo "lint: ruff and mypy --strict clean"
