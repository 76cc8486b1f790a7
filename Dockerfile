# Two images from one file; the container's command picks the service (python -m services.<name>).
#
#   runtime  the default (the last stage): the bridge only, the services ingest, reconcile and publish and
#            the audience-bridge CLI. What an ops team builds and deploys: `docker build -t audience-bridge .`
#   dev      `docker build --target dev -t audience-bridge:dev .`: the bridge and its test rig: ecsim (the
#            local platform), the synthetic population (ecsim's and the demo's) and the generators of the
#            schemas and the settings table. Compose and deploy/k8s run ecsim from it.
#
# tests/unit/test_runtime_image.py reads this file: no module of the runtime image imports a left-out one.

FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
# The third-party dependencies first, in a layer both images share (rebuilt only when they change).
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
    && pip install -c constraints.txt -r /tmp/requirements.txt && rm /tmp/requirements.txt
# /data/dropzones belongs to the service user, so a named volume mounted there starts out writable.
RUN useradd --system --uid 10001 bridge && mkdir -p /data/dropzones && chown bridge /data/dropzones
COPY README.md ./
# Listen on all interfaces inside the container; ports are published by compose/Kubernetes.
ENV HTTP_HOST=0.0.0.0
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD python -c "import os,urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('HTTP_PORT','8080'), timeout=2)" || exit 1
ENTRYPOINT ["python", "-m"]
CMD ["services.reconcile"]

# The bridge's code: the repository's less DEV_ONLY, the test rig the runtime image leaves out.
FROM base AS bridge-code
ARG DEV_ONLY="services/ecsim shared/population.py shared/schema_export.py shared/asyncapi_export.py shared/asyncapi_catalog.py services/registry.py services/settings_doc.py"
COPY shared ./shared
COPY services ./services
RUN rm -r $DEV_ONLY

# dev: the bridge and its test rig (ecsim, the demo's population, the generators).
FROM base AS dev
COPY shared ./shared
COPY services ./services
COPY schemas ./schemas
RUN pip install -c constraints.txt . && rm -rf build ./*.egg-info
USER bridge

# runtime: the bridge only. The last stage, hence what `docker build .` builds.
FROM base AS runtime
COPY --from=bridge-code /app/shared ./shared
COPY --from=bridge-code /app/services ./services
COPY schemas ./schemas
RUN pip install -c constraints.txt . && rm -rf build ./*.egg-info
USER bridge
