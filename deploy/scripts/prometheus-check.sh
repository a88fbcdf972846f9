#!/usr/bin/env bash
# The monitoring profile's configuration, checked by the tools that read it (docs/observability.md):
#   promtool check config   deploy/prometheus/prometheus.yml (compose) and kubernetes.yml
#   promtool check rules    deploy/prometheus/rules/*.yml
#   promtool test rules     deploy/prometheus/tests/*.test.yml (every alert fires on a series that
#                           should fire it and stays silent on one that should not)
#   amtool check-config     deploy/alertmanager/alertmanager.yml
#   deploy/tests/test_monitoring.py: every alert has a runbook line, a firing and a silent unit
#                           test; the profile's services are hardened and loopback-only
# promtool and amtool run inside the images the compose profile uses (--entrypoint), so the
# checks match the versions that load these files; nothing is installed on the host.
# Environment: PROMETHEUS_IMAGE, ALERTMANAGER_IMAGE (the compose file's defaults).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
deploy/scripts/bootstrap.sh
.venv/bin/pytest -q -p no:cacheprovider deploy/tests/test_monitoring.py
prometheus=${PROMETHEUS_IMAGE:-prom/prometheus:v2.53.3}
alertmanager=${ALERTMANAGER_IMAGE:-prom/alertmanager:v0.28.1}

# The same paths as in the containers: /etc/prometheus/{prometheus.yml,rules/,tests/}.
promtool() {
  docker run --rm --network none --user "$(id -u):$(id -g)" \
    -v "$PWD/deploy/prometheus:/etc/prometheus:ro" -w /etc/prometheus \
    --entrypoint promtool "$prometheus" "$@"
}

promtool check config /etc/prometheus/prometheus.yml
promtool check config --syntax-only /etc/prometheus/kubernetes.yml
# Paths relative to deploy/prometheus (the working directory in the container).
mapfile -t rules < <(cd deploy/prometheus && ls rules/*.yml)
mapfile -t tests < <(cd deploy/prometheus && ls tests/*.test.yml)
promtool check rules "${rules[@]}"
promtool test rules "${tests[@]}"
docker run --rm --network none --user "$(id -u):$(id -g)" \
  -v "$PWD/deploy/alertmanager:/etc/alertmanager:ro" \
  --entrypoint amtool "$alertmanager" check-config /etc/alertmanager/alertmanager.yml
echo "prometheus-check: config, rules, ${#tests[@]} rule test file(s) and alertmanager config pass"
