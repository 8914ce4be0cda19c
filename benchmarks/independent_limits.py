"""What limits the whole-brain accuracy on the independent heads (issue 13 diagnosis).

For one acquisition of ``independent.py`` (read from its cache, simulated there if missing), the
default chain's brain mask and total field are computed once; then each variant below runs
background removal and dipole inversion (the package's step functions) and is scored against
the truth on the acquisition grid, both maps referenced to their mean over the evaluated region
(``ev``: the variant's final mask, the computed brain mask and the true brain; for the
``true local`` variants the true brain):

``default``
    the default chain (``auto`` background removal, i.e. PDF at these voxels, then MEDI);
``mask+3mm``
    the same with the computed mask dilated by 3 mm into the CSF rim (the field refitted in
    it): are the cortical voxels lost because PDF's sources sit right next to them?
``forward field``
    PDF + MEDI on the noise-free dipole field of the acquisition-grid truth (whole field of
    view, zero padded; no shim, phase offset, noise or k-space truncation), computed mask: what
    background removal loses even with a perfect field;
``true local [+ inversion]``
    no background removal: the inversion of the dipole field of the true susceptibility inside
    the true brain (demeaned there), on the true brain mask: what the inversion alone loses
    (MEDI default, MEDI with 200 iterations, RTS);
``default, RTS``
    the default chain with RTS instead of MEDI.

Columns: ``NRMSE`` (%, inside ``ev``), ``NRMSE-ctx`` (the same outside the cortical ribbon,
qsm-forward tissue class grey matter: the outer 3 mm of the brain), ``ctx%`` (share of the
squared error inside the ribbon), ``ctx`` / ``wm`` (mean error in the ribbon / white matter,
ppb), per-structure |error| inside the true labels (ppb, mean of left and right) and its
maximum, CPU s of the variant.

Usage::

    nice -n 10 .venv/bin/python benchmarks/independent_limits.py --seeds 1 2 --cache-dir DIR
        [--acq axial] [--variants default,forward_field,...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import independent as IND  # noqa: E402
import independent_head as H  # noqa: E402

from qsmprep.qsm import kernels  # noqa: E402
from qsmprep.qsm.masking import dilate_mm  # noqa: E402
from qsmprep.qsm.pipeline import (QSMOptions, run_background_removal, run_field_fit,  # noqa: E402
                                  run_inversion, run_masking)

VARIANTS = ["default", "mask+3mm", "forward_field", "true_local", "true_local_medi200",
            "true_local_rts", "default_rts"]


def score(chi, final_mask, d, mask):
    """Scores of one map (module docstring)."""
    brain = d["brain_mask"].astype(bool)
    ev = final_mask & brain & mask
    est = IND._demean(chi, ev)
    tru = IND._demean(d["chi"], ev)
    err = est - tru
    ctx = ev & (d["tissue"] == H.T_GM)
    rest = ev & ~ctx
    out = {"ev": ev.sum() / brain.sum(),
           "nrmse": 100 * np.linalg.norm(err[ev]) / np.linalg.norm(tru[ev]),
           "nrmse_noctx": 100 * np.linalg.norm(err[rest]) / np.linalg.norm(tru[rest]),
           "ctx_share": 100 * (err[ctx] ** 2).sum() / (err[ev] ** 2).sum(),
           "ctx": 1e3 * err[ctx].mean(), "wm": 1e3 * err[ev & (d["tissue"] == H.T_WM)].mean()}
    table = H.label_table()
    for s in IND.STRUCTURES:
        errs = [1e3 * abs(err[(d["labels"] == i) & ev].mean())
                for i in table.loc[table["structure"] == s, "index"]]
        out[IND.ABBR[s]] = float(np.mean(errs))
    out["max"] = max(out[IND.ABBR[s]] for s in IND.STRUCTURES)
    return out


def run(seed, acq, cache_dir, variants):
    d = IND.load_acquisition(seed, acq, 8.0, cache_dir)
    aff = d["affine"]
    vox = tuple(float(v) for v in kernels.voxel_size_from_affine(aff))
    b0_dir = kernels.b0_direction_from_affine(aff)
    mag, phase, tes, b0 = d["mag"], d["phase"], d["tes"], float(d["b0"])
    o = QSMOptions()
    mask, _ = run_masking(mag, phase, tes, vox, o.masking)
    fits = {}

    def fit(m, key):
        if key not in fits:
            f, _ = run_field_fit(phase, mag, tes, m, vox, b0, o.combination, o.unwrapping)
            fits[key] = (f["field_ppm"], f["reliability"])
        return fits[key]

    def chain(field, m, w, inv="medi", **inv_opts):
        local, final, _ = run_background_removal(field, m, vox, b0_dir, o.bf_removal, weights=w)
        chi, _ = run_inversion(local, final, vox, b0_dir, inv, weights=w, mag=mag, **inv_opts)
        return chi, final

    brain = d["brain_mask"].astype(bool)
    truth = np.asarray(d["chi"], np.float64)
    rows = []
    for v in variants:
        c0 = time.process_time()
        if v in ("default", "default_rts"):
            field, w = fit(mask, "mask")
            chi, final = chain(field, mask, w, inv="rts" if v == "default_rts" else "medi")
        elif v == "mask+3mm":
            m = dilate_mm(mask, vox, 3.0) & (mag[..., 0] > 0)
            field, w = fit(m, "mask+3mm")
            chi, final = chain(field, m, w)
        elif v == "forward_field":
            _, w = fit(mask, "mask")
            field = kernels.forward_field(truth, vox, b0_dir, pad=48).astype(np.float32)
            chi, final = chain(field, mask, w)
        elif v.startswith("true_local"):
            inside = np.where(brain, truth - truth[brain].mean(), 0.0)
            local = (kernels.forward_field(inside, vox, b0_dir, pad=32) * brain).astype(np.float32)
            inv, opts = {"true_local": ("medi", {}), "true_local_medi200": ("medi", {"n_iter": 200}),
                         "true_local_rts": ("rts", {})}[v]
            chi, _ = run_inversion(local, brain, vox, b0_dir, inv, weights=brain.astype(np.float32),
                                   mag=mag, **opts)
            final = brain
        else:
            raise SystemExit(f"unknown variant {v!r}; choose from {VARIANTS}")
        sc = score(chi, final, d, mask if not v.startswith("true_local") else brain)
        sc.update(seed=seed, acq=acq, variant=v, cpu=time.process_time() - c0)
        rows.append(sc)
        print(fmt(sc), flush=True)
    return rows


HEADER = (f"{'seed':>4s} {'acq':7s} {'variant':19s} | {'ev':>4s} {'NRMSE':>5s} {'-ctx':>5s} "
          f"{'ctx%':>4s} {'ctx':>6s} {'wm':>5s} | "
          + " ".join(f"{a:>4s}" for a in IND.ABBR.values()) + f" {'max':>4s} | {'cpu':>4s}")


def fmt(r):
    return (f"{r['seed']:>4d} {r['acq']:7s} {r['variant']:19s} | {r['ev']:4.2f} {r['nrmse']:5.1f} "
            f"{r['nrmse_noctx']:5.1f} {r['ctx_share']:4.0f} {r['ctx']:+6.1f} {r['wm']:+5.1f} | "
            + " ".join(f"{r[a]:4.1f}" for a in IND.ABBR.values()) + f" {r['max']:4.1f} | {r['cpu']:4.0f}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[IND.TUNE_SEED, IND.HELD_OUT_SEED])
    p.add_argument("--acq", default="axial", choices=["axial", "followup", "oblique"])
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()))
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*iteration cap.*")
    print(HEADER, flush=True)
    rows = []
    for seed in args.seeds:
        rows += run(seed, args.acq, args.cache_dir, args.variants.split(","))
    print("\n" + HEADER)
    for r in rows:
        print(fmt(r))


if __name__ == "__main__":
    main()
