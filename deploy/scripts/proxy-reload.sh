#!/usr/bin/env bash
# Reload HAProxy without a failed request (a new certificate, a changed haproxy.cfg):
#   deploy/scripts/proxy-reload.sh
# 1. saves every server's address and health through the runtime API into the server-state file
#    (haproxy.cfg: server-state-file), so the new worker starts with the replicas the old one
#    knew instead of none until its first DNS answer;
# 2. sends SIGUSR2 to HAProxy's master: a new worker takes new connections, the old one finishes
#    its requests and exits.
# Honours COMPOSE_PROJECT_NAME, COMPOSE_FILE (e.g. with deploy/compose.production.yml) like
# `docker compose`. Prints one line; exit 1 if the state could not be saved (nothing reloaded).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export COMPOSE_BAKE=false
save='exec 3<>/dev/tcp/127.0.0.1/9999 && echo "show servers state" >&3 && cat <&3 > /tmp/haproxy-server-state.new && mv /tmp/haproxy-server-state.new /tmp/haproxy-server-state && grep -c "" /tmp/haproxy-server-state'
if ! lines=$(docker compose exec -T proxy bash -c "$save"); then
  echo "proxy-reload: FAILED: could not save the server state through the runtime API; nothing reloaded" >&2
  exit 1
fi
docker compose kill -s USR2 proxy >/dev/null
echo "proxy-reload: server state saved ($lines lines), HAProxy reloaded (SIGUSR2)"
