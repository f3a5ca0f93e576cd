#!/usr/bin/env bash
# Build the Dockerfile's role targets without a Docker daemon (issue #16, first part):
# buildah with the vfs storage driver and chroot isolation, on a Debian bookworm base
# made here with debootstrap that stands in for python:3.11-slim.
#
#   scripts/build-images.sh                      # router and shard (no torch)
#   TARGETS="router shard embedder indexer" scripts/build-images.sh
#                                                # torch from the CPU index (the default)
#   TARGETS="embedder indexer" TORCH_WHEELS=/tmp/torch-wheels scripts/build-images.sh
#                                                # torch from a wheel directory, filled first
#                                                # by this machine's pip if it has no torch
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
TORCH_WHEELS=${TORCH_WHEELS:-}        # a wheel directory instead of an index (see above)
TORCH_WHEELS_URL=""
SERVER_PID=""
trap '[ -z "$SERVER_PID" ] || kill "$SERVER_PID" 2>/dev/null' EXIT

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

# What debian:bookworm-slim (under python:3.11-slim) leaves out: documentation, manual pages
# and translations, now and for any later apt-get install (dpkg's path-exclude), and the
# downloaded packages debootstrap keeps (~100 MB of the first, unslimmed base's 247 MB).
slim_rootfs() {
    local root=$1
    mkdir -p "$root/etc/dpkg/dpkg.cfg.d"
    printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
        'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' \
        'path-exclude /usr/share/locale/*' 'path-include /usr/share/locale/locale.alias' \
        >"$root/etc/dpkg/dpkg.cfg.d/simsearch-slim"
    find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
    find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
    rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/lib/apt/lists/* \
        "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb "$root"/var/log/*.log
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
    slim_rootfs "$root"
    tar -C "$root" -c . | podman import --change 'CMD ["python3"]' - "$BASE" >/dev/null
    rm -rf "$root"
}

# The pins the Dockerfile installs (its ARG defaults), so that a wheel directory holds them.
dockerfile_arg() { sed -n "s/^ARG $1=\(.*\)/\1/p" Dockerfile | head -1; }

# Serve $TORCH_WHEELS on a loopback port for the torch targets' RUN (the build shares the host
# network): pip reads the directory listing with --find-links and no index.
serve_torch_wheels() {
    local dir=$TORCH_WHEELS port
    mkdir -p "$dir"
    if ! compgen -G "$dir/torch-$(dockerfile_arg TORCH_VERSION)*.whl" >/dev/null; then
        echo "build-images: pip download torch and torchvision (and their dependencies) into $dir"
        # resolved for this host (pip's --platform does not widen manylinux tags), so the
        # host's Python must be the image's: 3.11 on x86_64 Linux
        python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || {
            echo "build-images: TORCH_WHEELS needs python3 3.11 here to fill $dir" >&2
            return 1
        }
        python3 -m pip download --quiet --dest "$dir" --only-binary=:all: \
            "torch==$(dockerfile_arg TORCH_VERSION)" \
            "torchvision==$(dockerfile_arg TORCHVISION_VERSION)"
    fi
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    python3 -m http.server --bind 127.0.0.1 --directory "$dir" "$port" >"$WORK/wheels-http.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 50); do
        python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/', timeout=1)" \
            2>/dev/null && break
        sleep 0.1
    done
    TORCH_WHEELS_URL="http://127.0.0.1:$port/"
}

build_target() {
    local target=$1 image="localhost/simsearch-$1:$TAG" started args=()
    args=(--build-arg "PYTHON_IMAGE=$BASE" --build-arg "SIMSEARCH_VERSION=$TAG")
    [ -n "$TORCH_INDEX_URL" ] && args+=(--build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL")
    [ -n "$TORCH_WHEELS_URL" ] && args+=(--build-arg "TORCH_WHEELS_URL=$TORCH_WHEELS_URL")
    # vfs stores every layer as a whole copy of the tree: with CUDA torch (~6 GB) the layer
    # cache of the torch targets would need ~30 GB, so they build in one container each
    case $target in
    embedder | indexer) args+=(--layers=false) ;;
    *) args+=(--layers) ;;
    esac
    local previous
    previous=$(podman image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
    started=$(date +%s)
    buildah bud --isolation chroot --network host "${args[@]}" \
        --target "$target" -t "$image" . >"$WORK/build-$target.log" 2>&1 || {
        tail -20 "$WORK/build-$target.log"
        echo "build-images: $target failed (log: $WORK/build-$target.log)" >&2
        return 1
    }
    local size id
    size=$(podman image inspect --format '{{.Size}}' "$image")
    id=$(podman image inspect --format '{{.Id}}' "$image")
    # the image this tag named before, now untagged: gone (vfs keeps whole copies)
    if [ -n "$previous" ] && [ "$previous" != "$id" ]; then
        podman rmi "$previous" >/dev/null 2>&1 || true
    fi
    printf '%-9s %-40s %6d s %6d MB\n' "$target" "$image" "$(($(date +%s) - started))" \
        "$((size / 1000000))"
}

install_tools
mkdir -p "$WORK"
build_base
case " $TARGETS " in
*" embedder "* | *" indexer "*) [ -z "$TORCH_WHEELS" ] || serve_torch_wheels ;;
esac
printf '%-9s %-40s %8s %9s\n' target image time size
for target in $TARGETS; do
    build_target "$target"
done
# To run one, as the chart does (crun cannot run here: cgroups in hybrid mode; runc can):
#   podman --runtime runc run --rm --network host --read-only --user 10001:10001 \
#       --cap-drop ALL --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 IMAGE --version
