#!/usr/bin/env bash
# Container end-to-end test: build the image, run participant + group inside it on a small
# simulated cohort (/data mounted read-only), run the same commands natively, and compare the
# derivatives (stats TSVs within float32 tolerance, images, sidecars; scripts/compare_derivatives.py).
#
#   scripts/ci_container_test.sh [WORK_DIR]
#
# Environment:
#   QSMPREP_IMAGE        image to test (default qsmprep:latest)
#   QSMPREP_SKIP_BUILD=1 test an already built image
#   QSMPREP_ENGINE       docker | podman (default: docker if a daemon answers, else podman)
#   QSMPREP_NATIVE       native qsmprep executable (default .venv/bin/qsmprep, else PATH)
#   TEST_SUBJECTS        simulated subjects (default 1), TEST_NPROCS (default 2), TEST_SEED (7)
#   TEST_QSMPREP_ARGS    participant options for both runs (default: fast settings,
#                        "--no-longitudinal --inversion tkd --omp-nthreads 1"; the point is
#                        native == container, and ITK registration with more than one thread
#                        is not bit-reproducible even natively)
# Installs podman with apt-get when neither engine exists and this runs as root (CI).
# Exit status: 0 pass, 1 failure, 77 cannot run here (no engine and no way to install one).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IMAGE="${QSMPREP_IMAGE:-qsmprep:latest}"
W="${1:-$(mktemp -d "${TMPDIR:-/tmp}/qsmprep-ctest.XXXXXX")}"
SUBJECTS="${TEST_SUBJECTS:-1}"
NPROCS="${TEST_NPROCS:-2}"
SEED="${TEST_SEED:-7}"
read -r -a QARGS <<< "${TEST_QSMPREP_ARGS---no-longitudinal --inversion tkd --omp-nthreads 1}"
CACHE_DIR="${QSMPREP_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/qsmprep}"
export LOGNAME="${LOGNAME:-$(id -un)}"

log() { printf '[ci_container_test] %s\n' "$*" >&2; }
t_all=$SECONDS
declare -A T

# --- engine -------------------------------------------------------------------------------
ENGINE="${QSMPREP_ENGINE:-}"
if [[ -z "$ENGINE" ]]; then
    if command -v docker >/dev/null 2>&1 && timeout 10 docker info >/dev/null 2>&1; then
        ENGINE=docker
    elif command -v podman >/dev/null 2>&1; then
        ENGINE=podman
    elif [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        log "installing podman (apt-get)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman buildah runc uidmap \
            fuse-overlayfs debootstrap >/dev/null
        ENGINE=podman
    else
        log "SKIP: no Docker daemon, no podman, and not root to install podman"
        exit 77
    fi
fi
export QSMPREP_ENGINE="$ENGINE"
if [[ "$ENGINE" == podman && -z "${CONTAINERS_CONF:-}" ]]; then
    # same settings build_image.sh writes (runc; ulimits the host accepts)
    mkdir -p "$CACHE_DIR"
    printf '[engine]\nruntime = "runc"\n[containers]\ndefault_ulimits = ["nofile=16384:16384", "nproc=4096:4096"]\n' \
        > "$CACHE_DIR/containers-test.conf"
    export CONTAINERS_CONF="$CACHE_DIR/containers-test.conf"
fi

NATIVE="${QSMPREP_NATIVE:-}"
if [[ -z "$NATIVE" ]]; then
    if [[ -x "$REPO_ROOT/.venv/bin/qsmprep" ]]; then NATIVE="$REPO_ROOT/.venv/bin/qsmprep"
    else NATIVE="$(command -v qsmprep)"; fi
fi
BIN="$(dirname "$NATIVE")"
PY="$BIN/python"; [[ -x "$PY" ]] || PY=python3
SIM="$BIN/qsmprep-simulate"; [[ -x "$SIM" ]] || SIM=qsmprep-simulate
log "engine $ENGINE, image $IMAGE, native $NATIVE, work dir $W"

# --- 1. build -----------------------------------------------------------------------------
t=$SECONDS
if [[ "${QSMPREP_SKIP_BUILD:-0}" != 1 ]]; then
    QSMPREP_IMAGE="$IMAGE" bash "$REPO_ROOT/scripts/build_image.sh"
fi
T[build]=$((SECONDS - t))
size="$($ENGINE image inspect "$IMAGE" --format '{{.Size}}')"
version="$($ENGINE run --rm "$IMAGE" --version 2>&1 | tail -n1)"
log "image $IMAGE: $((size / 1000000)) MB, '$version'"

# --- 2. data ------------------------------------------------------------------------------
mkdir -p "$W"
t=$SECONDS
rm -rf "$W/bids"
"$SIM" "$W/bids" --subjects "$SUBJECTS" --sessions 2 --seed "$SEED" --preset small
chmod -R a+rX "$W/bids"
T[simulate]=$((SECONDS - t))

# --- 3. native run ------------------------------------------------------------------------
rm -rf "$W/native" "$W/work_native"
t=$SECONDS
"$NATIVE" "$W/bids" "$W/native" participant -w "$W/work_native" --nprocs "$NPROCS" "${QARGS[@]}"
"$NATIVE" "$W/bids" "$W/native" group -w "$W/work_native"
T[native]=$((SECONDS - t))

# --- 4. container run (image's non-root user; /data read-only) ----------------------------
rm -rf "$W/container" "$W/work_container"
mkdir -p "$W/container" "$W/work_container"
user_args=()
if [[ "$(id -u)" != 0 ]]; then
    user_args=(--user "$(id -u):$(id -g)")  # outputs owned by the caller
else
    chmod 0777 "$W/container" "$W/work_container"  # written by the image's user (uid 1000)
fi
run_c() {
    $ENGINE run --rm "${user_args[@]}" \
        -v "$W/bids:/data:ro" -v "$W/container:/out" -v "$W/work_container:/work" \
        "$IMAGE" /data /out "$@"
}
t=$SECONDS
run_c participant -w /work --nprocs "$NPROCS" "${QARGS[@]}"
run_c group -w /work
T[container]=$((SECONDS - t))

# --- 5. read-only /data really is read-only, and nothing was written into it -------------
if $ENGINE run --rm --user 0 --entrypoint sh -v "$W/bids:/data:ro" "$IMAGE" -c 'touch /data/x' 2>/dev/null; then
    log "FAIL: /data was writable inside the container"; exit 1
fi

# --- 6. compare ---------------------------------------------------------------------------
t=$SECONDS
status=0
"$PY" "$REPO_ROOT/scripts/compare_derivatives.py" "$W/native" "$W/container" || status=1
for f in dataset_description.json group/dgm_long.tsv; do
    [[ -f "$W/container/$f" ]] || { log "FAIL: container output lacks $f"; status=1; }
done
if ! grep -q '"Container"' "$W/container/dataset_description.json" 2>/dev/null; then
    log "note: dataset_description.json of the container run records no GeneratedBy Container"
fi
# the numba kernels compiled at build time load from the image's cache for any uid (no
# compilation at run time: qsmprep.qsm.jit_warmup, NUMBA_CPU_NAME=generic)
jit="$($ENGINE run --rm "${user_args[@]}" --entrypoint python "$IMAGE" -c '
import logging, numpy as np
logging.getLogger("qsmprep").setLevel(logging.ERROR)
from qsmprep.qsm.jit_warmup import _sphere_session, dispatchers
from qsmprep.qsm.pipeline import reconstruct
mag, phase, tes, b0, aff = _sphere_session(shape=(40, 36, 30), vox=1.5)
reconstruct(np.asfortranarray(mag), np.asfortranarray(phase), tes, b0, aff)
print(sum(sum(d.stats.cache_misses.values()) for d in dispatchers().values()),
      sum(sum(d.stats.cache_hits.values()) for d in dispatchers().values()))
' 2>/dev/null | tail -n1)"
if [[ "${jit%% *}" != 0 ]]; then
    log "FAIL: numba kernels compiled at run time in the image (misses hits: '$jit')"; status=1
else
    log "numba kernels loaded from the image's cache (misses hits: $jit)"
fi
T[compare]=$((SECONDS - t))

printf '\n%-28s %s\n' "step" "seconds"
for k in build simulate native container compare; do printf '%-28s %s\n' "$k" "${T[$k]}"; done
printf '%-28s %s\n' "total" "$((SECONDS - t_all))"
printf '%-28s %s\n' "image size (MB)" "$((size / 1000000))"
if (( status )); then log "FAIL: container and native derivatives differ"; else log "PASS"; fi
exit "$status"
