#!/bin/sh
# Alertmanager's configuration from the routes file and the receivers the operator picked:
#   ALERTMANAGER_PAGER, ALERTMANAGER_TICKET  webhook (default) | slack | pagerduty | email
# each receiver reading its URL or key from its secret file (/run/secrets/alertmanager_pager,
# _ticket, _heartbeat). Written to the data volume, then Alertmanager starts on it (a SIGHUP
# reloads that file: run this again to change receivers). POSIX sh: busybox in the official
# image. Usage: render.sh [--check OUT] (write OUT and exit; deploy/scripts/prometheus-check.sh).
set -eu
dir=/etc/alertmanager
out=/alertmanager/alertmanager.yml
if [ "${1:-}" = "--check" ]; then out=$2; fi
pager=${ALERTMANAGER_PAGER:-webhook}
ticket=${ALERTMANAGER_TICKET:-webhook}
for kind in "$pager" "$ticket"; do
  case $kind in webhook | slack | pagerduty | email) ;; *)
    echo "render.sh: unknown receiver kind '$kind' (webhook, slack, pagerduty, email)" >&2
    exit 2
    ;;
  esac
done
# Only the e-mail receivers have values from the environment (addresses, not secrets).
cat "$dir/alertmanager.yml" "$dir/receivers/pager-$pager.yml" "$dir/receivers/ticket-$ticket.yml" \
  "$dir/receivers/heartbeat-webhook.yml" \
  | sed -e "s|\${ALERT_EMAIL_TO}|${ALERT_EMAIL_TO:-}|g" \
    -e "s|\${ALERT_EMAIL_FROM}|${ALERT_EMAIL_FROM:-}|g" \
    -e "s|\${ALERT_EMAIL_SMARTHOST}|${ALERT_EMAIL_SMARTHOST:-}|g" >"$out.tmp"
mv "$out.tmp" "$out"
if [ "${1:-}" = "--check" ]; then exit 0; fi
exec alertmanager --config.file="$out" "$@"
