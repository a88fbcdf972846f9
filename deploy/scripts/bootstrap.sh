#!/usr/bin/env bash
# Creates .venv from the hash-pinned lock files (dev lock by default; BOOTSTRAP_LOCK=requirements.lock for runtime only).
# Installs uv with pip first when it is missing, so a fresh machine needs only Python >= 3.11.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
lock=${BOOTSTRAP_LOCK:-requirements-dev.lock}
if ! command -v uv >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check 'uv>=0.5'
fi
stamp=.venv/.lock-stamp
want=$(cat "$lock" pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || uv venv --quiet --python "${PYTHON:-python3}" .venv
uv pip sync --quiet --python .venv/bin/python --require-hashes "$lock"
uv pip install --quiet --python .venv/bin/python --no-deps --no-build-isolation -e .
echo "$want" > "$stamp"
