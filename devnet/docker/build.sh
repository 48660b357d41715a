#!/usr/bin/env bash
# Build the qchain image (default tag qchain:dev) from a wheelhouse filled on the host, so
# that `docker build` needs no network and pulls nothing when the base is local.
#
#   devnet/docker/build.sh                            # base qchain-base:bookworm (built by
#                                                     # build-base.sh if missing; no registry)
#   devnet/docker/build.sh --base python:3.12-slim    # base pulled from a registry
#   devnet/docker/build.sh --tag qchain:mine
#
# The wheelhouse (.cache/docker/wheelhouse-cpXY-ARCH) holds the project's wheel (project/),
# rebuilt every time, and binary wheels (deps/) of its dependencies for the base image's Python, downloaded
# once from PyPI by the host's pip and reused afterwards.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="${QCHAIN_DOCKER_CACHE:-$repo/.cache/docker}"
base="${QCHAIN_BASE_IMAGE:-qchain-base:bookworm}"
tag="qchain:dev"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
    if [[ -x "$repo/.venv/bin/python" ]]; then python="$repo/.venv/bin/python"; else python=python3; fi
fi

while [[ $# -gt 0 ]]; do
    case "$1" in
        --base) base="$2"; shift 2 ;;
        --tag) tag="$2"; shift 2 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done

start=$(date +%s)
if [[ "$base" == qchain-base:* ]]; then
    QCHAIN_BASE_IMAGE="$base" "$here/build-base.sh"
fi

# The base image's Python decides which wheels the image needs. A local base answers at
# once; a registry base is pulled here (the build would pull it anyway).
pyver="$(docker run --rm --network none --entrypoint python3 "$base" \
    -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
arch="$(uname -m)"
abi="cp${pyver/./}"
wheelhouse="$cache/wheelhouse-$abi-$arch"
mkdir -p "$wheelhouse"
echo "base $base: Python $pyver; wheelhouse $wheelhouse"

# The project's own wheel, always fresh, in its own folder so that the image's dependency
# layer stays cached when only the project changes. A fixed SOURCE_DATE_EPOCH makes the
# wheel byte-identical for identical sources, so an unchanged project hits the cache too.
# It is built from a copy of the work tree's files that git tracks or would track, so
# nothing stale (setuptools' build/, caches) slips in.
src="$(mktemp -d)"
trap 'rm -rf "$src"' EXIT
if git -C "$repo" rev-parse --git-dir >/dev/null 2>&1; then
    (cd "$repo" && git ls-files -z --cached --others --exclude-standard \
        | tar --null --ignore-failed-read -T - -cf - 2>/dev/null) | tar -C "$src" -xf -
else
    tar -C "$repo" --exclude=./.venv --exclude=./.cache --exclude=./build -cf - . | tar -C "$src" -xf -
fi
rm -rf "$wheelhouse/project"
SOURCE_DATE_EPOCH=315532800 "$python" -m pip wheel --quiet --no-deps "$src" -w "$wheelhouse/project"
project_wheel="$(ls "$wheelhouse"/project/qchain-*.whl)"

# Dependency wheels for the image's interpreter and platform, downloaded once per set of
# requirements (a stamp keyed on pyproject.toml skips PyPI on later builds). Every manylinux
# tag up to glibc 2.36 (bookworm) is accepted; the host's pip does not expand them itself.
deps_stamp="$wheelhouse/deps/.stamp-$(sha256sum "$repo/pyproject.toml" | cut -c1-16)"
if [[ ! -f "$deps_stamp" ]]; then
    rm -rf "$wheelhouse/deps"
    platforms=(--platform "manylinux2014_$arch" --platform "manylinux2010_$arch" --platform "manylinux1_$arch")
    for minor in $(seq 5 36); do platforms+=(--platform "manylinux_2_${minor}_$arch"); done
    "$python" -m pip download --quiet --disable-pip-version-check \
        --only-binary=:all: --implementation cp --python-version "$pyver" \
        --abi "$abi" --abi abi3 --abi none "${platforms[@]}" \
        -d "$wheelhouse/deps" "$project_wheel"
    touch "$deps_stamp"
fi
# pip download also copied the project's own wheel into deps/: an old one there would be
# installed with the dependencies and the fresh wheel skipped as "already satisfied".
rm -f "$wheelhouse"/deps/qchain-*.whl

# On the local base the build runs with no network at all: proof that it fetches nothing.
# python:3.12-slim needs Debian's mirror for iproute2.
network=default
[[ "$base" == qchain-base:* ]] && network=none
echo "building $tag (build network: $network)"
build_start=$(date +%s)
previous="$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)"
docker build --quiet --network "$network" --build-arg "BASE=$base" -t "$tag" \
    -f "$here/Dockerfile" "$wheelhouse" >/dev/null
# The image this tag named before is of no use now (unless a container still runs it).
current="$(docker image inspect -f '{{.Id}}' "$tag")"
if [[ -n "$previous" && "$previous" != "$current" ]]; then
    docker rmi "$previous" >/dev/null 2>&1 || true
fi
echo "built $tag from $base in $(($(date +%s) - build_start)) s (total $(($(date +%s) - start)) s)"
