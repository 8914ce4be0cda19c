#!/usr/bin/env python
"""ROI erosion against change precision: a finished run's tables re-made at other erosions.

Reads a participant run of a simulated subject (the published Chimap, atlas labels and brain
mask of every session, on the GRE grid) and the simulator's truth, recomputes each session's
table with :func:`qsmprep.roi.roi_statistics` at every ``--erosions`` value (voxels, as
``--roi-erosion``; restricted, as qsmprep does, to the map's support), and prints per erosion:
the ROI voxel counts, the change error of every later session against the first (measured
change minus the change of the true map inside the true labels) and the table error (reported
mean minus the true label mean, both against the run's reference region: the Chimap's
support). The labels are the run's registered ones, so registration's share of the change
error is in these numbers; ``benchmarks/independent.py --roi-erosion N`` gives the same
comparison with true labels on the independent heads.

Usage::

    python benchmarks/roi_erosion.py OUT_DIR BIDS_DIR [--subject 01] [--erosions 0,1]

(``participant.py --work W`` leaves ``W/out-*`` and ``W/sim-*``.)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from participant import _native  # noqa: E402  (the published file on the GRE grid)

from qsmprep.simulate.cohort import TRUTH  # noqa: E402


def session_tables(out: Path, bids: Path, subject: str, session: str, erosions) -> dict:
    """``{erosion: DataFrame(index, name, mean_ppb, true_ppb, n_voxels)}`` of one session."""
    import nibabel as nb

    from qsmprep.qsm.kernels import voxel_size_from_affine
    from qsmprep.roi import roi_statistics

    an = out / f"sub-{subject}" / f"ses-{session}" / "anat"
    tr = bids / TRUTH / f"sub-{subject}" / f"ses-{session}" / "anat"
    img = nb.load(_native(an, "*_Chimap.nii.gz"))
    chi = np.asarray(img.dataobj, np.float64)
    labels = np.asarray(nb.load(_native(an, "*_dseg.nii.gz")).dataobj).astype(int)
    ref = chi != 0  # the published map's support: the reference region of mean referencing
    chi_t = np.asarray(nb.load(_native(tr, "*_desc-truth_Chimap.nii.gz")).dataobj, np.float64)
    lab_t = np.asarray(nb.load(_native(tr, "*_desc-truth_dseg.nii.gz")).dataobj).astype(int)
    ref_t = float(chi_t[ref].mean())
    published = pd.read_csv(next(an.glob("*_desc-dgm_stats.tsv")), sep="\t", na_values=["n/a"])
    table = published[["index", "name", "structure", "hemisphere"]]
    vox = voxel_size_from_affine(img.affine)  # as the ROI statistics interface reads it
    out_tabs = {}
    for er in erosions:
        t = roi_statistics(chi, labels, table, vox, mask=ref, erode_vox=int(er))
        t["true_ppb"] = [1e3 * (float(chi_t[lab_t == i].mean()) - ref_t) if (lab_t == i).any()
                         else np.nan for i in t["index"]]
        out_tabs[int(er)] = t[["index", "name", "mean_ppb", "true_ppb", "n_voxels"]].set_index("index")
    return out_tabs


def compare(out: Path, bids: Path, subject: str, sessions: list[str], erosions) -> pd.DataFrame:
    """One row per (erosion, session pair, ROI): measured and true change, their difference,
    and both sessions' table errors."""
    tabs = {ses: session_tables(out, bids, subject, ses, erosions) for ses in sessions}
    rows = []
    b = sessions[0]
    for er in erosions:
        tb = tabs[b][int(er)]
        for f in sessions[1:]:
            tf = tabs[f][int(er)]
            for i in tb.index:
                meas = tf.loc[i, "mean_ppb"] - tb.loc[i, "mean_ppb"]
                true = tf.loc[i, "true_ppb"] - tb.loc[i, "true_ppb"]
                rows.append({"erosion": int(er), "pair": f"{b}->{f}", "index": int(i),
                             "name": tb.loc[i, "name"], "n_voxels_first": int(tb.loc[i, "n_voxels"]),
                             "change_ppb": meas, "true_change_ppb": true, "change_err_ppb": meas - true,
                             "table_err_first": tb.loc[i, "mean_ppb"] - tb.loc[i, "true_ppb"],
                             "table_err_last": tf.loc[i, "mean_ppb"] - tf.loc[i, "true_ppb"]})
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="qsmprep output folder of the run")
    ap.add_argument("bids", type=Path, help="the simulated BIDS dataset (with its truth)")
    ap.add_argument("--subject", default="01")
    ap.add_argument("--erosions", default="0,1", help="comma-separated voxel counts")
    args = ap.parse_args(argv)
    erosions = [int(e) for e in args.erosions.split(",")]
    sessions = sorted(p.name[4:] for p in (args.out / f"sub-{args.subject}").glob("ses-*")
                      if p.is_dir())
    if len(sessions) < 2:
        ap.error(f"{args.out}/sub-{args.subject}: needs at least two sessions, found {sessions}")
    # the first session is the baseline: the simulator's own order when these are its names
    from qsmprep.simulate.config import session_names

    known = session_names(len(sessions))
    if sorted(known) == sessions:
        sessions = known
    df = compare(args.out, args.bids, args.subject, sessions, erosions)
    pd.set_option("display.width", 200)
    for er, g in df.groupby("erosion"):
        for pair, h in g.groupby("pair", sort=False):
            tab = np.abs(np.r_[h["table_err_first"], h["table_err_last"]])
            print(f"erosion {er}, {pair}: change error max {h['change_err_ppb'].abs().max():.2f} "
                  f"mean {h['change_err_ppb'].abs().mean():.2f} ppb; table error max "
                  f"{np.nanmax(tab):.1f} mean {np.nanmean(tab):.1f} ppb")
        print(g[["pair", "name", "n_voxels_first", "true_change_ppb", "change_err_ppb"]]
              .round(2).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
