#!/usr/bin/env bash
# Renders every Kubernetes overlay with `kubectl kustomize` and validates each rendered object
# against the Kubernetes OpenAPI schemas of named versions with kubernetes-validate --strict
# (unknown fields are errors). Offline: the schemas ship inside the kubernetes-validate wheel.
# A schema that cannot be found (an unknown kind or apiVersion) fails the run too; so does a
# version the installed kubernetes-validate does not ship (it would silently fall back).
# Env: K8S_VERSIONS (default "1.31 1.34": the oldest supported cluster — the native preStop
# sleep handler is on by default from 1.30 — and a current one), K8S_RENDER_DIR (keep the
# rendered YAML there instead of a temporary directory).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
deploy/scripts/bootstrap.sh

versions=${K8S_VERSIONS:-1.31 1.34}
overlays=(staging production)

schemas=$(.venv/bin/python -c 'import kubernetes_validate.utils as u; print(" ".join(sorted(set(u.all_versions()))))')
for version in $versions; do
  case " $schemas " in
    *" $version.0 "*) ;;
    *)
      echo "k8s-validate: kubernetes-validate $(.venv/bin/kubernetes-validate --version)" \
        "ships no schema for $version (it has: $schemas)" >&2
      exit 1
      ;;
  esac
done

if [ -n "${K8S_RENDER_DIR:-}" ]; then
  out=$K8S_RENDER_DIR
  mkdir -p "$out"
else
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
fi

kversions=()
for version in $versions; do
  kversions+=(-k "$version")
done

status=0
total=0
for overlay in "${overlays[@]}"; do
  rendered=$out/$overlay.yaml
  .venv/bin/kubectl kustomize "deploy/k8s/overlays/$overlay" >"$rendered"
  objects=$(grep -c '^kind: ' "$rendered" || true)
  report=$out/$overlay.report
  ok=true
  rc=0
  .venv/bin/kubernetes-validate --strict "${kversions[@]}" "$rendered" >"$report" 2>&1 || rc=$?
  for version in $versions; do
    passed=$(grep -c "^INFO .* passed for resource .* against version $version\$" "$report" || true)
    if [ "$passed" -ne "$objects" ]; then
      echo "k8s-validate: $overlay: $passed of $objects objects passed against $version" >&2
      ok=false
    fi
  done
  if [ "$rc" -ne 0 ] || grep -qE '^(ERROR|WARN|FATAL)' "$report"; then
    grep -E '^(ERROR|WARN|FATAL)' "$report" >&2 || cat "$report" >&2
    ok=false
  fi
  [ "$ok" = true ] || status=1
  kinds=$(sed -n 's/^kind: //p' "$rendered" | sort | uniq -c | awk '{printf "%s%s x%s", sep, $2, $1; sep=", "}')
  echo "k8s-validate: $overlay: $objects objects ($kinds) vs Kubernetes $versions (strict): $([ "$ok" = true ] && echo ok || echo FAILED)"
  total=$((total + objects))
done

if [ "$status" -ne 0 ]; then
  echo "k8s-validate: FAILED" >&2
  exit 1
fi
echo "k8s-validate: $total objects in ${#overlays[@]} overlays valid against Kubernetes $versions" \
  "(kubernetes-validate $(.venv/bin/kubernetes-validate --version), strict)"

# The posture the manifests must keep (security context, probes, grace period, budget).
.venv/bin/pytest -q -p no:cacheprovider deploy/tests/test_k8s_manifests.py
