#!/usr/bin/env python
"""Registration quality metrics on good and deliberately broken registrations (thresholds).

For one simulated subject (two sessions, ``--preset``), runs the two per-session rigid
registrations of the participant level with quality metrics on

* ``good``: the simulator's files as written;
* ``swap+80mm``: the T1w (and its brain mask) with the first two voxel axes of its affine
  swapped and the origin moved by 80 mm (issue 11's example of a wrong T1w header);
* ``shift80``: the T1w origin moved by 80 mm only (centre-of-mass initialisation recovers this;
  the registration is right and must not be flagged);
* ``lr-flip``: the T1w's left-right axis mirrored in its affine (a rigid transform cannot undo
  a reflection; the brain's near-symmetry makes this the hard case);

and prints, per case, ``gre_to_t1w_gc``, ``gre_to_t1w_overlap`` (GRE magnitude -> T1w, brain
masks from the simulator's truth) and ``t1w_to_template_ncc`` (this session's T1w -> the other
session's unmodified T1w, standing in for the subject template), with the verdict of
:func:`qsmprep.registration_qc.assess` for the thresholds in
:data:`qsmprep.registration_qc.THRESHOLDS`.

    python benchmarks/registration_qc.py [--preset small|1mm] [--seed 3] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nb
import numpy as np


def write_session(d, root: Path, tag: str) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    files = {}
    for key, arr, aff in (("mag", d.mag[..., 0], d.affine),
                          ("gre_mask", d.brain_mask.astype(np.uint8), d.affine),
                          ("t1w", d.t1w, d.t1w_affine),
                          ("t1w_mask", d.t1w_brain_mask.astype(np.uint8), d.t1w_affine)):
        fn = root / f"{tag}_{key}.nii.gz"
        nb.Nifti1Image(np.asarray(arr, np.float32 if key in ("mag", "t1w") else np.uint8),
                       aff).to_filename(fn)
        files[key] = str(fn)
    return files


def bids_session(bids: Path, ses: str) -> dict:
    an = bids / "sub-01" / f"ses-{ses}" / "anat"
    tr = bids / "derivatives" / "qsmprep-truth" / "sub-01" / f"ses-{ses}" / "anat"
    pre = f"sub-01_ses-{ses}"
    return {"mag": str(an / f"{pre}_echo-1_part-mag_MEGRE.nii.gz"),
            "gre_mask": str(tr / f"{pre}_desc-truth_mask.nii.gz"),
            "t1w": str(an / f"{pre}_T1w.nii.gz"),
            "t1w_mask": str(tr / f"{pre}_space-T1w_desc-truth_mask.nii.gz")}


def broken_affine(aff: np.ndarray, case: str) -> np.ndarray:
    out = aff.copy()
    if case == "swap+80mm":
        out[:, [0, 1]] = aff[:, [1, 0]]
        out[0, 3] += 80.0
    elif case == "shift80":
        out[0, 3] += 80.0
    elif case == "lr-flip":
        out[0, :] = -aff[0, :]  # world x -> -x: the head is mirrored about the midline
    return out


def with_affine(src: str, aff: np.ndarray, dest: Path) -> str:
    img = nb.load(src)
    nb.Nifti1Image(np.asarray(img.dataobj), aff, img.header).to_filename(dest)
    return str(dest)


def main(argv=None) -> int:
    from qsmprep import registration as R
    from qsmprep.registration_qc import THRESHOLDS, assess
    from qsmprep.simulate import simulate_session

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--cases", nargs="+", default=["good", "swap+80mm", "shift80", "lr-flip"])
    ap.add_argument("--bids", type=Path, default=None,
                    help="use sub-01 (sessions baseline, followup) of an existing simulated "
                         "dataset (e.g. the one benchmarks/participant.py wrote) instead of "
                         "simulating")
    args = ap.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="qsmprep-regqc-"))
    t0 = time.time()
    if args.bids:
        f0, f1 = (bids_session(args.bids, ses) for ses in ("baseline", "followup"))
        args.preset = f"{args.preset} ({args.bids.name})"
    else:
        s0 = simulate_session(1, 0, preset=args.preset, seed=args.seed)
        s1 = simulate_session(1, 1, preset=args.preset, seed=args.seed)
        f0 = write_session(s0, work / "ses0", "ses0")
        f1 = write_session(s1, work / "ses1", "ses1")
    print(f"# registration QC: preset {args.preset}, seed {args.seed}, simulation "
          f"{time.time() - t0:.0f} s; thresholds {json.dumps(THRESHOLDS)}")
    rows = []
    for case in args.cases:
        files = dict(f1)
        if case != "good":
            for key in ("t1w", "t1w_mask"):
                img = nb.load(f1[key])
                files[key] = with_affine(f1[key], broken_affine(img.affine, case),
                                         work / f"{case}_{key}.nii.gz")
        out = work / f"out-{case}"
        t1 = time.time()
        R.register_rigid(files["t1w"], files["mag"], out_dir=out / "gre", src="MEGRE",
                         dst="T1w", fixed_mask=files["t1w_mask"], moving_mask=files["gre_mask"],
                         num_threads=args.threads, qc_name="gre_to_t1w", qc_file=out / "gre.json")
        R.register_rigid(f0["t1w"], files["t1w"], out_dir=out / "t1w", src="T1w",
                         dst="template", num_threads=args.threads, qc_name="t1w_to_template",
                         qc_file=out / "t1w.json")
        dt = time.time() - t1
        metrics = {}
        for js in ("gre.json", "t1w.json"):
            metrics.update(json.loads((out / js).read_text())["RegistrationQuality"]["Metrics"])
        metrics = {k: (np.nan if v is None else v) for k, v in metrics.items()}
        flagged, reasons = assess(metrics)
        rows.append((case, metrics, flagged, reasons, dt))
    names = list(rows[0][1])
    print(f"{'case':<10} " + " ".join(f"{n:>22}" for n in names) + "  flagged  seconds")
    for case, m, flagged, reasons, dt in rows:
        print(f"{case:<10} " + " ".join(f"{m[n]:>22.3f}" for n in names)
              + f"  {flagged:>7}  {dt:>7.1f}")
    for case, _, _, reasons, _ in rows:
        if reasons:
            print(f"  {case}: " + "; ".join(reasons))
    return 0


if __name__ == "__main__":
    sys.exit(main())
