#!/usr/bin/env bash
# What the proxy costs (deploy/bench/proxy.py): GET one with one api replica, through HAProxy vs
# straight to that replica, interleaved in one run; both rates, their ratio, HAProxy's CPU share.
#   deploy/scripts/bench-proxy.sh            full run (~2 min); figures in /tmp/readme/proxy-bench.md
#   deploy/scripts/bench-proxy.sh --quick    CI smoke run (~30 s); asserts no timings
# Environment: HEROES_IMAGE (default heroes:local; built with `docker compose build` when
# missing), BENCH_PROJECT (default heroes-bench-proxy). Needs wrk: installed with apt-get (as
# root, or through sudo -n) when missing.
set -euo pipefail
# shellcheck source=deploy/scripts/lib/containers.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/containers.sh"
if ! command -v wrk >/dev/null 2>&1; then
  as_root=(); [ "$(id -u)" = 0 ] || as_root=(sudo -n)
  { "${as_root[@]}" apt-get update -qq && "${as_root[@]}" apt-get install -y -qq wrk >/dev/null; } ||
    { echo "bench-proxy: wrk is missing and could not be installed (apt-get install wrk)" >&2; exit 2; }
fi
export HEROES_IMAGE=${HEROES_IMAGE:-heroes:local}
if ! docker image inspect "$HEROES_IMAGE" >/dev/null 2>&1; then
  docker compose -p "${BENCH_PROJECT:-heroes-bench-proxy}" build api
fi
PYTHONPATH="$root/deploy" .venv/bin/python -m bench.proxy "$@"
