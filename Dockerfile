# syntax=docker/dockerfile:1
# The streamrec image: one package runs the worker (`streamrec worker`), the lookup API
# (`streamrec serve`) and the retrain job (`streamrec retrain`); docker-compose.yml picks one
# per service.
#
# Two stages because rectools-lightfm ships no wheel on PyPI: the build stage (the full
# python:3.11 image, which has gcc and the libc headers) compiles it and turns the project and
# every dependency into wheels; the runtime stage (python:3.11-slim, no compiler) installs only
# those wheels, from /wheels and never from PyPI.
# No Docker engine at hand? deploy/check_image.sh runs the same steps in two plain venvs.

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION} AS build
WORKDIR /src
# deploy/check_image.sh copies exactly these paths: keep the two in step.
COPY pyproject.toml README.md ./
COPY streamrec ./streamrec
COPY stream_app ./stream_app
COPY producers ./producers
COPY consumers ./consumers
# A wheel per distribution: compiled here where PyPI has none (LightFM, with OpenMP),
# taken as-is where it has a manylinux wheel.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:${PYTHON_VERSION}-slim AS runtime
# LightFM's extension is built with -fopenmp and links libgomp.so.1, which slim lacks.
# Unpinned on purpose: the Debian release of the base image fixes its version.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 streamrec \
 && useradd --system --uid 10001 --gid streamrec --home-dir /var/lib/streamrec \
      --no-create-home --shell /usr/sbin/nologin streamrec \
 && install -d -o streamrec -g streamrec -m 0750 /var/lib/streamrec
# The wheels are bind-mounted from the build stage, so they never become a layer; naming the
# project's own wheel file pins the version that stage built.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --only-binary=:all: --find-links /wheels \
      /wheels/streamrec-*.whl

# HEALTHCHECK_URL: the lookup's /healthz by default; compose points the worker at its
# metrics port (9464), which serves /metrics, /healthz and /readyz.
ENV STREAMREC_STATE_DIR=/var/lib/streamrec \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HEALTHCHECK_URL=http://127.0.0.1:8000/healthz
# Numeric, so that Kubernetes' runAsNonRoot can check it without /etc/passwd.
USER 10001:10001
WORKDIR /var/lib/streamrec
VOLUME ["/var/lib/streamrec"]
# 8000: the lookup API (`streamrec serve`); 9464: the worker's Prometheus metrics.
EXPOSE 8000 9464
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['HEALTHCHECK_URL'], timeout=4)"]
ENTRYPOINT ["streamrec"]
CMD ["--help"]
