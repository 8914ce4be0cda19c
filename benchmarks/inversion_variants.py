"""Dipole-inversion variants on the local field of a finished participant run (own simulator).

Reads the ``bf_removal``, ``total_field`` and ``load_gre`` outputs of one session from the work
folder of a ``benchmarks/participant.py`` run (1 mm preset: the simulated subject's BIDS folder
holds the truth under ``derivatives/qsmprep-truth``), re-runs only
:func:`qsmprep.qsm.pipeline.run_inversion` (``medi`` unless a variant names another method) and
mean referencing for each variant, and prints the whole-brain NRMSE inside the eroded mask and
the error of every true DGM label's mean (ppb), both maps referenced to their mean over that
mask. Used for the L1 data-fidelity threshold in docs/validation.md ("L1 data fidelity").

Usage::

    python benchmarks/participant.py --preset 1mm --work W --label base
    python benchmarks/inversion_variants.py --work W/work-base --bids W/sim-1mm-2ses-seed11 \\
        --session baseline --variants '{"l2": {}, "l1": {"data_fidelity": "l1"}}'

A variant is ``name: options``; the key ``method`` (popped) picks another inversion method.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import nibabel as nb
import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True, help="participant.py work folder")
    ap.add_argument("--bids", type=Path, required=True, help="the simulated subject's BIDS folder")
    ap.add_argument("--session", default="baseline")
    ap.add_argument("--subject", default="01")
    ap.add_argument("--variants", default='{"default": {}}', help="JSON: name -> options")
    args = ap.parse_args(argv)

    from qsmprep.interfaces._io import load, load_mask
    from qsmprep.qsm import pipeline
    from qsmprep.qsm.kernels import b0_direction_from_affine, voxel_size_from_affine

    q = args.work / "qsmprep_wf" / f"sub_{args.subject}_wf" / f"qsm_{args.session}_wf"
    local, img = load(q / "bf_removal" / "local_ppm.nii")
    mask = load_mask(q / "bf_removal" / "mask_eroded.nii")[0]
    rel = load(q / "total_field" / "reliability.nii")[0]
    mag = load(q / "load_gre" / "mag4d.nii")[0]
    tr = (args.bids / "derivatives" / "qsmprep-truth" / f"sub-{args.subject}"
          / f"ses-{args.session}" / "anat")
    chi_t = np.asarray(nb.load(next(tr.glob("*_desc-truth_Chimap.nii.gz"))).dataobj, float)
    lab = np.asarray(nb.load(next(tr.glob("*_desc-truth_dseg.nii.gz"))).dataobj).astype(int)
    vox, b0 = voxel_size_from_affine(img.affine), b0_direction_from_affine(img.affine)
    truth = chi_t - chi_t[mask].mean()
    labels = [int(v) for v in np.unique(lab[mask]) if v > 0]
    print(f"# sub-{args.subject} ses-{args.session}: NRMSE inside the eroded mask (%), error of "
          "each true label's mean (ppb), both maps mean-referenced over that mask")
    print(f"{'variant':14s} {'NRMSE':>6s} {'max':>6s}  " + " ".join(f"{v:>6d}" for v in labels)
          + "   cpu_s")
    for name, opts in json.loads(args.variants).items():
        opts = dict(opts)
        method = opts.pop("method", "medi")
        t0 = time.process_time()
        chi, _ = pipeline.run_inversion(local, mask, vox, b0, method, weights=rel, mag=mag, **opts)
        chi, _ = pipeline.run_referencing(chi, mask, "mean")
        err = [1e3 * (chi[lab == v].mean() - truth[lab == v].mean()) for v in labels]
        nrmse = 100 * np.linalg.norm((chi - truth)[mask]) / np.linalg.norm(truth[mask])
        print(f"{name:14s} {nrmse:6.1f} {max(map(abs, err)):6.2f}  "
              + " ".join(f"{e:+6.1f}" for e in err) + f"   {time.process_time() - t0:5.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
