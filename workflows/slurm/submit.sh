#!/usr/bin/env bash
# Submit a whole qsmprep study to SLURM: pybids index job -> participant job array -> group job.
#
#   workflows/slurm/submit.sh --bids BIDS_DIR --out OUT_DIR --work WORK_DIR [options] [-- QSMPREP_ARGS...]
#
# Options:
#   --participants FILE   one label per line (default: participant_id of BIDS_DIR/participants.tsv,
#                         else the sub-* folders); copied to WORK_DIR/participants.txt
#   --bids-db DIR         shared pybids database (default WORK_DIR/bids_db), built ONCE by the
#                         index job; every array task reads a private copy of it
#   --cpus N              CPUs per participant task (default 2)        --mem SIZE  (default 12G)
#   --time HH:MM:SS       per participant task (default 06:00:00)      --max-parallel N  (array %N)
#   --partition P  --account A  --sbatch-args "ARGS"   passed to every sbatch call
#   --cmd "CMD"           how to run qsmprep (default: qsmprep on PATH; e.g.
#                         "apptainer run --cleanenv -B /data qsmprep.sif")
#   --python "PY"         Python that has qsmprep installed, for the index job (default: the
#                         interpreter next to the qsmprep on PATH, else python3; with a
#                         container e.g. "apptainer exec qsmprep.sif python")
#   --dry-run             print the sbatch commands instead of submitting
# Everything after `--` is passed to qsmprep at participant level (e.g. --skip-bids-validation).
#
# Prints the three job ids; the group job runs only if every array task succeeded
# (--dependency=afterok), and SLURM cancels it otherwise (kill_invalid_depend).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bids="" out="" work="" participants="" db="" cpus=2 mem=12G time=06:00:00 maxpar=""
partition="" account="" extra_sbatch="" cmd="qsmprep" python="" dry=0
qargs=()

usage() { sed -n '2,24p' "$0"; exit "${1:-64}"; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --bids) bids="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --work) work="$2"; shift 2 ;;
        --participants) participants="$2"; shift 2 ;;
        --bids-db) db="$2"; shift 2 ;;
        --cpus) cpus="$2"; shift 2 ;;
        --mem) mem="$2"; shift 2 ;;
        --time) time="$2"; shift 2 ;;
        --max-parallel) maxpar="$2"; shift 2 ;;
        --partition) partition="$2"; shift 2 ;;
        --account) account="$2"; shift 2 ;;
        --sbatch-args) extra_sbatch="$2"; shift 2 ;;
        --cmd) cmd="$2"; shift 2 ;;
        --python) python="$2"; shift 2 ;;
        --dry-run) dry=1; shift ;;
        -h|--help) usage 0 ;;
        --) shift; qargs=("$@"); break ;;
        *) echo "submit.sh: unknown argument $1" >&2; usage ;;
    esac
done
[[ -n "$bids" && -n "$out" && -n "$work" ]] || { echo "submit.sh: --bids, --out and --work are required" >&2; usage; }
[[ -d "$bids" ]] || { echo "submit.sh: BIDS folder $bids not found" >&2; exit 66; }

bids="$(cd "$bids" && pwd)"
mkdir -p "$out" "$work/logs"
out="$(cd "$out" && pwd)"
work="$(cd "$work" && pwd)"
db="${db:-$work/bids_db}"
export LOGNAME="${LOGNAME:-$(id -un)}"

# 1. participants list
plist="$work/participants.txt"
if [[ -n "$participants" ]]; then
    sed -e 's/^sub-//' -e '/^[[:space:]]*$/d' "$participants" > "$plist"
elif [[ -f "$bids/participants.tsv" ]]; then
    awk -F'\t' 'NR == 1 {for (i = 1; i <= NF; i++) if ($i == "participant_id") c = i; next}
                c && $c != "" {sub(/^sub-/, "", $c); print $c}' "$bids/participants.tsv" > "$plist"
else
    find "$bids" -mindepth 1 -maxdepth 1 -type d -name 'sub-*' -printf '%f\n' \
        | sed 's/^sub-//' | sort > "$plist"
fi
n="$(grep -c . "$plist" || true)"
(( n > 0 )) || { echo "submit.sh: no participants found (see $plist)" >&2; exit 18; }

# 2. the Python for the index job
if [[ -z "$python" ]]; then
    qs="$(command -v qsmprep || true)"
    if [[ -n "$qs" && -x "$(dirname "$qs")/python" ]]; then python="$(dirname "$qs")/python"
    else python=python3; fi
fi

common=(--parsable --chdir "$work")
[[ -n "$partition" ]] && common+=(--partition "$partition")
[[ -n "$account" ]] && common+=(--account "$account")
# shellcheck disable=SC2206  # user-supplied sbatch options are a word list
[[ -n "$extra_sbatch" ]] && common+=($extra_sbatch)

run() {  # run sbatch ARGS... -> prints the job id
    if (( dry )); then { printf 'sbatch'; printf ' %q' "$@"; printf '\n'; } >&2; echo "DRYRUN"; return; fi
    sbatch "$@"
}

# The index job builds the database exactly the way qsmprep reads it (qsmprep.bids.build_layout).
# A fresh index for every submission: an older database may describe an older dataset state.
index_py="import shutil, sys; shutil.rmtree(sys.argv[2], ignore_errors=True); from qsmprep.bids import build_layout; build_layout(sys.argv[1], database_dir=sys.argv[2], validate=False)"
jid_index="$(run "${common[@]}" --job-name qsmprep-index --cpus-per-task 1 --mem 4G --time 02:00:00 \
    --output "$work/logs/index_%j.log" \
    --wrap "$(read -r -a pyw <<< "$python"; printf '%q ' "${pyw[@]}" -c "$index_py" "$bids" "$db")")"

array="1-$n"; [[ -n "$maxpar" ]] && array="$array%$maxpar"
qargs_str=""
(( ${#qargs[@]} )) && qargs_str="$(printf '%q ' "${qargs[@]}")"
# Task settings travel in the environment (--export=ALL): values may hold spaces and commas.
export QSMPREP_BIDS="$bids" QSMPREP_OUT="$out" QSMPREP_WORK="$work" QSMPREP_PARTICIPANTS="$plist" \
       QSMPREP_BIDS_DB="$db" QSMPREP_CMD="$cmd" QSMPREP_ARGS="$qargs_str"
jid_array="$(run "${common[@]}" --job-name qsmprep --array "$array" --cpus-per-task "$cpus" \
    --mem "$mem" --time "$time" --dependency "afterok:$jid_index" --export ALL \
    --output "$work/logs/participant_%A_%a.log" "$HERE/qsmprep_array.sbatch")"

# shellcheck disable=SC2086  # cmd is a word list on purpose
jid_group="$(run "${common[@]}" --job-name qsmprep-group --cpus-per-task 1 --mem 4G --time 02:00:00 \
    --dependency "afterok:$jid_array" --output "$work/logs/group_%j.log" \
    --wrap "export LOGNAME=\${LOGNAME:-\$(id -un)}; $cmd $(printf '%q ' "$bids" "$out") group -w $(printf '%q' "$work/group")")"

echo "participants: $n ($plist)"
echo "index job:    $jid_index"
echo "array job:    $jid_array"
echo "group job:    $jid_group"
