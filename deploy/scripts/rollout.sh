#!/usr/bin/env bash
# Zero-downtime update of the api replicas behind the proxy to IMAGE (docs/load-balancing.md):
#
#   deploy/scripts/rollout.sh IMAGE
#
# Like `docker compose`, it honours COMPOSE_PROJECT_NAME, COMPOSE_FILE (e.g.
# docker-compose.yml:deploy/compose.production.yml) and HEROES_PORT; run it from the project
# directory. Steps:
#   1. migrations first, with IMAGE (the one-shot `migrate` container; the running replicas must
#      accept the new schema: expand first, contract in a later release);
#   2. as many new replicas as there are old ones, started beside them (--no-recreate), the
#      proxy's free slots held in drain meanwhile (no requests until a replica is healthy);
#   3. wait until each new one is healthy (/health/ready), then let the proxy route to it;
#   4. each old replica out of rotation in HAProxy (runtime API: maint), its in-flight requests
#      finished, then stopped (SIGTERM: drain + graceful) and removed.
# If a new replica is not healthy and routed within ROLLOUT_TIMEOUT seconds (default 120), or
# exits or restarts before that (a release that crashes at start: no waiting for the deadline;
# gunicorn stops itself when its workers keep dying before they boot, whatever their exit),
# the new ones are removed, the old ones keep serving, and the script exits 1 with one line
# saying why.
#
# Afterwards keep HEROES_IMAGE=IMAGE in the environment (or .env) for later `docker compose`
# commands, or compose will recreate the replicas with the old image.
set -euo pipefail

if [ $# -ne 1 ] || [ -z "$1" ]; then
  echo "usage: $0 IMAGE" >&2
  exit 2
fi
image=$1
timeout=${ROLLOUT_TIMEOUT:-120}
drain_timeout=${ROLLOUT_DRAIN_TIMEOUT:-30}
export COMPOSE_BAKE=false HEROES_IMAGE=$image
compose=(docker compose)

t0=$(date +%s)
log() { printf 'rollout %ss: %s\n' "$(($(date +%s) - t0))" "$*" >&2; }
die() { echo "rollout: FAILED: $*" >&2; exit 1; }

# HAProxy's runtime API, on the proxy container's loopback (the image has bash, no curl/socat).
haproxy_cmd() {
  # shellcheck disable=SC2016  # $1 expands in the proxy container's bash
  "${compose[@]}" exec -T proxy bash -c \
    'exec 3<>/dev/tcp/127.0.0.1/9999 && printf "%s\n" "$1" >&3 && cat <&3' _ "$1"
}
# "slot addr op_state admin_state" of every server slot of backend $1 (api, api_panic).
servers() { haproxy_cmd "show servers state $1" | awk 'NF > 7 && $1 ~ /^[0-9]+$/ { print $4, $5, $6, $7 }'; }
addresses() { docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' "$1"; }
slot_of() {  # backend $1's server slot holding address $2, if any (its own slot in each backend)
  local slot a _op _adm
  while read -r slot a _op _adm; do
    if [ "$a" = "$2" ]; then echo "$slot"; return; fi
  done < <(servers "$1")
}
edge_address() {  # the address of container $1 that the proxy knows
  local addr
  for addr in $(addresses "$1"); do
    if [ -n "$(slot_of api "$addr")" ]; then echo "$addr"; return; fi
  done
}
routed() {  # container $1 is UP in the proxy (operational state 2) and not in maintenance
  local addr slot a op adm
  for addr in $(addresses "$1"); do
    while read -r slot a op adm; do
      if [ "$a" = "$addr" ] && [ "$op" = 2 ] && [ "$adm" = 0 ]; then return 0; fi
    done < <(servers api)
  done
  return 1
}
in_flight() {  # requests being served or queued on backend $1's slot $2 (qcur + scur)
  haproxy_cmd "show stat" | awk -F, -v b="$1" -v s="$2" '$1 == b && $2 == s { n = $3 + $5 } END { print n + 0 }'
}
set_state() {  # backend, address, state: the slot holding that address, in both backends
  local slot
  slot=$(slot_of "$1" "$2")
  [ -z "$slot" ] || haproxy_cmd "set server $1/$slot state $3" >/dev/null
  echo "$slot"
}
running_api() { "${compose[@]}" ps -q --status running api | sort; }

# HAProxy 3.0 puts a slot UP the moment DNS fills it, before any check ("start OK"; 3.1 has
# init-state): a new replica that listens and then dies at boot (its workers crash) would get
# requests that are lost with it. So the free slots (resolution maintenance, no address yet)
# are held in drain while the new replicas start: DNS and the checks go on, no request goes
# there; each is released once its replica is healthy, and the rest when the script ends.
RMAINT=32 FDRAIN=16  # bits of show servers state's srv_admin_state
held=()
hold_free_slots() {
  local b slot _a _op adm cmds=()
  for b in api api_panic; do
    while read -r slot _a _op adm; do
      if (( adm & RMAINT )); then held+=("$b/$slot"); cmds+=("set server $b/$slot state drain"); fi
    done < <(servers "$b")
  done
  [ "${#cmds[@]}" -eq 0 ] || haproxy_cmd "$(IFS=';'; echo "${cmds[*]}")" >/dev/null
}
release() {  # the slots of container $1 (healthy) out of drain, in both backends
  local addr
  for addr in $(addresses "$1"); do
    set_state api "$addr" ready >/dev/null
    set_state api_panic "$addr" ready >/dev/null
  done
}
release_held() {  # at exit: every held slot back to ready once none holds a removed replica
  [ "${#held[@]}" -gt 0 ] || return 0
  local b slot _a _op adm waiting cmds=()
  for _ in $(seq 50); do
    waiting=0
    for b in api api_panic; do
      while read -r slot _a _op adm; do
        if (( (adm & FDRAIN) && !(adm & RMAINT) )) && [[ " ${held[*]} " == *" $b/$slot "* ]]; then
          waiting=1  # still drained with an address: a removed new replica until DNS drops it
        fi
      done < <(servers "$b")
    done
    [ "$waiting" = 1 ] || break
    sleep 0.2
  done
  for slot in "${held[@]}"; do cmds+=("set server $slot state ready"); done
  haproxy_cmd "$(IFS=';'; echo "${cmds[*]}")" >/dev/null || true
}

proxy_id=$("${compose[@]}" ps -q --status running proxy)
[ -n "$proxy_id" ] || die "the proxy service is not running (docker compose up -d first)"
mapfile -t old < <(running_api)
[ "${#old[@]}" -gt 0 ] || die "no running api replica to replace (docker compose up -d first)"
n=${#old[@]}
log "replacing $n api replica(s) with $image"

log "migrations with $image"
"${compose[@]}" run --rm --no-deps -T migrate >&2 || die "migrations with $image exited non-zero; nothing else changed"

log "starting $n new replica(s) beside the old ones"
trap release_held EXIT
hold_free_slots
"${compose[@]}" up -d --no-deps --no-recreate --scale "api=$((2 * n))" api >&2 2>&1 ||
  true  # judged below, by health: a replica that exits at once is a failure like any other
mapfile -t new < <(comm -13 <(printf '%s\n' "${old[@]}") <("${compose[@]}" ps -a -q api | sort))

remove_new() {
  if [ "${#new[@]}" -gt 0 ]; then docker rm -f "${new[@]}" >/dev/null 2>&1 || true; fi
}

# Why container $1 cannot become healthy, or nothing: a replica that exited (or is restarting,
# or has restarted) before it got healthy will not get healthy, so there is no point waiting for
# the deadline: a release that crashes at start is rolled back within a second of its first exit.
crashed() {
  local status code restarts last
  read -r status code restarts < <(docker inspect -f '{{.State.Status}} {{.State.ExitCode}} {{.RestartCount}}' "$1" 2>/dev/null || echo gone 0 0)
  case "$status:$restarts" in
    running:0 | created:0) return 0 ;;
  esac
  # The server's own account when it stopped a crash loop (deploy/gunicorn.conf.py: "Reason:
  # crash loop: ... the last: Worker (pid:N) exited with code 7"), else its last line.
  last=$(docker logs --tail 200 "$1" 2>&1 | tr -d '\r' | { grep 'crash loop' || true; } | tail -n 1 | cut -c1-400)
  [ -n "$last" ] || last=$(docker logs --tail 1 "$1" 2>&1 | tr -d '\r' | cut -c1-200)
  if [ "$restarts" -gt 0 ]; then
    echo "new api replica ${1:0:12} exited and was restarted $restarts time(s) before it became healthy${last:+; its last log line: $last}"
  else
    echo "new api replica ${1:0:12} exited with status $code before it became healthy${last:+; its last log line: $last}"
  fi
}

deadline=$(($(date +%s) + timeout))
pending=("${new[@]}")
while [ "${#pending[@]}" -gt 0 ]; do
  still=()
  for c in "${pending[@]}"; do
    why=$(crashed "$c")
    if [ -n "$why" ]; then
      remove_new
      die "$why; removed the new ones, the $n old one(s) still serve"
    fi
    health=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$c" 2>/dev/null || echo gone)
    [ "$health" != healthy ] || release "$c"
    if [ "$health" = healthy ] && routed "$c"; then
      log "new replica ${c:0:12} healthy and routed"
    else
      still+=("$c")
    fi
  done
  pending=("${still[@]+"${still[@]}"}")
  if [ "${#pending[@]}" -gt 0 ] && [ "$(date +%s)" -ge "$deadline" ]; then
    remove_new
    die "$((${#pending[@]})) new api replica(s) with $image not healthy and routed within ${timeout}s; removed the new ones, the $n old one(s) still serve"
  fi
  [ "${#pending[@]}" -gt 0 ] && sleep 0.5
done
[ "${#new[@]}" -eq "$n" ] || { remove_new; die "expected $n new replicas, compose started ${#new[@]}; removed them, the old ones still serve"; }

for c in "${old[@]}"; do
  addr=$(edge_address "$c")
  if [ -n "$addr" ]; then
    slot=$(set_state api "$addr" maint)
    panic_slot=$(set_state api_panic "$addr" maint)
    waited=0
    while [ $(( $(in_flight api "$slot") + $(in_flight api_panic "${panic_slot:-none}") )) -gt 0 ] &&
      [ "$waited" -lt "$((drain_timeout * 10))" ]; do
      sleep 0.1
      waited=$((waited + 1))
    done
    log "old replica ${c:0:12} ($addr) out of rotation, in-flight requests done"
  fi
  docker stop "$c" >/dev/null  # SIGTERM: the api drains and finishes anything left, exit 0
  docker rm "$c" >/dev/null
  if [ -n "$addr" ]; then
    # A slot keeps its maintenance flag when DNS later gives it another replica's address: clear
    # it once DNS has dropped this one (HAProxy then holds the slot in resolution maintenance).
    for _ in $(seq 50); do
      [ -n "$(slot_of api "$addr")$(slot_of api_panic "$addr")" ] || break
      sleep 0.2
    done
    haproxy_cmd "set server api/$slot state ready" >/dev/null
    [ -z "$panic_slot" ] || haproxy_cmd "set server api_panic/$panic_slot state ready" >/dev/null
  fi
  log "old replica ${c:0:12} stopped and removed"
done
log "done: $n replica(s) on $image"
