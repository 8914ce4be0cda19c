#!/usr/bin/env bash
# Build the qsmprep container image.
#
#   scripts/build_image.sh [--tag NAME] [--engine docker|podman] [--base-only] [--no-cache]
#
# Engine choice: `docker` when a Docker daemon answers, otherwise `podman` (daemonless).
# With podman two settings are needed on hosts with a hybrid cgroup setup and low hard ulimits
# (runc instead of crun, explicit default ulimits); they are written to a containers.conf in the
# cache directory and passed through CONTAINERS_CONF (an existing CONTAINERS_CONF is respected).
#
# Hosts with no container registry: `FROM python:3.11-slim` needs a local base image. When
# docker.io/library/python:3.11-slim is neither present nor loadable from the cache and cannot
# be pulled, a minimal Debian bookworm root file system with Python 3.11 is created with
# debootstrap (from the host's apt mirror), imported under exactly that tag, and saved with
# `podman save` into the cache directory, so later builds start in seconds.
#
# Environment:
#   QSMPREP_IMAGE          image name (default qsmprep:latest; qsmprep:<version> is tagged too)
#   QSMPREP_IMAGE_CACHE    cache directory (default ${XDG_CACHE_HOME:-~/.cache}/qsmprep)
#   QSMPREP_ENGINE         force docker or podman
#   QSMPREP_BASE           auto (default: local image, cache, pull, debootstrap) | local | pull
#   QSMPREP_APT_MIRROR     Debian mirror for debootstrap (default: read from the apt sources)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IMAGE="${QSMPREP_IMAGE:-qsmprep:latest}"
CACHE_DIR="${QSMPREP_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/qsmprep}"
ENGINE="${QSMPREP_ENGINE:-}"
BASE_MODE="${QSMPREP_BASE:-auto}"
BASE_IMAGE="docker.io/library/python:3.11-slim"
BASE_TAR="$CACHE_DIR/python-3.11-slim-base.tar"
BASE_ONLY=0
NO_CACHE=()

while [[ $# -gt 0 ]]; do
    case "$1" in
        --tag) IMAGE="$2"; shift 2 ;;
        --engine) ENGINE="$2"; shift 2 ;;
        --base-only) BASE_ONLY=1; shift ;;
        --no-cache) NO_CACHE=(--no-cache); shift ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "build_image.sh: unknown argument $1" >&2; exit 64 ;;
    esac
done

log() { printf '[build_image] %s\n' "$*" >&2; }

VERSION="$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$REPO_ROOT/qsmprep/__init__.py")"
[[ -n "$VERSION" ]] || { log "cannot read __version__ from qsmprep/__init__.py"; exit 1; }

if [[ -z "$ENGINE" ]]; then
    if command -v docker >/dev/null 2>&1 && timeout 10 docker info >/dev/null 2>&1; then
        ENGINE=docker
    elif command -v podman >/dev/null 2>&1; then
        ENGINE=podman
    else
        log "neither a Docker daemon nor podman is available"
        log "install podman (apt-get install podman buildah runc uidmap fuse-overlayfs debootstrap)"
        exit 1
    fi
fi
log "engine: $ENGINE, image: $IMAGE (version $VERSION)"

mkdir -p "$CACHE_DIR"

podman_setup() {
    if [[ -z "${CONTAINERS_CONF:-}" ]]; then
        local conf="$CACHE_DIR/containers.conf"
        cat > "$conf" <<'EOF'
# written by qsmprep scripts/build_image.sh
[engine]
runtime = "runc"

[containers]
default_ulimits = ["nofile=16384:16384", "nproc=4096:4096"]
EOF
        export CONTAINERS_CONF="$conf"
    fi
}

apt_mirror() {
    if [[ -n "${QSMPREP_APT_MIRROR:-}" ]]; then echo "$QSMPREP_APT_MIRROR"; return; fi
    local uri=""
    if compgen -G "/etc/apt/sources.list.d/*.sources" >/dev/null; then
        # deb822 format: the first URIs line that is not the security archive
        uri="$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' \
               | grep -v -- '-security' | head -n1 || true)"
    fi
    if [[ -z "$uri" && -f /etc/apt/sources.list ]]; then
        uri="$(awk '$1 == "deb" {for (i = 2; i <= NF; i++) if ($i ~ /^(http|https|file):/) {print $i; exit}}' \
               /etc/apt/sources.list | grep -v -- '-security' | head -n1 || true)"
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

make_local_base() {
    command -v debootstrap >/dev/null 2>&1 || { log "debootstrap is needed to create the base image"; exit 1; }
    local mirror rootfs t0
    mirror="$(apt_mirror)"
    rootfs="$(mktemp -d "${TMPDIR:-/tmp}/qsmprep-rootfs.XXXXXX")"
    t0=$SECONDS
    log "creating $BASE_IMAGE locally with debootstrap from $mirror (about 100 s)"
    debootstrap --variant=minbase \
        --include=python3,python3-pip,python3-venv,python-is-python3,ca-certificates \
        bookworm "$rootfs" "$mirror" > "$CACHE_DIR/debootstrap.log" 2>&1 \
        || { log "debootstrap failed, see $CACHE_DIR/debootstrap.log"; rm -rf "$rootfs"; exit 1; }
    # Builds reach pip/apt through the same TLS-intercepting proxy as this host: trust its CAs.
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
        chroot "$rootfs" update-ca-certificates >/dev/null 2>&1 || true
    fi
    rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -cf - . | podman import -q --change 'CMD ["python3"]' - "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs"
    podman save -q -o "$BASE_TAR.tmp" "$BASE_IMAGE" >/dev/null && mv "$BASE_TAR.tmp" "$BASE_TAR"
    log "base image created in $((SECONDS - t0)) s and cached in $BASE_TAR"
}

ensure_base() {
    if podman image exists "$BASE_IMAGE"; then
        log "base image $BASE_IMAGE present"
        return
    fi
    if [[ -f "$BASE_TAR" && "$BASE_MODE" != pull ]]; then
        log "loading base image from $BASE_TAR"
        podman load -i "$BASE_TAR" >/dev/null && podman image exists "$BASE_IMAGE" && return
        log "cached base image unusable; recreating"
    fi
    if [[ "$BASE_MODE" != local ]]; then
        if timeout 120 podman pull -q "$BASE_IMAGE" >/dev/null 2>&1; then
            log "pulled $BASE_IMAGE"
            return
        fi
        [[ "$BASE_MODE" == pull ]] && { log "could not pull $BASE_IMAGE"; exit 1; }
        log "no registry reachable for $BASE_IMAGE"
    fi
    make_local_base
}

t_start=$SECONDS
build_args=(--build-arg "VERSION=$VERSION" --build-arg "VCS_REF=$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
            --build-arg "BUILD_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
            -t "$IMAGE" -t "qsmprep:$VERSION" -f "$REPO_ROOT/Dockerfile")

if [[ "$ENGINE" == podman ]]; then
    podman_setup
    ensure_base
    [[ "$BASE_ONLY" == 1 ]] && exit 0
    # --pull=never: the base is local by now; never let podman try a registry again.
    podman build --pull=never --format docker "${NO_CACHE[@]}" "${build_args[@]}" "$REPO_ROOT"
    size="$(podman image inspect "$IMAGE" --format '{{.Size}}')"
else
    [[ "$BASE_ONLY" == 1 ]] && { docker pull "$BASE_IMAGE"; exit 0; }
    docker build "${NO_CACHE[@]}" "${build_args[@]}" "$REPO_ROOT"
    size="$(docker image inspect "$IMAGE" --format '{{.Size}}')"
fi

log "built $IMAGE in $((SECONDS - t_start)) s; size $((size / 1000000)) MB"
