# qsmprep BIDS-App container.
#   docker run --rm -v /path/bids:/data:ro -v /path/out:/out qsmprep:latest /data /out participant
# Build with `make docker` (docker, or podman where no daemon runs; see docs/container.md).
FROM python:3.11-slim

# The Debian system CA bundle; lets pip work behind TLS-intercepting proxies whose CA is
# installed in the base image. Not persisted in the image.
ARG PIP_CERT=/etc/ssl/certs/ca-certificates.crt

LABEL org.opencontainers.image.title="qsmprep" \
      org.opencontainers.image.description="BIDS-App for longitudinal quantitative susceptibility mapping (QSM) of deep gray matter" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV VIRTUAL_ENV=/opt/qsmprep \
    PATH=/opt/qsmprep/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# 1. Dependencies, pinned by the same constraints file `make install` uses. Only the metadata is
#    copied here, so this (large) layer is rebuilt only when dependencies or pins change.
RUN python3 -m venv /opt/qsmprep
COPY requirements/constraints.txt /src/requirements/constraints.txt
COPY setup.cfg pyproject.toml README.md /src/
COPY qsmprep/__init__.py /src/qsmprep/__init__.py
RUN pip install -c /src/requirements/constraints.txt /src \
    && pip uninstall -y qsmprep

# 2. qsmprep itself (no dependency resolution: everything is in place and pinned).
COPY qsmprep /src/qsmprep
COPY scripts/make_dgm_atlas.py /src/scripts/make_dgm_atlas.py
RUN pip install --no-deps /src \
    && rm -rf /src/build /src/*.egg-info

# 3. Non-root user; caches that libraries want to write live in a world-writable home so that
#    `docker run -u $(id -u):$(id -g)` works too.
#    NUMBA_CPU_NAME=generic: numba reuses a cached kernel only on the CPU it was compiled for;
#    generic x86-64 code lets the cache filled at build time (step 4) serve every host
#    (benchmarks/numba_cpu.py measures what it costs).
ENV QSMPREP_CACHE_DIR=/opt/qsmprep-cache \
    HOME=/home/qsmprep \
    MPLCONFIGDIR=/home/qsmprep/.config/matplotlib \
    NUMBA_CACHE_DIR=/home/qsmprep/.cache/numba \
    NUMBA_CPU_NAME=generic \
    NIPYPE_NO_ET=1
RUN useradd --create-home --uid 1000 --shell /bin/bash qsmprep \
    && mkdir -p "$MPLCONFIGDIR" "$NUMBA_CACHE_DIR" "$QSMPREP_CACHE_DIR" \
    && chmod -R a+rwX /home/qsmprep

# 4. Default DGM atlas derived at build time from the pinned atlas wheels: no download and no
#    derivation at run time; the cache is read-only for the run user. Every source of the default
#    atlas allows redistribution (docs/licences.md); the other atlases inside those wheels (among
#    them Harvard-Oxford, FSL licence: no redistribution) are deleted from the image.
#    The numba kernels are compiled into NUMBA_CACHE_DIR here too (qsmprep.qsm.jit_warmup), so a
#    first run does not spend ~8 s compiling them; the cache stays writable for other CPUs' use.
RUN python /src/scripts/make_dgm_atlas.py --prune-unused-sources \
    && chmod -R a+rX "$QSMPREP_CACHE_DIR" \
    && rm -rf /src \
    && python -m qsmprep.qsm.jit_warmup \
    && chmod -R a+rwX "$NUMBA_CACHE_DIR" \
    && qsmprep --version

USER qsmprep
WORKDIR /tmp
ENTRYPOINT ["qsmprep"]

# Build arguments and labels that change with every build come last: an ARG whose value changes
# invalidates every later RUN layer.
ARG VERSION=0.1.0
ARG VCS_REF=unknown
ARG BUILD_DATE=unknown
LABEL org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.created="${BUILD_DATE}" \
      org.opencontainers.image.source="https://github.com/qsmprep/qsmprep"
# Recorded as GeneratedBy[].Container in the outputs' dataset_description.json.
ENV QSMPREP_CONTAINER="qsmprep:${VERSION}" \
    QSMPREP_CONTAINER_TYPE=docker
