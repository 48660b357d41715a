#!/usr/bin/env bash
# Build the local base image qchain-base:bookworm without any container registry:
# debootstrap a minimal Debian bookworm root filesystem (Python 3.11, venv, CA certificates,
# iproute2 for `tc netem`) and `docker import` it. Idempotent: does nothing if the image
# exists; reuses a finished root filesystem from the cache.
#
#   devnet/docker/build-base.sh [--force]
#
# Environment: QCHAIN_BASE_IMAGE (default qchain-base:bookworm), QCHAIN_DOCKER_CACHE
# (default REPO/.cache/docker), DEBIAN_MIRROR (default http://deb.debian.org/debian).
# Needs root (or sudo) for debootstrap.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
image="${QCHAIN_BASE_IMAGE:-qchain-base:bookworm}"
cache="${QCHAIN_DOCKER_CACHE:-$repo/.cache/docker}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
rootfs="$cache/rootfs-bookworm"
stamp="$rootfs.done"
force=0
[[ "${1:-}" == "--force" ]] && force=1

if [[ $force == 0 ]] && docker image inspect "$image" >/dev/null 2>&1; then
    echo "base image $image exists"
    exit 0
fi

sudo=""
if [[ $(id -u) != 0 ]]; then
    command -v sudo >/dev/null || { echo "debootstrap needs root or sudo" >&2; exit 1; }
    sudo="sudo"
fi

if [[ $force == 1 || ! -f "$stamp" ]]; then
    if ! command -v debootstrap >/dev/null; then
        echo "installing debootstrap"
        $sudo apt-get update -qq
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    fi
    mkdir -p "$cache"
    $sudo rm -rf "$rootfs" "$stamp"
    echo "debootstrap bookworm into $rootfs (about a minute)"
    start=$(date +%s)
    $sudo debootstrap --variant=minbase \
        --include=python3,python3-venv,ca-certificates,iproute2 \
        bookworm "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1 || {
        tail -n 30 "$cache/debootstrap.log" >&2
        exit 1
    }
    # Downloaded packages and apt lists are not needed in the image.
    $sudo find "$rootfs/var/cache/apt/archives" -name '*.deb' -delete
    $sudo rm -rf "$rootfs/var/lib/apt/lists/"*
    touch "$stamp"
    echo "debootstrap took $(($(date +%s) - start)) s"
fi

echo "importing $rootfs as $image"
$sudo tar -C "$rootfs" --numeric-owner -c . | docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    --message "qchain base: debootstrap bookworm minbase + python3 python3-venv ca-certificates iproute2" \
    - "$image" >/dev/null
docker image inspect "$image" --format "built $image ({{.Size}} bytes)"
