#!/usr/bin/env bash
# Build the image, lint the Dockerfile, start the whole compose stack (db, migrate, two api
# replicas behind the HAProxy proxy) under a unique project name on a free loopback port, and prove
# it over HTTP through the proxy and with docker inspect: CRUD without secret_name, /docs, both
# replicas answer and report the build, one request id in the proxy's and the api's JSON logs,
# migrate exited 0, two concurrent migrations both succeed, non-root + read-only root fs (api and
# proxy), graceful stop (drain, exit 0, well under stop_grace_period), data survives a restart. Always `down -v` at the end; prints the logs on failure.
#
# Environment: HEROES_IMAGE (default heroes:local), SMOKE_BUILD=0 to use an already built/loaded
# image, SMOKE_PORT (default 0 = a free port), SMOKE_PROJECT (default heroes-smoke-<pid>-<time>).
set -euo pipefail
# shellcheck source=deploy/scripts/lib/containers.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/containers.sh"
py=.venv/bin/python

export HEROES_IMAGE=${HEROES_IMAGE:-heroes:local}
export HEROES_PORT=${SMOKE_PORT:-0}
HEROES_VERSION=$("$py" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
HEROES_REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)
export HEROES_VERSION HEROES_REVISION
project=${SMOKE_PROJECT:-heroes-smoke-$$-$(date +%s)}
compose=(docker compose -p "$project" -f docker-compose.yml)

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
step() { printf '\n== %s\n' "$*"; }
fail() { echo "FAIL $*" >&2; exit 1; }

ok=0
cleanup() {
  local rc=$?
  if [ "$ok" -ne 1 ]; then
    echo "compose-smoke: FAILED (exit $rc); state and logs of project $project:" >&2
    "${compose[@]}" ps -a >&2 || true
    "${compose[@]}" logs --no-color --timestamps >&2 || true
  fi
  "${compose[@]}" down -v --remove-orphans --timeout 40 >/dev/null 2>&1 || true
  exit "$rc"
}
trap cleanup EXIT

step "hadolint"
deploy/scripts/hadolint.sh

build_s=skipped
if [ "${SMOKE_BUILD:-1}" != 0 ]; then
  step "docker compose build ($HEROES_IMAGE, version $HEROES_VERSION, revision $HEROES_REVISION)"
  t=$(now)
  "${compose[@]}" build api db
  build_s=$(since "$t")
fi
image_bytes=$(docker image inspect -f '{{.Size}}' "$HEROES_IMAGE")
image_mb=$(awk -v b="$image_bytes" 'BEGIN { printf "%.0f", b / 1000 / 1000 }')

step "docker compose up -d --wait (project $project)"
t=$(now)
"${compose[@]}" up -d --wait --wait-timeout 180
up_s=$(since "$t")

api_url() { echo "http://$("${compose[@]}" port proxy 8080)"; }
base=$(api_url)
echo "api (through the proxy) at $base"

step "migrate exited 0"
migrate_id=$("${compose[@]}" ps -a -q migrate)
migrate_rc=$(docker inspect -f '{{.State.ExitCode}}' "$migrate_id")
[ "$migrate_rc" = 0 ] || fail "migrate exited $migrate_rc"
echo "ok   migrate exit code 0"

step "HTTP: CRUD, secret_name never returned, /docs"
"$py" deploy/scripts/smoke.py "$base" crud | tee "${TMPDIR:-/tmp}/$project.crud"
kept=$(sed -n 's/^KEPT_ID=//p' "${TMPDIR:-/tmp}/$project.crud")
rm -f "${TMPDIR:-/tmp}/$project.crud"
[ -n "$kept" ] || fail "smoke.py printed no KEPT_ID"

step "through the proxy: both replicas, their build, one request id in both logs"
mapfile -t api_ids < <("${compose[@]}" ps -q api)
[ "${#api_ids[@]}" = 2 ] || fail "want 2 api replicas, found ${#api_ids[@]}"
rid=smoke-$$-$(date +%s)
# The revision the image was built with (its OCI label): /health/live must report that one.
revision=$(docker image inspect -f '{{ index .Config.Labels "org.opencontainers.image.revision" }}' "$HEROES_IMAGE")
"$py" - "$base" "$rid" "$revision" <<'PY'
import json, sys, urllib.request
base, rid, revision = sys.argv[1:]
seen = set()
for i in range(20):
    req = urllib.request.Request(f"{base}/health/live", headers={"X-Request-ID": f"{rid}-{i}"})
    with urllib.request.urlopen(req, timeout=10) as response:
        body = json.load(response)
        assert response.headers["X-Request-ID"] == f"{rid}-{i}", response.headers
    assert body["revision"] == revision, body
    seen.add(response.headers.get("X-Request-ID"))
for _ in range(20):
    with urllib.request.urlopen(f"{base}/heroes/?limit=1", timeout=10) as response:
        made = response.headers["X-Request-ID"]
assert made and len(made) == 36, made  # the proxy made one (a UUID) for a client that sent none
print(f"ok   20 answers with revision {revision}, request ids echoed; proxy-made id {made}")
PY
logged() {  # service, request id: its JSON log has that id (log lines arrive a moment later)
  local _
  for _ in $(seq 50); do
    # grep reads everything (no -q): an early exit would SIGPIPE compose, failing the pipeline
    "${compose[@]}" logs --no-color "$1" | grep "\"request_id\":\"$2\"" >/dev/null && return 0
    sleep 0.1
  done
  return 1
}
logged proxy "$rid-1" || fail "request id not in the proxy's log"
"$py" - "$base" "$rid" <<'PY'
import sys, urllib.request
base, rid = sys.argv[1:]
req = urllib.request.Request(f"{base}/heroes/?limit=2", headers={"X-Request-ID": f"{rid}-list"})
urllib.request.urlopen(req, timeout=10).read()
PY
logged proxy "$rid-list" || fail "request id not in the proxy's log"
logged api "$rid-list" || fail "request id not in the api's log"
# The proxy stamps X-Request-Start; the api's access line (and latency histogram) counts from it.
queued=$("${compose[@]}" logs --no-color api | grep "\"request_id\":\"$rid-list\"" |
  sed -n 's/.*"queued_ms":\([0-9.]*\).*/\1/p' | head -1)
[ -n "$queued" ] && [ "$queued" != 0 ] && [ "$queued" != 0.0 ] ||
  fail "the api saw no queue time for a proxied request (queued_ms=${queued:-missing})"
for id in "${api_ids[@]}"; do
  docker logs "$id" 2>&1 | grep '"logger":"heroes.access"' >/dev/null || fail "replica ${id:0:12} served nothing"
done
echo "ok   the same request id in the proxy's and the api's JSON log lines (queued $queued ms before the api); both replicas served"

step "hardening (docker inspect / exec)"
proxy_id=$("${compose[@]}" ps -q proxy)
read -r puser pro pcaps pnnp pports < <(docker inspect -f \
  '{{.Config.User}} {{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}} {{.HostConfig.SecurityOpt}} {{len .HostConfig.PortBindings}}' "$proxy_id")
echo "proxy: user=$puser read_only=$pro cap_drop=$pcaps security_opt=$pnnp published_ports=$pports"
[ "$puser" = "99:99" ] && [ "$pro" = true ] && [ "$pcaps" = "[ALL]" ] && [[ "$pnnp" == *no-new-privileges* ]] && [ "$pports" = 1 ] ||
  fail "proxy hardening"
api_id=${api_ids[0]}
read -r user ro caps nnp < <(docker inspect -f \
  '{{.Config.User}} {{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}} {{.HostConfig.SecurityOpt}}' "$api_id")
echo "user=$user read_only=$ro cap_drop=$caps security_opt=$nnp"
[ "$user" = "10001:10001" ] || fail "image user is '$user', want 10001:10001"
[ "$ro" = true ] || fail "root filesystem is not read-only"
[ "$caps" = "[ALL]" ] || fail "cap_drop is $caps"
[[ "$nnp" == *no-new-privileges* ]] || fail "no-new-privileges missing: $nnp"
probe=$("${compose[@]}" exec -T api python -c '
import os
try:
    open("/app/probe", "w")
    fs = "WRITABLE"
except OSError as exc:
    fs = "read-only" if exc.errno == 30 else f"error {exc.errno}"
pid1 = open("/proc/1/cmdline", "rb").read().split(b"\0")
print(os.getuid(), os.getgid(), fs, b"gunicorn" in pid1[1] if len(pid1) > 1 else pid1[0])
')
echo "uid gid rootfs pid1-is-gunicorn: $probe"
[ "$probe" = "10001 10001 read-only True" ] || fail "unexpected runtime identity: $probe"
echo "ok   runs as 10001:10001, read-only root fs, gunicorn is PID 1"

step "two migrations at once (advisory lock)"
"${compose[@]}" run --rm --no-deps -T migrate >"${TMPDIR:-/tmp}/$project.m1" 2>&1 & m1=$!
"${compose[@]}" run --rm --no-deps -T migrate >"${TMPDIR:-/tmp}/$project.m2" 2>&1 & m2=$!
m1_rc=0; wait "$m1" || m1_rc=$?
m2_rc=0; wait "$m2" || m2_rc=$?
cat "${TMPDIR:-/tmp}/$project.m1" "${TMPDIR:-/tmp}/$project.m2"
rm -f "${TMPDIR:-/tmp}/$project.m1" "${TMPDIR:-/tmp}/$project.m2"
if [ "$m1_rc" != 0 ] || [ "$m2_rc" != 0 ]; then fail "concurrent migrations exited $m1_rc and $m2_rc"; fi
echo "ok   both concurrent migrations exited 0"

step "graceful stop, restart, data still there"
t=$(now)
"${compose[@]}" stop api
stop_s=$(since "$t")
stop_rc=$(docker inspect -f '{{.State.ExitCode}}' "$api_id")
echo "api stopped in ${stop_s}s, exit code $stop_rc"
[ "$stop_rc" = 0 ] || fail "api exited $stop_rc on SIGTERM (want 0: gunicorn drained and stopped cleanly)"
awk -v s="$stop_s" 'BEGIN { exit !(s < 30) }' || fail "stop took ${stop_s}s: killed at stop_grace_period?"
"${compose[@]}" logs --no-color api | grep "draining for" >/dev/null || fail "no drain phase in the api log"
echo "ok   SIGTERM: drain phase logged, exit 0"
t=$(now)
"${compose[@]}" start api
"$py" deploy/scripts/smoke.py "$base" wait --timeout 90
restart_s=$(since "$t")
"$py" deploy/scripts/smoke.py "$base" verify "$kept"

ok=1
step "figures"
echo "image $HEROES_IMAGE: ${image_mb} MB ($image_bytes bytes)"
echo "build: ${build_s}s; up -d --wait (db healthy, migrate, api healthy): ${up_s}s"
echo "api stop (drain + graceful): ${stop_s}s; start to ready: ${restart_s}s"
echo "compose-smoke: all checks passed"
