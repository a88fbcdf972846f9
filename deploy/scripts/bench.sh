#!/usr/bin/env bash
# Benchmark the tutorial baseline, heroes and a raw-psycopg ceiling in one run (deploy/bench/).
#   deploy/scripts/bench.sh            full run (~4 min); writes the table into README.md
#   deploy/scripts/bench.sh --quick    CI smoke run (~1 min); prints only, never asserts timings
#   deploy/scripts/bench.sh --help     all options (--apps, --scenarios, --profile DIR, ...)
# Needs: PostgreSQL server binaries (PG_BINDIR, default /usr/lib/postgresql/15/bin), wrk (installed
# with apt-get when missing and we are root), and the project venv.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
deploy/scripts/bootstrap.sh

if ! command -v wrk >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[bench] installing wrk" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
  else
    echo "[bench] wrk is missing: install it (Debian/Ubuntu: apt-get install wrk)" >&2
    exit 2
  fi
fi

workdir=$(mktemp -d -t heroes-bench.XXXXXX)
bench_pid=
cleanup() {
  # The harness stops what it started; this only covers a harness that died uncleanly.
  if [ -n "$bench_pid" ] && kill -0 "$bench_pid" 2>/dev/null; then
    kill -TERM "$bench_pid" 2>/dev/null || true
    wait "$bench_pid" 2>/dev/null || true
  fi
  for pidfile in "$workdir"/pids/*.pid; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    case "$(basename "$pidfile")" in
      postgres.pid) kill -INT "$pid" 2>/dev/null || true ;;  # fast shutdown
      *) kill -TERM "$pid" 2>/dev/null || true ;;
    esac
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -rf "$workdir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

PYTHONPATH="$root/deploy" PG_BINDIR="${PG_BINDIR:-/usr/lib/postgresql/15/bin}" \
  .venv/bin/python -m bench --workdir "$workdir" "$@" &
bench_pid=$!
wait "$bench_pid"
