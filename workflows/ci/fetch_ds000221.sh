#!/usr/bin/env bash
# Fetch one participant of OpenNeuro ds000221 (MPI-Leipzig LEMON, CC0): single-echo 3 T GRE
# (acq-mag_GRE / acq-phase_GRE) + MP2RAGE T1w, about 55 MB, anonymous S3 access.
#
#   workflows/ci/fetch_ds000221.sh DEST_DIR [SUBJECT]      (SUBJECT default sub-010002)
#
# Retries the sync, then verifies the files against workflows/ci/checksums.sha256.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DEST="${1:?usage: fetch_ds000221.sh DEST_DIR [SUBJECT]}"
SUB="${2:-${DS000221_SUBJECT:-sub-010002}}"
BUCKET="s3://openneuro.org/ds000221"
PY="${PYTHON:-python3}"
command -v aws >/dev/null || { echo "fetch_ds000221: the aws CLI is required (pip install awscli)" >&2; exit 1; }
mkdir -p "$DEST"
for attempt in 1 2 3 4 5; do
    if aws s3 sync --no-sign-request --only-show-errors "$BUCKET" "$DEST" \
        --exclude '*' \
        --include 'dataset_description.json' --include 'participants.tsv' \
        --include 'participants.json' --include 'README' --include 'CHANGES' \
        --include '*GRE.json' --include '*T1w.json' \
        --include "$SUB/ses-01/anat/*GRE*" --include "$SUB/ses-01/anat/*T1w*"; then
        break
    fi
    (( attempt == 5 )) && { echo "fetch_ds000221: aws s3 sync failed 5 times" >&2; exit 1; }
    echo "fetch_ds000221: sync attempt $attempt failed; retrying in $((attempt * 10)) s" >&2
    sleep $((attempt * 10))
done
n="$(find "$DEST/$SUB" -name '*GRE*.nii*' | wc -l)"
(( n >= 2 )) || { echo "fetch_ds000221: expected magnitude + phase GRE images under $DEST/$SUB, found $n" >&2; exit 1; }
"$PY" "$HERE/verify_checksums.py" "$(dirname "$DEST")" "$HERE/checksums.sha256" --prefix "$(basename "$DEST")/"
