# syntax=docker/dockerfile:1
# simsearch images: one target per role, all from this one file and one build context.
#
#   docker build --target router   -t simsearch-router .
#   docker build --target shard    -t simsearch-shard .
#   docker build --target embedder -t simsearch-embedder .        # CPU torch (the default)
#   docker build --target indexer  -t simsearch-indexer .
#   docker build --target embedder -t simsearch-embedder:cu128 \
#       --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
#
# Router and shard images carry no torch. Every image runs `simsearch` as uid/gid 10001,
# reads its settings from SIMSEARCH_* variables and listens on 0.0.0.0 (router :8000,
# embedder :8001, shard :8002). Kubernetes probes are in the chart (GET /health/live,
# /health/ready; the router's GET /health), so there is no HEALTHCHECK here.

ARG PYTHON_IMAGE=python:3.11-slim

# ---- builder: the project's wheel (pure Python; nothing here reaches a runtime layer) ----
FROM ${PYTHON_IMAGE} AS builder
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY services/ services/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

# ---- runtime: the slim base every role shares ----
FROM ${PYTHON_IMAGE} AS runtime
# The release these images carry: the chart's appVersion (tests/unit/deploy/test_dockerfile.py
# keeps the three equal; scripts/build-images.sh passes pyproject's version).
ARG SIMSEARCH_VERSION=0.1.0
LABEL org.opencontainers.image.title="simsearch" \
      org.opencontainers.image.description="Sharded image similarity search: router, shard, embedder, indexer" \
      org.opencontainers.image.source="https://github.com/simsearch/simsearch" \
      org.opencontainers.image.version="${SIMSEARCH_VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    SIMSEARCH_HOST=0.0.0.0
# Every wheel the roles need (numpy, faiss-cpu, h5py, pillow, torch, uvloop…) bundles its
# native libraries, so no apt packages are installed.
RUN groupadd --system --gid 10001 simsearch \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --create-home \
        --shell /usr/sbin/nologin simsearch
WORKDIR /app
ENTRYPOINT ["simsearch"]

# ---- router and shard: each only its own extra, no torch ----
# The wheel is copied in, not bind-mounted from the builder (`RUN --mount=…,from=builder`):
# buildah with --layers finds no directory to mount when the builder stage comes from its
# cache (found by the first real build, #16). The copied wheel (~0.3 MB) stays in a layer.
# The CLI imports a role's code only when that role runs (cli.py), so the router image has
# no faiss or h5py (tests/integration/router/test_venv.py starts `serve router` in a venv
# with only this extra).
FROM runtime AS router-deps
COPY --from=builder /dist /dist
RUN pip install "$(find /dist -name 'simsearch-*.whl')[router]" && rm -rf /dist

FROM runtime AS shard-deps
COPY --from=builder /dist /dist
RUN pip install "$(find /dist -name 'simsearch-*.whl')[shard]" && rm -rf /dist

# ---- heavy: torch (CPU by default) plus the embedder and indexer dependencies ----
FROM runtime AS heavy
# CPU wheels by default; a CUDA index (e.g. https://download.pytorch.org/whl/cu128) for GPUs.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# Or a directory of wheels instead of any index: the URL of its listing, read with pip's
# --find-links and --no-index (scripts/build-images.sh serves this machine's pinned wheels
# on 127.0.0.1 this way, for builds with no route to the torch index).
ARG TORCH_WHEELS_URL=""
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
# torch first, from its own source only; the project's `torch>=2.4` is then already met.
# (DL3013 reads the "$@" of source options as an unpinned package; both packages are pinned.)
# hadolint ignore=DL3013
RUN if [ -n "${TORCH_WHEELS_URL}" ]; then set -- --no-index --find-links "${TORCH_WHEELS_URL}"; \
    else set -- --index-url "${TORCH_INDEX_URL}"; fi \
    && pip install "$@" "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"
COPY --from=builder /dist /dist
RUN pip install "$(find /dist -name 'simsearch-*.whl')[embedder,indexer]" && rm -rf /dist

# ---- the role targets ----
FROM router-deps AS router
USER 10001:10001
EXPOSE 8000
CMD ["serve", "router"]

FROM shard-deps AS shard
USER 10001:10001
EXPOSE 8002
CMD ["serve", "shard"]

FROM heavy AS embedder
USER 10001:10001
EXPOSE 8001
CMD ["serve", "embedder"]

# A batch job. `index build` needs --images and --store: pass them after the image name
# (docker run … simsearch-indexer index build --images … --store …); a Kubernetes Job's
# `args` replace this CMD in the same way, so they start with `index build` too.
FROM heavy AS indexer
USER 10001:10001
CMD ["index", "build"]
