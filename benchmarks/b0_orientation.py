#!/usr/bin/env python
"""How well the participant level measures the head's orientation to B0 (change-table flag).

Simulates small longitudinal cohorts whose heads move between sessions by up to
``--motion-deg`` per axis (the simulator's rigid head motion, known exactly), once with axial
GRE slabs and once with every slab tilted by 15 degrees (``--oblique``: the slab turns, the
head does not, so the B0 direction in the head must not change), runs ``qsmprep participant``
on each through each registration path of ``--paths`` (``longitudinal``: the default, through
the within-subject template; ``cross``: ``--no-longitudinal``, each session to the atlas on
its own; ``gre-only``: the T1w files removed, the atlas registered to each GRE magnitude; the
extra paths on the axial cohort only), and compares

* per session, the B0 direction the ROI table reports in the atlas frame (``b0_x/y/z``) with
  the true B0 in the simulator's head frame (``head_to_scanner`` of the truth motion file;
  the atlas frame is that frame up to the subject's warp): ``vec err``;
* per subject, the change table's ``b0_angle_deg`` (the sessions' GRE magnitudes registered
  rigidly to each other) with the true angle between the sessions' B0 directions in the head:
  ``angle err``, and whether the flag (above :data:`qsmprep.b0_orientation.ANGLE_WARN_DEG`)
  agrees with the truth's side of it; ``atlas route err``: the same angle from the two ROI
  tables' ``b0_*`` vectors (what the group warning uses).

Prints one row per subject and a summary per cohort (time and peak memory of the participant
run: the B0 step itself is one ~1 s node per session).

    python benchmarks/b0_orientation.py [--subjects 3] [--motion-deg 6] [--preset small]
        [--seed 11] [--paths longitudinal,cross,gre-only] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from qsmprep.b0_orientation import ANGLE_WARN_DEG, angle_between_deg
from qsmprep.simulate.cohort import simulate_cohort
from qsmprep.simulate.config import SimulationConfig

BIN = Path(sys.executable).parent


def true_b0(truth: Path, sub: str, ses: str) -> np.ndarray:
    motion = json.loads(next((truth / f"sub-{sub}" / f"ses-{ses}" / "anat").glob(
        "*_desc-truth_motion.json")).read_text())
    return np.asarray(motion["head_to_scanner"])[:3, :3].T @ [0.0, 0.0, 1.0]


def simulate(root: Path, args, oblique: bool) -> Path:
    bids = root / "bids"
    if not bids.exists():
        cfg = SimulationConfig().with_(motion_deg=float(args.motion_deg))
        simulate_cohort(bids, n_subjects=args.subjects, n_sessions=2, preset=args.preset,
                        seed=args.seed, config=cfg, oblique=oblique)
    return bids


def without_t1w(bids: Path, dest: Path) -> Path:
    """A copy of ``bids`` without its T1w images (the truth derivatives stay)."""
    if not dest.exists():
        shutil.copytree(bids, dest, ignore=lambda d, names: [n for n in names if "_T1w." in n])
    return dest


def run_path(bids: Path, root: Path, truth: Path, label: str, extra: list) -> tuple[list, float, float]:
    t0 = time.perf_counter()
    proc = subprocess.run([str(BIN / "qsmprep"), str(bids), str(root / "out"), "participant",
                           "-w", str(root / "work"), "--nprocs", "2", "--omp-nthreads", "1",
                           *extra], capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"qsmprep participant failed:\n{proc.stderr[-4000:]}")
    # the largest resident set of any finished child so far (a running maximum over the runs)
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
    rows = []
    for subdir in sorted((root / "out").glob("sub-*/")):
        sub = subdir.name[4:]
        vec_err, tilt = [], []
        b0t = {}
        for ses in ("baseline", "followup"):
            b0t[ses] = true_b0(truth, sub, ses)
            st = pd.read_csv(subdir / f"ses-{ses}" / "anat" /
                             f"sub-{sub}_ses-{ses}_atlas-DGM_desc-dgm_stats.tsv", sep="\t")
            est = st[["b0_x", "b0_y", "b0_z"]].iloc[0].to_numpy(float)
            vec_err.append(angle_between_deg(est, b0t[ses]))
            tilt.append(f"{st['b0_tilt_deg'].iloc[0]:.1f}/"
                        f"{angle_between_deg(b0t[ses], [0, 0, 1]):.1f}")
        ch = pd.read_csv(subdir / "anat" / f"sub-{sub}_atlas-DGM_desc-dgmchange_stats.tsv",
                         sep="\t")
        est = float(ch["b0_angle_deg"].iloc[0])
        true = angle_between_deg(b0t["baseline"], b0t["followup"])
        vecs = [pd.read_csv(subdir / f"ses-{ses}" / "anat" /
                            f"sub-{sub}_ses-{ses}_atlas-DGM_desc-dgm_stats.tsv", sep="\t")
                [["b0_x", "b0_y", "b0_z"]].iloc[0].to_numpy(float) for ses in ("baseline", "followup")]
        atlas_route = angle_between_deg(*vecs)
        rows.append({"case": label, "subject": sub,
                     "tilt b/f (est/true)": " ".join(tilt),
                     "vec err max": max(vec_err), "angle true": true, "angle est": est,
                     "angle err": est - true, "atlas route err": atlas_route - true,
                     "flag ok": (est > ANGLE_WARN_DEG) == (true > ANGLE_WARN_DEG),
                     "flagged rows": int(ch["orientation_flagged"].sum())})
    return rows, wall, peak_gb


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--subjects", type=int, default=3)
    p.add_argument("--motion-deg", type=float, default=6.0,
                   help="largest head rotation per axis and session (default 6)")
    p.add_argument("--preset", default="small")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--paths", default="longitudinal,cross,gre-only",
                   help="registration paths (comma-separated; module docstring)")
    p.add_argument("--work", type=Path, default=None, help="keep the runs here")
    args = p.parse_args(argv)
    paths = [x for x in args.paths.split(",") if x]
    for x in paths:
        if x not in ("longitudinal", "cross", "gre-only"):
            p.error(f"unknown path {x!r}")
    base = args.work or Path(tempfile.mkdtemp(prefix="qsmprep-b0-"))
    cases = [(False, "longitudinal"), (True, "longitudinal"),
             (False, "cross"), (False, "gre-only")]
    rows, summary = [], []
    for oblique, path in cases:
        if path not in paths:
            continue
        slab = "oblique" if oblique else "axial"
        root = base / slab
        bids = simulate(root, args, oblique)
        truth = bids / "derivatives" / "qsmprep-truth"
        extra = ["--no-longitudinal"] if path == "cross" else []
        if path == "gre-only":
            bids = without_t1w(bids, root / "bids-no-t1w")
        label = f"{'oblique 15' if oblique else 'axial'}, {path}"
        r, wall, peak = run_path(bids, root / ("" if path == "longitudinal" else path), truth,
                                 label, extra)
        rows += r
        df = pd.DataFrame(r)
        summary.append({"case": label, "subjects": len(r),
                        "angle |err| max": df["angle err"].abs().max(),
                        "atlas route |err| max": df["atlas route err"].abs().max(),
                        "vec err max": df["vec err max"].max(),
                        "flags right": f"{int(df['flag ok'].sum())}/{len(r)}",
                        "participant s": round(wall), "peak GB (running max)": round(peak, 2)})
    pd.set_option("display.width", 200)
    print(f"# {args.subjects} subject(s) x 2 sessions, preset {args.preset}, head motion up to "
          f"{args.motion_deg:g} deg per axis, seed {args.seed}; angles in degrees")
    print(pd.DataFrame(rows).round(2).to_string(index=False))
    print()
    print(pd.DataFrame(summary).round(2).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
