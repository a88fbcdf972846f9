#!/usr/bin/env bash
# README.md and docs/: README at most 200 lines, every relative link and #anchor resolves, no
# heading or paragraph written in two places, generated figures in one place each
# (deploy/tests/test_markdown.py).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
deploy/scripts/bootstrap.sh
.venv/bin/pytest -q -p no:cacheprovider deploy/tests/test_markdown.py
