#!/usr/bin/env bash
# The run command: a local API on http://127.0.0.1:8000 backed by the embedded SQLite database
# (migrated first). Extra arguments go to `heroes serve` (e.g. --port 9000 --reload).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
deploy/scripts/bootstrap.sh
exec .venv/bin/heroes serve "$@"
