# syntax=docker/dockerfile:1
# PixCrawler exporter: docker build -t pixcrawler-exporter .
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

# --- build: the wheel, and wheels of its dependencies, so the final stage needs no compiler ----
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY pixcrawler_exporter ./pixcrawler_exporter
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels .

# --- run: the installed wheel only; no source tree, no build tools ---------------------------
FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="pixcrawler-exporter" \
      org.opencontainers.image.description="Prometheus exporter for PixCrawler: container-correct resources, temp storage and chunk capacity" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.base.name="docker.io/library/python:3.12-slim-bookworm"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The wheels are bind-mounted from the build stage, so they never become a layer of the image.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m pip install --no-cache-dir --no-index --find-links=/wheels \
        /wheels/pixcrawler_exporter-*.whl \
    && useradd --system --uid 65532 --user-group --no-create-home --shell /usr/sbin/nologin exporter
# Numeric, so Kubernetes' runAsNonRoot can tell it is not root without a passwd lookup.
USER 65532:65532
EXPOSE 8395
# Reads PIXCRAWLER_LISTEN and PIXCRAWLER_WEB_CONFIG_FILE like the exporter; with --listen given
# as an argument instead, override this with the URL: python -m pixcrawler_exporter.web.healthcheck URL
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-m", "pixcrawler_exporter.web.healthcheck"]
ENTRYPOINT ["pixcrawler-exporter"]
