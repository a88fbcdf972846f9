#!/usr/bin/env bash
# Workflow checks, the same here, in .ci/run and in the workflow's lint job:
#   1. actionlint on .github/workflows/*.yml (syntax, expressions, action inputs, and shellcheck on
#      every `run:` block); any finding fails.
#   2. deploy/tests/test_workflows.py: the workflow only calls repo scripts, pins actions by SHA,
#      gives every job `permissions`, gates publishing, and calls the same scripts as .ci/run.
#
# actionlint runs shellcheck only when it finds it on PATH, so its result would depend on the machine.
# To keep it deterministic this script always runs it with shellcheck: when it is missing it is
# installed from Debian/Ubuntu's archive (root or passwordless sudo; GitHub's runners ship it), and
# when that is impossible the script fails. ACTIONLINT_SHELLCHECK=0 is the explicit opt-out.
# pyflakes (used for `shell: python` steps, of which there are none) is always off, for the same reason.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
deploy/scripts/bootstrap.sh

install_shellcheck() {
  local sudo=()
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo=(sudo -n)
    else
      return 1
    fi
  fi
  command -v apt-get >/dev/null 2>&1 || return 1
  echo "actionlint.sh: installing shellcheck with apt-get" >&2
  local apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -qq -o=Dpkg::Use-Pty=0)
  "${apt[@]}" install -y --no-install-recommends shellcheck >/dev/null 2>&1 \
    || { "${apt[@]}" update >/dev/null && "${apt[@]}" install -y --no-install-recommends shellcheck >/dev/null; }
}

if [ "${ACTIONLINT_SHELLCHECK:-1}" = 0 ]; then
  echo "actionlint.sh: shellcheck integration disabled (ACTIONLINT_SHELLCHECK=0)" >&2
  shellcheck_opt=-shellcheck=
else
  if ! command -v shellcheck >/dev/null 2>&1 && ! install_shellcheck; then
    echo "actionlint.sh: shellcheck is needed (apt-get install shellcheck), or set ACTIONLINT_SHELLCHECK=0" >&2
    exit 1
  fi
  shellcheck_opt=-shellcheck="$(command -v shellcheck)"
fi

shopt -s nullglob
workflows=(.github/workflows/*.yml .github/workflows/*.yaml)
if [ ${#workflows[@]} -eq 0 ]; then
  echo "actionlint.sh: no workflow under .github/workflows" >&2
  exit 1
fi

versions=$(.venv/bin/actionlint -version | head -n1)
if [ "$shellcheck_opt" != -shellcheck= ]; then
  versions="$versions, shellcheck $(shellcheck --version | sed -n 's/^version: //p')"
fi
echo "actionlint.sh: $versions"
.venv/bin/actionlint -no-color -pyflakes= "$shellcheck_opt" "${workflows[@]}"
echo "actionlint: ${#workflows[@]} workflow file(s), no findings"

.venv/bin/pytest -q -p no:cacheprovider deploy/tests/test_workflows.py
