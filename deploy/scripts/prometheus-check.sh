#!/usr/bin/env bash
# The monitoring profile's configuration, checked by the tools that read it (docs/observability.md):
#   promtool check config   deploy/prometheus/prometheus.yml (compose) and kubernetes.yml
#   promtool check rules    deploy/prometheus/rules/*.yml
#   promtool test rules     deploy/prometheus/tests/*.test.yml (every alert fires where it should
#                           and not where it should not; every window, factor, threshold, label
#                           filter and `for` pinned on both sides)
#   rule_mutations.py       edits every rule of every rules file the ways a careless change would
#                           and fails when the tests miss one (docs/observability.md, "The rule
#                           tests are pinned"). RULE_MUTATIONS=report only reports the misses;
#                           RULE_MUTATIONS_FILES="a.yml b.yml" checks those rules files only
#   amtool check-config     deploy/alertmanager/alertmanager.yml with each receiver kind
#                           (render.sh: webhook, slack, pagerduty, email)
#   blackbox_exporter       --config.check of deploy/prometheus/blackbox.yml
#   deploy/tests/test_monitoring.py: every alert has a runbook section, a firing and a silent unit
#                           test; the profile's services are hardened and loopback-only
# promtool, amtool and blackbox_exporter run inside the images the compose profile uses
# (--entrypoint), so the checks match the versions that load these files; nothing is installed on
# the host. Environment: PROMETHEUS_IMAGE, ALERTMANAGER_IMAGE, BLACKBOX_EXPORTER_IMAGE (the compose
# file's defaults).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
deploy/scripts/bootstrap.sh
.venv/bin/pytest -q -p no:cacheprovider deploy/tests/test_monitoring.py
prometheus=${PROMETHEUS_IMAGE:-prom/prometheus:v2.53.3}
alertmanager=${ALERTMANAGER_IMAGE:-prom/alertmanager:v0.28.1}
blackbox=${BLACKBOX_EXPORTER_IMAGE:-prom/blackbox-exporter:v0.26.0}

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
started=$SECONDS
promtool test rules "${tests[@]}"
echo "prometheus-check: promtool test rules took $((SECONDS - started)) s"
mutation_args=(--image "$prometheus")
for f in ${RULE_MUTATIONS_FILES:-}; do mutation_args+=(--only "$f"); done
if ! .venv/bin/python deploy/scripts/rule_mutations.py "${mutation_args[@]}"; then
  [ "${RULE_MUTATIONS:-strict}" = report ] || exit 1
  echo "prometheus-check: the mutants above pass the rule tests (reported: RULE_MUTATIONS=report)"
fi

for kind in webhook slack pagerduty email; do
  docker run --rm --network none --user "$(id -u):$(id -g)" \
    -e ALERTMANAGER_PAGER="$kind" -e ALERTMANAGER_TICKET="$kind" \
    -e ALERT_EMAIL_TO=oncall@example.org -e ALERT_EMAIL_FROM=alertmanager@example.org \
    -e ALERT_EMAIL_SMARTHOST=smtp.example.org:587 \
    -v "$PWD/deploy/alertmanager:/etc/alertmanager:ro" --entrypoint sh "$alertmanager" \
    -c 'sh /etc/alertmanager/render.sh --check /tmp/am.yml && amtool check-config /tmp/am.yml'
done
docker run --rm --network none --user "$(id -u):$(id -g)" \
  -v "$PWD/deploy/prometheus/blackbox.yml:/etc/blackbox_exporter/config.yml:ro" \
  "$blackbox" --config.file=/etc/blackbox_exporter/config.yml --config.check
echo "prometheus-check: config, rules, ${#tests[@]} rule test file(s), their mutations, 4 alertmanager configs and the blackbox modules pass"
