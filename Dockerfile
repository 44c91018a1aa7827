# The model-exporter image: one image, three roles, chosen by the command (see
# docker-compose.monitoring.yml):
#   model-exporter serve    --config examples/fare/monitor.yml --port 8000   (the default below)
#   model-exporter receiver --port 9099 --token-file /run/secrets/receiver_token
#   model-exporter demo     --target http://exporter:8000 --scenario all
#
# Build: docker build -t model-exporter:0.1.0 .

# Stage 1 builds the package's wheel; the image installs that wheel and no source tree, so it runs
# the package exactly as a wheel install lays it out (a file the wheel misses is missing here too).
# The build reads pyproject.toml, README.md (the long description) and LICENSE (license-files).
FROM python:3.11.9-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY exporter ./exporter
RUN pip wheel --no-deps --wheel-dir /wheels .

# Stage 2, the image: the same pinned base, the wheel and its dependencies, the examples.
FROM python:3.11.9-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# The wheel alone, no extras (the runtime dependencies come from its metadata). It is installed
# before the examples are copied, so editing the examples does not reinstall the dependencies.
COPY --from=builder /wheels/ /tmp/wheels/
RUN pip install /tmp/wheels/model_exporter-*.whl && rm -rf /tmp/wheels

# The examples (demo model, reference profile, monitor.yml) are data for `serve` and `demo`.
# PYTHONPATH makes their modules importable by a config's `package.module:callable` model path.
WORKDIR /app
COPY examples ./examples
ENV PYTHONPATH=/app

# A fixed non-root uid, so volume and secret ownership is predictable; /data holds the outcome
# store and the receiver's alert log and is a volume in compose.
RUN groupadd --system --gid 10001 exporter \
    && useradd --system --uid 10001 --gid exporter --no-create-home --home-dir /app \
       --shell /usr/sbin/nologin exporter \
    && mkdir /data \
    && chown exporter:exporter /data
USER 10001:10001
VOLUME ["/data"]

# 8000: the exporter service (/predict /feedback /metrics /healthz /readyz);
# 9099: the Alertmanager webhook receiver (/alerts /healthz /metrics).
EXPOSE 8000 9099

# Checks the default role (serve on 8000). docker-compose.monitoring.yml gives the receiver and the
# traffic generator their own checks. The slim image has no curl; Python's urllib is enough, and
# it exits non-zero on a refused connection or a non-2xx answer.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

ENTRYPOINT ["model-exporter"]
CMD ["serve", "--config", "examples/fare/monitor.yml", "--host", "0.0.0.0", "--port", "8000", "--data-dir", "/data"]
