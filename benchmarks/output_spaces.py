"""--output-spaces on a finished output: agreement with the ROI tables, and resampling cost.

Reads a qsmprep output folder made with ``--output-spaces MNI152NLin2009cAsym[:res-N]`` (longitudinal
path) and prints one table per structure: template-space mean (over the atlas label, inside the
template-space QSM mask) minus the GRE-grid ROI mean of ``*_desc-dgm_stats.tsv`` (ppb), and
the structure's within-label SD for scale. It also redoes one session's resampling from the
*published* transforms (GRE->T1w, T1w->template, template->atlas) and reports its wall/CPU time,
peak memory, and the largest difference to the published template-space Chimap (the published
transforms must reproduce it).

Usage: python benchmarks/output_spaces.py OUTPUT_DIR [--res 2]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd

from qsmprep.atlas import load_atlas, resample_to_grid
from qsmprep.spaces import resample_to_space, template_grid

SPACE = "MNI152NLin2009cAsym"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("output_dir", type=Path)
    ap.add_argument("--res", type=int, default=2, help="the res-N of the run (0: template grid)")
    args = ap.parse_args(argv)
    out = args.output_dir
    res = args.res or None
    ent = f"space-{SPACE}" + (f"_res-{res}" if res else "")
    atlas = load_atlas(None)
    tpl = nb.load(str(atlas.template))
    aff, shape = template_grid(tpl.affine, tpl.shape, res)
    dimg = nb.load(str(atlas.dseg))
    labels = resample_to_grid(np.asarray(dimg.dataobj), dimg.affine, shape, aff, order=0)

    rows = []
    chis = sorted(out.glob(f"sub-*/ses-*/anat/*_{ent}_desc-*_Chimap.nii.gz"))
    if not chis:
        raise SystemExit(f"no *_{ent}_desc-*_Chimap.nii.gz under {out}: run with --output-spaces")
    for chi_file in chis:
        anat = chi_file.parent
        prefix = chi_file.name.split(f"_{ent}")[0]
        chi = np.asarray(nb.load(chi_file).dataobj, dtype=float) * 1000.0
        mask = np.asarray(nb.load(anat / f"{prefix}_{ent}_desc-brain_mask.nii.gz").dataobj) > 0
        stats = pd.read_csv(next(anat.glob(f"{prefix}_atlas-*_desc-dgm_stats.tsv")), sep="\t",
                            na_values="n/a")
        for r in stats.to_dict("records"):
            if not r["n_voxels"] >= 20:
                continue
            sel = (labels == r["index"]) & mask
            rows.append({"structure": r["structure"], "session": prefix,
                         "diff_ppb": chi[sel].mean() - r["mean_ppb"], "sd_ppb": r["sd_ppb"],
                         "n_gre": r["n_voxels"], "n_template": int(sel.sum())})
    df = pd.DataFrame(rows)
    tab = df.groupby("structure").agg(
        labels_x_sessions=("diff_ppb", "size"), mean_diff_ppb=("diff_ppb", "mean"),
        mae_ppb=("diff_ppb", lambda d: d.abs().mean()), max_abs_ppb=("diff_ppb", lambda d: d.abs().max()),
        sd_within_ppb=("sd_ppb", "mean"), worst_ratio_to_sd=("diff_ppb", "size"))
    tab["worst_ratio_to_sd"] = df.assign(q=df.diff_ppb.abs() / df.sd_ppb).groupby("structure").q.max()
    print(f"Template-space ({ent}) minus GRE-grid ROI mean, per structure (labels with >= 20 GRE voxels)")
    print(tab.round(2).to_string())
    print(f"all: n={len(df)}, mean {df.diff_ppb.mean():+.2f} ppb, MAE {df.diff_ppb.abs().mean():.2f} ppb, "
          f"max |d| {df.diff_ppb.abs().max():.2f} ppb, max |d|/SD {(df.diff_ppb.abs() / df.sd_ppb).max():.2f}")

    # one session redone from the published transforms
    chi_file = chis[0]
    anat = chi_file.parent
    prefix = chi_file.name.split(f"_{ent}")[0]
    sub = prefix.split("_")[0]
    native = next(anat.glob(f"{prefix}_desc-*_Chimap.nii.gz"))
    chain = [out / sub / "anat" / f"{sub}_from-individual_to-{SPACE}_mode-image_xfm.h5",
             anat / f"{prefix}_from-T1w_to-individual_mode-image_xfm.mat",
             anat / f"{prefix}_from-MEGRE_to-T1w_mode-image_xfm.mat"]
    missing = [p.name for p in chain if not p.exists()]
    if missing:
        print(f"(timing skipped: transforms not published for the longitudinal path: {missing})")
        return
    with tempfile.TemporaryDirectory() as tmp:
        t0, c0 = time.perf_counter(), time.process_time()
        again = resample_to_space(native, atlas.template, chain, Path(tmp) / "chi.nii.gz",
                                  resolution_mm=res)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        diff = np.abs(np.asarray(nb.load(again).dataobj) - np.asarray(nb.load(chi_file).dataobj)).max()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print()
    print("| session | grid | wall s | CPU s | peak RSS MB (process) | max |redo - published| ppm |")
    print("|---|---|---|---|---|---|")
    print(f"| {prefix} | {shape} @ {res or 1} mm | {wall:.2f} | {cpu:.2f} | {peak:.0f} | {diff:.2e} |")


if __name__ == "__main__":
    main()
