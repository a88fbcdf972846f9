# heroes: production image (gunicorn + uvicorn workers). Build: `docker compose build` (BuildKit)
# or `docker build .`; both work, the Dockerfile uses no BuildKit-only syntax.
#
# Base images are build args: tags by default; a production build pins a digest, e.g.
#   --build-arg PYTHON_IMAGE=python:3.13-slim@sha256:<digest>
ARG PYTHON_IMAGE=python:3.13-slim

# --- builder: the hash-pinned runtime lock + the project wheel into /opt/venv ------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src

# The runtime venv gets no pip (smaller, nothing to install packages with at run time): the
# base image's pip installs into it through --python. The build backend lives in its own venv,
# which never reaches the runtime stage.
RUN python -m venv --without-pip /opt/venv \
    && python -m venv /opt/build

# Dependencies first: this layer is reused until a lock file changes. Wheels only, every file
# checked against the lock's hashes, no dependency resolution (the lock is complete).
COPY requirements.lock requirements-build.lock ./
RUN python -m pip --python /opt/venv/bin/python install --no-cache-dir \
        --require-hashes --no-deps --only-binary=:all: --no-compile -r requirements.lock \
    && /opt/build/bin/pip install --no-cache-dir \
        --require-hashes --no-deps --only-binary=:all: -r requirements-build.lock

COPY pyproject.toml README.md ./
COPY backend/heroes backend/heroes
RUN /opt/build/bin/pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /tmp/wheels . \
    && python -m pip --python /opt/venv/bin/python install --no-cache-dir \
        --no-deps --no-index --no-compile /tmp/wheels/heroes-*.whl \
    && python -m compileall -q -j 0 --invalidation-mode unchecked-hash /opt/venv/lib

# --- runtime ---------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ARG VERSION=0.0.0+local
ARG REVISION=unknown
ARG SOURCE=unknown
LABEL org.opencontainers.image.title="heroes" \
      org.opencontainers.image.description="The FastAPI SQL tutorial's Hero API, production-shaped" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}"

# Fixed IDs so volume ownership and Kubernetes runAsUser/runAsNonRoot checks are predictable.
RUN groupadd --gid 10001 heroes \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin --no-log-init heroes

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONFAULTHANDLER=1 \
    PORT=8000 \
    PROMETHEUS_MULTIPROC_DIR=/dev/shm/heroes-metrics

# Owned by root, read-only for the app user.
COPY --from=builder /opt/venv /opt/venv
COPY deploy/gunicorn.conf.py /app/deploy/gunicorn.conf.py
WORKDIR /app

USER 10001:10001
EXPOSE 8000

# Liveness only (the process answers); readiness (database, schema) is the orchestrator's probe.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as r; r.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8000') + '/health/live', timeout=2)"]

# Last, so a new revision reuses every layer above: /health/live reports these (heroes.config).
ENV BUILD_VERSION=${VERSION} \
    BUILD_REVISION=${REVISION}

# Exec form: gunicorn is PID 1 and receives SIGTERM itself (it also reaps orphans).
CMD ["gunicorn", "-c", "/app/deploy/gunicorn.conf.py"]
