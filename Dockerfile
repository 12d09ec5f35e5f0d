# PixCrawler exporter: docker build -t pixcrawler-exporter .
# Any Debian-based Python >= 3.11 image with venv works as the base, Debian's own included
# (python3, python3-venv and ca-certificates installed): --build-arg PYTHON_IMAGE=...
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

# --- build: the exporter and its dependencies installed into a virtual environment -----------
# A venv, not the system's site-packages: Debian's python3 refuses those installs (PEP 668),
# and the run stage copies this one directory, without pip's cache or the source tree.
FROM ${PYTHON_IMAGE} AS build
ARG VERSION=0.1.0
WORKDIR /src
COPY pyproject.toml README.md ./
COPY pixcrawler_exporter ./pixcrawler_exporter
# The version check comes first (the package's __init__ imports nothing), so a stale VERSION
# fails in a second rather than after pip.
RUN python3 -c "import sys, pixcrawler_exporter as p; \
sys.exit(None if p.__version__ == '${VERSION}' else \
f'VERSION=${VERSION} but pixcrawler_exporter.__version__ is {p.__version__}')" \
    && python3 -m venv /opt/venv \
    && /opt/venv/bin/python -m pip install --no-cache-dir '.[celery]'

# --- run: the venv only; no source tree, no build tools --------------------------------------
FROM ${PYTHON_IMAGE}
ARG PYTHON_IMAGE
# Checked against pixcrawler_exporter.__version__ by the build stage: a stale one fails the build.
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="pixcrawler-exporter" \
      org.opencontainers.image.description="Prometheus exporter for PixCrawler: container-correct resources, temp storage and chunk capacity" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/venv /opt/venv
# A named group with the GID the process runs as, so `id` and file listings show a name.
RUN groupadd --system --gid 65532 exporter \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin exporter
# Numeric, so Kubernetes' runAsNonRoot can tell it is not root without a passwd lookup.
USER 65532:65532
EXPOSE 8395
# Finds the exporter's process and probes the address and scheme it serves with, from its own
# arguments and the environment; only that process's answer counts (README, Docker).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["pixcrawler-exporter", "healthcheck"]
ENTRYPOINT ["pixcrawler-exporter"]
