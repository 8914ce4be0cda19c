"""Does the group level recover the seed study's effects?  (tabular end-to-end benchmark)

Builds a synthetic cohort of per-session ROI tables (``*_desc-dgm_stats.tsv``, left and right
labels) plus ``participants.tsv`` with the effects of the seed study planted (Hagemeier et al.
2018): MS > HC in caudate and pallidum, MS < HC in thalamus, caudate increasing over time in
both groups, putamen null.  Runs :func:`qsmprep.group.run_group` and prints one table:
planted vs recovered (sign, LMM marginal estimate [95% CI], ANOVA p and FDR-p), plus run time.

Values are ppb.  Between-subject SDs (12, 14, 20, 8 ppb) and the within-subject scan-to-scan
noise (3 ppb per hemisphere and session) are typical of 3 T DGM QSM studies; the planted
effects (10-15 ppb between groups, 5 ppb over time) match the 5-15 ppb the study reports.

``--replicates N`` additionally re-draws the cohort N times (statistics only, no figures) and
prints how often each planted effect is recovered at FDR 5% (the power of the design) and how
often a null effect is falsely declared.

    python benchmarks/group_effects.py                      # seed-study size, 120 MS / 40 HC
    python benchmarks/group_effects.py --n-ms 12 --n-hc 6 --replicates 200
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qsmprep import stats as qstats  # noqa: E402
from qsmprep.publish import mark_complete  # noqa: E402
from qsmprep.group import run_group  # noqa: E402

SESSIONS = ("ses-baseline", "ses-followup")
#: HC baseline mean, between-subject SD (ppb)
BASE = {"caudate": (50.0, 12.0), "putamen": (45.0, 14.0), "pallidum": (120.0, 20.0), "thalamus": (5.0, 8.0)}
#: planted effects (ppb): group = MS - HC (both sessions), time = follow-up - baseline (both groups)
PLANTED = {
    "caudate": {"group": 10.0, "time": 5.0, "group_x_time": 0.0},
    "putamen": {"group": 0.0, "time": 0.0, "group_x_time": 0.0},
    "pallidum": {"group": 15.0, "time": 0.0, "group_x_time": 0.0},
    "thalamus": {"group": -8.0, "time": 0.0, "group_x_time": 0.0},
}
NOISE = 3.0  # per hemisphere and session
HEMI_SD = 3.0  # stable subject-specific left/right asymmetry
LABELS = [(s, h) for s in BASE for h in ("left", "right")]


def simulate_cohort(n_ms=120, n_hc=40, seed=0, drop_followup=1, sd_scale=1.0):
    """Return ``(participants DataFrame, list of (participant_id, session_id, ROI table))``.

    ``drop_followup`` MS participants miss their follow-up (exercises the LMM and the warnings).
    """
    rng = np.random.default_rng(seed)
    parts, tables = [], []
    n = n_ms + n_hc
    for i in range(n):
        pid = f"sub-{i + 1:03d}"
        grp = "MS" if i < n_ms else "HC"
        parts.append({"participant_id": pid, "group": grp, "age": round(float(rng.normal(45, 10)), 1),
                      "sex": str(rng.choice(["F", "M"], p=[0.7, 0.3]))})
        subj = {s: rng.normal(m, sd * sd_scale) for s, (m, sd) in BASE.items()}
        asym = {s: rng.normal(0, HEMI_SD) for s in BASE}
        for t, ses in enumerate(SESSIONS):
            if grp == "MS" and i < drop_followup and t == 1:
                continue
            rows = []
            for idx, (s, h) in enumerate(LABELS, start=1):
                eff = PLANTED[s]
                chi = subj[s] + (eff["group"] if grp == "MS" else 0.0) + t * eff["time"]
                chi += t * eff["group_x_time"] * (grp == "MS")
                chi += (asym[s] if h == "left" else -asym[s]) + rng.normal(0, NOISE)
                nvox = int(rng.integers(300, 600))
                rows.append({"index": idx, "name": f"{h.capitalize()}_{s.capitalize()}", "structure": s,
                             "hemisphere": h, "mean_ppb": chi, "median_ppb": chi + rng.normal(0, 1),
                             "sd_ppb": abs(rng.normal(25, 3)), "n_voxels": nvox, "volume_mm3": nvox * 1.0})
            tables.append((pid, ses, pd.DataFrame(rows)))
    return pd.DataFrame(parts), tables


def write_cohort(root, participants, tables):
    """Write ``root/bids/participants.tsv`` and ``root/out/sub-*/ses-*/anat/*_stats.tsv``."""
    bids, out = Path(root) / "bids", Path(root) / "out"
    bids.mkdir(parents=True, exist_ok=True)
    participants.to_csv(bids / "participants.tsv", sep="\t", index=False, na_rep="n/a")
    for pid, ses, df in tables:
        d = out / pid / ses / "anat"
        d.mkdir(parents=True, exist_ok=True)
        df.to_csv(d / f"{pid}_{ses}_atlas-DGM_desc-dgm_stats.tsv", sep="\t", index=False, na_rep="n/a",
                  float_format="%.4f")
    for pid in {pid for pid, _, _ in tables}:
        mark_complete(out, pid)  # the group level reads only completed subjects (qsmprep.publish)
    return bids, out


def recovered_table(anova, lmm, alpha=0.05, planted_effects=None):
    """One row per structure x effect: planted, recovered estimate, p, p_FDR, verdict.

    ``planted_effects``: ``{structure: {effect: ppb}}`` (default: :data:`PLANTED`).
    """
    rows = []
    terms = {"group": "group[MS] (marginal)", "time": "time[ses-followup] (marginal)",
             "group_x_time": "group[MS]:time[ses-followup]"}
    for s, effects in (planted_effects or PLANTED).items():
        for eff, planted in effects.items():
            a = anova[(anova["structure"] == s) & (anova["source"] == eff)].iloc[0]
            m = lmm[(lmm["structure"] == s) & (lmm["term"] == terms[eff])].iloc[0]
            sig = bool(a["p_fdr"] < alpha)
            if planted != 0:
                ok = sig and np.sign(m["estimate"]) == np.sign(planted)
                verdict = "recovered" if ok else ("wrong sign" if sig else "MISSED")
            else:
                verdict = "null ok" if not sig else "FALSE POSITIVE"
            rows.append({"structure": s, "effect": eff, "planted_ppb": planted,
                         "estimate_ppb": m["estimate"], "ci": f"[{m['ci_low']:.1f}, {m['ci_high']:.1f}]",
                         "anova_p": a["p"], "anova_p_fdr": a["p_fdr"], "verdict": verdict})
    return pd.DataFrame(rows)


def power(n_ms, n_hc, replicates, seed, alpha=0.05, sd_scale=1.0):
    """Fraction of replicates where each effect is declared (ANOVA, FDR across structures)."""
    hits = {}
    for r in range(replicates):
        parts, tables = simulate_cohort(n_ms, n_hc, seed=seed + 1000 + r, sd_scale=sd_scale)
        long = qstats.build_long_table(tables, parts)
        table, _ = qstats.analysis_table(long)
        anova, _ = qstats.mixed_anova(table, alpha=alpha)
        lmm, _ = qstats.fit_lmm(table, alpha=alpha)
        rec = recovered_table(anova, lmm, alpha)
        for row in rec.itertuples():
            key = (row.structure, row.effect)
            hits[key] = hits.get(key, 0) + (row.verdict in ("recovered", "FALSE POSITIVE", "wrong sign"))
    return pd.DataFrame(
        [{"structure": s, "effect": e, "planted_ppb": PLANTED[s][e],
          "declared_fraction": hits[(s, e)] / replicates} for (s, e) in hits]
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-ms", type=int, default=120)
    ap.add_argument("--n-hc", type=int, default=40)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--replicates", type=int, default=0)
    ap.add_argument("--sd-scale", type=float, default=1.0,
                    help="multiply the between-subject SDs (e.g. 0.4 for a homogeneous simulated cohort)")
    ap.add_argument("--keep", type=Path, default=None, help="write the cohort and outputs here (kept)")
    args = ap.parse_args(argv)

    parts, tables = simulate_cohort(args.n_ms, args.n_hc, seed=args.seed, sd_scale=args.sd_scale)
    tmp = tempfile.TemporaryDirectory() if args.keep is None else None
    root = Path(tmp.name) if tmp else args.keep
    bids, out = write_cohort(root, parts, tables)
    t0 = time.perf_counter()
    res = run_group(bids, out, covariates=())
    wall = time.perf_counter() - t0
    anova = pd.read_csv(res["anova"], sep="\t", na_values="n/a")
    lmm = pd.read_csv(res["lmm"], sep="\t", na_values="n/a")
    rec = recovered_table(anova, lmm)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"# group level on {args.n_ms} MS + {args.n_hc} HC x {len(SESSIONS)} sessions (seed {args.seed}): "
          f"run_group wall {wall:.2f} s, peak RSS {peak:.0f} MB, report {res['report'] if args.keep else '(temporary)'}")
    with pd.option_context("display.width", 200, "display.float_format", lambda v: f"{v:.4g}"):
        print(rec.to_string(index=False))
        if args.replicates:
            pw = power(args.n_ms, args.n_hc, args.replicates, args.seed, sd_scale=args.sd_scale)
            print(f"# fraction of {args.replicates} replicate cohorts in which each effect is declared at FDR 5%")
            print(pw.to_string(index=False))
    if tmp:
        tmp.cleanup()
    bad = rec["verdict"].isin(["MISSED", "FALSE POSITIVE", "wrong sign"]).sum()
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
