#!/usr/bin/env bash
# make demo: simulate a small longitudinal cohort, run participant + group level, say where
# the outputs are. Usage: scripts/demo.sh DEMO_DIR [NPROCS]
set -euo pipefail
demo="${1:-demo}"
nprocs="${2:-2}"
mkdir -p "$demo"
t0=$(date +%s)
echo "[demo] simulating a longitudinal cohort (4 subjects x 2 sessions, small preset) in $demo/bids"
qsmprep-simulate "$demo/bids" --subjects 4 --sessions 2 --seed 1 --preset small
echo "[demo] participant level ($nprocs processes)"
qsmprep "$demo/bids" "$demo/out" participant -w "$demo/work" --nprocs "$nprocs"
echo "[demo] group level"
qsmprep "$demo/bids" "$demo/out" group
t1=$(date +%s)
echo
echo "[demo] finished in $((t1 - t0)) s"
echo "[demo] derivatives:        $demo/out"
echo "[demo] participant reports: $(ls "$demo"/out/sub-*.html | tr '\n' ' ')"
echo "[demo] group report:        $demo/out/group/report.html"
echo "[demo] cohort table:        $demo/out/group/dgm_long.tsv"
echo "[demo] ground truth:        $demo/bids/derivatives/qsmprep-truth"
