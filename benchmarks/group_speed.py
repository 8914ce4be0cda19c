#!/usr/bin/env python
"""Group level at cohort scale: wall time, CPU time and peak memory of ``run_group``.

Writes ``--subjects`` x 2 sessions of ROI tables (8 labels each, tiny TSVs) and a
``participants.tsv`` to a temporary folder, then runs the whole group level (tables, statistics,
figures, report) once and prints one table with the time of each phase.  Target (issue 14):
1,000 subjects x 2 sessions in <= 15 s.

    python benchmarks/group_speed.py [--subjects 1000] [--no-figures] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qsmprep.publish import mark_complete  # noqa: E402
from qsmprep.group import run_group  # noqa: E402

STRUCTS = {"caudate": 55.0, "putamen": 45.0, "pallidum": 130.0, "thalamus": 5.0}
HEADER = "index\tname\tstructure\themisphere\tmean_ppb\tmedian_ppb\tsd_ppb\tn_voxels\tvolume_mm3\n"


def write_cohort(root: Path, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    bids, out = root / "bids", root / "out"
    bids.mkdir(parents=True)
    rows = ["participant_id\tgroup\tage\tsex"]
    for i in range(1, n + 1):
        grp = "MS" if i % 2 else "HC"
        rows.append(f"sub-{i:04d}\t{grp}\t{30 + i % 40}\t{'F' if i % 3 else 'M'}")
        u = rng.normal(0, 10)
        for t, ses in enumerate(("baseline", "followup")):
            d = out / f"sub-{i:04d}" / f"ses-{ses}" / "anat"
            d.mkdir(parents=True)
            lines = [HEADER]
            k = 0
            for s, base in STRUCTS.items():
                for h in ("left", "right"):
                    k += 1
                    v = base + u + 3 * t + (8 if grp == "MS" else 0) + rng.normal(0, 3)
                    lines.append(f"{k}\t{h}_{s}\t{s}\t{h}\t{v:.3f}\t{v:.3f}\t10\t50\t400\n")
            (d / f"sub-{i:04d}_ses-{ses}_atlas-DGM_desc-dgm_stats.tsv").write_text("".join(lines))
        mark_complete(out, f"{i:04d}")  # the group level reads only completed subjects
    (bids / "participants.tsv").write_text("\n".join(rows) + "\n")
    return bids, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", type=int, default=1000)
    ap.add_argument("--no-figures", action="store_true")
    ap.add_argument("--profile", action="store_true", help="print the 25 most expensive functions")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        bids, out = write_cohort(Path(tmp), args.subjects)
        t_write = time.perf_counter() - t0
        prof = cProfile.Profile() if args.profile else None
        w0, c0 = time.perf_counter(), time.process_time()
        if prof:
            prof.enable()
        res = run_group(bids, out, covariates=("age", "sex"), figures=not args.no_figures)
        if prof:
            prof.disable()
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"| subjects x sessions | write tables (s) | group level wall (s) | CPU (s) | peak RSS (MB) | figures |")
    print(f"|---|---|---|---|---|---|")
    print(f"| {args.subjects} x 2 | {t_write:.1f} | {wall:.1f} | {cpu:.1f} | {peak:.0f} | "
          f"{'no' if args.no_figures else len(res['figures'])} |")
    if prof:
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
