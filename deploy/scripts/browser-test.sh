#!/usr/bin/env bash
# The API docs in a real browser, offline: deploy/scripts/browser_check.py starts the production
# server (gunicorn -c deploy/gunicorn.conf.py, SQLite) and headless Chromium with no network but
# loopback, checks that Swagger UI (/docs) and ReDoc (/redoc) render every hero operation from
# the app's own assets, that "Authorize" + "Try it out" work, and that a missing asset fails the
# check. Screenshots and page sizes: BROWSER_TEST_OUT (default artifacts/screenshots/).
#
# The browser is CHROMIUM (default: chromium, Debian's package, installed with apt-get when it
# is missing: as root or with passwordless sudo).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
deploy/scripts/bootstrap.sh

browser=${CHROMIUM:-chromium}
if ! command -v "$browser" >/dev/null 2>&1; then
  sudo=()
  if [ "$(id -u)" != 0 ]; then
    sudo -n true 2>/dev/null || { echo "browser-test.sh: $browser missing and no root to install it" >&2; exit 1; }
    sudo=(sudo -n)
  fi
  echo "browser-test.sh: installing $browser with apt-get" >&2
  apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -qq -o=Dpkg::Use-Pty=0)
  "${apt[@]}" update >/dev/null
  "${apt[@]}" install -y --no-install-recommends "$browser" >/dev/null
fi

PYTHONPATH="$PWD/deploy" exec .venv/bin/python deploy/scripts/browser_check.py --chromium "$browser" \
  --out "${BROWSER_TEST_OUT:-artifacts/screenshots}" "$@"
