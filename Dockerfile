# One image for every service; the container's command picks the service (python -m services.<name>).
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY shared ./shared
COPY services ./services
COPY schemas ./schemas
# /data/dropzones belongs to the service user, so a named volume mounted there starts out writable.
RUN pip install -c constraints.txt . && useradd --system --uid 10001 bridge \
    && mkdir -p /data/dropzones && chown bridge /data/dropzones
USER bridge
# Listen on all interfaces inside the container; ports are published by compose/Kubernetes.
ENV HTTP_HOST=0.0.0.0
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD python -c "import os,urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('HTTP_PORT','8080'), timeout=2)" || exit 1
ENTRYPOINT ["python", "-m"]
CMD ["services.reconcile"]
