#!/usr/bin/env bash
# Build the Dockerfile's role targets without a Docker daemon (issue #16, first part):
# buildah with the vfs storage driver and chroot isolation, on a Debian bookworm base
# made here with debootstrap that stands in for python:3.11-slim.
#
#   scripts/build-images.sh                      # router and shard (no torch)
#   TARGETS="router shard embedder indexer" TORCH_INDEX_URL=http://127.0.0.1:8765/ \
#       scripts/build-images.sh                  # the torch targets need a torch index
#
# The base image differs from python:3.11-slim: Debian's python3 (3.11.2) in /usr/bin, not
# a python.org build in /usr/local; pip from python3-pip, with PEP 668's marker removed so
# that `pip install` works as in the official image; the host's CA bundle; ~250 MB.
# Prints each target's build time and size. Needs root (apt-get, debootstrap, buildah).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=${TARGETS:-"router shard"}
BASE=${BASE_IMAGE:-localhost/simsearch-python:3.11-bookworm}
TAG=${TAG:-$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)}
WORK=${WORK_DIR:-${TMPDIR:-/tmp}/simsearch-images}
TORCH_INDEX_URL=${TORCH_INDEX_URL:-}  # empty: the Dockerfile's default (the CPU index)

install_tools() {
    local missing=() tool
    for tool in buildah podman debootstrap runc; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    if ((${#missing[@]})); then
        echo "build-images: installing ${missing[*]} from Debian"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    fi
    # overlay mounts are not available inside this kind of machine's own container
    if [ ! -f /etc/containers/storage.conf ]; then
        mkdir -p /etc/containers
        printf '[storage]\ndriver = "vfs"\nrunroot = "/run/containers/storage"\ngraphroot = "/var/lib/containers/storage"\n' \
            >/etc/containers/storage.conf
    fi
}

build_base() {
    if podman image exists "$BASE"; then
        echo "build-images: base $BASE (cached)"
        return
    fi
    local root="$WORK/rootfs"
    rm -rf "$root"
    mkdir -p "$WORK"
    echo "build-images: debootstrap bookworm (minbase + python3) into $root"
    debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates \
        bookworm "$root" >"$WORK/debootstrap.log"
    ln -sf python3 "$root/usr/bin/python"
    ln -sf pip3 "$root/usr/bin/pip"
    rm -f "$root"/usr/lib/python3.*/EXTERNALLY-MANAGED
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin
    tar -C "$root" -c . | podman import --change 'CMD ["python3"]' - "$BASE" >/dev/null
    rm -rf "$root"
}

build_target() {
    local target=$1 image="localhost/simsearch-$1:$TAG" started args=()
    args=(--build-arg "PYTHON_IMAGE=$BASE")
    [ -n "$TORCH_INDEX_URL" ] && args+=(--build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL")
    started=$(date +%s)
    buildah bud --isolation chroot --network host --layers "${args[@]}" \
        --target "$target" -t "$image" . >"$WORK/build-$target.log" 2>&1 || {
        tail -20 "$WORK/build-$target.log"
        echo "build-images: $target failed (log: $WORK/build-$target.log)" >&2
        return 1
    }
    local size
    size=$(podman image inspect --format '{{.Size}}' "$image")
    printf '%-9s %-40s %6d s %6d MB\n' "$target" "$image" "$(($(date +%s) - started))" \
        "$((size / 1000000))"
}

install_tools
mkdir -p "$WORK"
build_base
printf '%-9s %-40s %8s %9s\n' target image time size
for target in $TARGETS; do
    build_target "$target"
done
# To run one, as the chart does (crun cannot run here: cgroups in hybrid mode; runc can):
#   podman --runtime runc run --rm --network host --read-only --user 10001:10001 \
#       --cap-drop ALL --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 IMAGE --version
