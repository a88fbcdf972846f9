#!/usr/bin/env bash
# Release one overlay in the only safe order: migrate the schema, then roll out the new pods.
#   deploy/k8s/release.sh staging|production [--skip-migration]
# 1. render the overlay once (the same bytes are applied in every step);
# 2. delete the previous migration Job (its pod template is immutable), apply everything except
#    the API objects (namespace, config, secrets, network policies, the new Job) and wait until
#    the Job is Complete; a Failed Job or a timeout stops the release with its logs;
# 3. apply the rest and wait for the Deployment's rollout (maxUnavailable 0: old pods serve
#    until new ones are ready).
# --skip-migration is for rollbacks to an older image (its `alembic upgrade head` does not know
# the newer revision): steps 1 and 3 only. Needs kubectl >= 1.27 and a kubeconfig context.
# Env: KUBECTL (default: kubectl on PATH, else .venv/bin/kubectl), MIGRATION_TIMEOUT (600),
# ROLLOUT_TIMEOUT (600s).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"

usage() {
  echo "usage: deploy/k8s/release.sh staging|production [--skip-migration]" >&2
  exit 2
}
[ $# -ge 1 ] || usage
overlay=$1
skip_migration=false
if [ $# -ge 2 ]; then
  [ "$2" = "--skip-migration" ] || usage
  skip_migration=true
fi
dir=deploy/k8s/overlays/$overlay
[ -f "$dir/kustomization.yaml" ] || usage

kubectl=${KUBECTL:-$(command -v kubectl || echo .venv/bin/kubectl)}
migration_timeout=${MIGRATION_TIMEOUT:-600}
rollout_timeout=${ROLLOUT_TIMEOUT:-600s}

rendered=$(mktemp)
trap 'rm -f "$rendered"' EXIT
"$kubectl" kustomize "$dir" >"$rendered"
namespace=$(sed -n 's/^  namespace: //p' "$rendered" | sort -u)
if [ -z "$namespace" ] || [ "$(printf '%s\n' "$namespace" | wc -l)" -ne 1 ]; then
  echo "release: expected exactly one namespace in $dir, got: ${namespace:-none}" >&2
  exit 1
fi

job_logs() {
  "$kubectl" -n "$namespace" describe job heroes-migrate >&2 || true
  "$kubectl" -n "$namespace" logs job/heroes-migrate --all-containers --tail=200 >&2 || true
}

if [ "$skip_migration" = false ]; then
  echo "release: $overlay: migrating (namespace $namespace)"
  "$kubectl" -n "$namespace" delete job heroes-migrate --ignore-not-found --wait=true
  "$kubectl" apply -f "$rendered" -l 'app.kubernetes.io/component!=api'
  deadline=$((SECONDS + migration_timeout))
  while :; do
    conditions=$("$kubectl" -n "$namespace" get job heroes-migrate \
      -o jsonpath='{range .status.conditions[?(@.status=="True")]}{.type}{" "}{end}')
    case " $conditions " in
      *" Complete "*) break ;;
      *" Failed "*)
        echo "release: migration Job failed; the Deployment was not touched" >&2
        job_logs
        exit 1
        ;;
    esac
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "release: migration Job not complete after ${migration_timeout}s" >&2
      job_logs
      exit 1
    fi
    sleep 2
  done
  echo "release: $overlay: migration complete"
fi

echo "release: $overlay: rolling out"
"$kubectl" apply -f "$rendered" -l 'app.kubernetes.io/component!=migration'
"$kubectl" -n "$namespace" rollout status deployment/heroes --timeout="$rollout_timeout"
echo "release: $overlay: done"
