# Sourced by the container stages (compose-smoke.sh, drills.sh): repo root as the working
# directory, a Docker engine (the container lab where none answers), the venv.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
cd "$root"
export COMPOSE_BAKE=false  # compose builds with its own BuildKit client: no buildx needed
if ! docker info >/dev/null 2>&1; then
  ../shared/container-lab/setup
fi
deploy/scripts/bootstrap.sh
