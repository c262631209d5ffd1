# syntax=docker/dockerfile:1
# The inferwatch image: `inferwatch run` as a non-root user on a slim Python base.
# Build:  docker build -t inferwatch:0.1.0 .
# Run:    docker run --rm -v $PWD/config.yaml:/etc/inferwatch/config.yaml:ro inferwatch:0.1.0
# Other commands: docker run --rm --entrypoint inferwatch inferwatch:0.1.0 check-config --config ...

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: install the package and its dependencies into a virtualenv ----------
# Every dependency ships binary wheels for this platform, so no compiler is needed
# even here; the final stage gets only the finished virtualenv.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/inferwatch
WORKDIR /src
COPY pyproject.toml README.md ./
COPY monitor/ monitor/
COPY detectors/ detectors/
COPY alerts/ alerts/
# the confluent extra: librdkafka, for kafka.client: confluent-kafka
RUN /opt/inferwatch/bin/pip install --no-compile ".[confluent]" \
 && /opt/inferwatch/bin/python -m compileall -q -j 0 /opt/inferwatch/lib

# --- runtime: the virtualenv, a non-root user, nothing else ----------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="inferwatch" \
      org.opencontainers.image.description="Watch ML models in production through their inference logs" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 inferwatch \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/inferwatch \
      --no-create-home --shell /usr/sbin/nologin inferwatch \
 && mkdir -p /var/lib/inferwatch /etc/inferwatch \
 && chown 10001:10001 /var/lib/inferwatch
COPY --from=build /opt/inferwatch /opt/inferwatch
# Bytecode is compiled at build time; the root filesystem may be read-only.
ENV PATH=/opt/inferwatch/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/var/lib/inferwatch
WORKDIR /var/lib/inferwatch
USER 10001:10001
# /metrics, /healthz, /readyz (config http.port)
EXPOSE 9108
ENTRYPOINT ["inferwatch", "run"]
CMD ["--config", "/etc/inferwatch/config.yaml"]
