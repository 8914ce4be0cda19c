"""What MEDI's iteration cap says: its last relative change against what longer solves change.

The default MEDI stops at its 50-iteration budget in every run without reaching ``tol = 1e-3``.
Is the map then wrong, and does the last relative change tell a wrong map from a right one?
For each dataset the default chain runs to the local field; MEDI is then solved with each
budget of ``--iters`` (each from scratch) and the table prints, per budget, the last relative
change, the largest difference of the DGM label means against the longest budget (ppb) and, where
the truth is known, the largest error of the label means (ppb; label means inside the final mask,
both maps referenced to their mean there). ``resid/sd``: the field residual that the Chimap
sidecar records (``qsmprep.qsm.inversion.field_residual``): RMS over the final mask of ``D chi -
f`` divided by the echo fit's field noise SD, i.e. how much of the field the map leaves
unexplained, in units of the noise (the discrepancy principle). ``local``: the largest RMS of the
same ratio over 12 mm boxes (:func:`local_residual_max`; not computed by the package).

Datasets (``--datasets``):

* ``own-small``, ``own-1mm``: qsmprep's simulator (3 mm and 1 mm presets, seed 11, SNR 100;
  cached by ``accuracy.load_session``);
* ``indep1``, ``indep2`` (``:oblique`` for the 8-degree tilted acquisition): the independent
  heads of ``independent.py`` (needs the ``independent`` extra: qsm-forward);
* ``romeo``: the real 3-echo crop in ``../shared/data/romeo-small-megre`` (TEs 4/8/12 ms, 3 T as
  in its upstream tests; no truth);
* ``bad-total``, ``bad-wrap``, ``bad-noise`` (on ``indep1``): inputs that must give a wrong map:
  the total field inverted without background removal; the local field plus one phase wrap at
  the echo spacing in a 12 mm ball (an unwrapping error; ``bad-wrap:R`` for a ball of radius R
  mm); 0.02 ppm of white noise instead of a field.

``--matrix PRESET`` prints, instead, the field residual and the DGM error (max and mean over the
labels, ppb, against the truth) of every registered echo combination, unwrapping and background
removal method with ``medi`` and ``tkd`` on qsmprep's own head: where the residual's flag fires
on data that is not broken, and on which bad maps it does or does not.

Usage::

    nice -n 10 .venv/bin/python benchmarks/medi_budget.py --cache-dir DIR \\
        --datasets own-small,own-1mm,indep1,indep2,indep1:oblique,romeo,bad-total,bad-wrap,bad-noise
    nice -n 10 .venv/bin/python benchmarks/medi_budget.py --cache-dir DIR --matrix small
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from qsmprep.qsm import kernels  # noqa: E402
from qsmprep.qsm.inversion import field_misfit, field_residual  # noqa: E402
from qsmprep.qsm.pipeline import (QSMOptions, noise_sd_ppm, run_background_removal,  # noqa: E402
                                  run_field_fit, run_inversion, run_masking)

ROMEO = (Path(os.environ.get("QSMPREP_SHARED_DATA")
             or Path(__file__).resolve().parents[2] / "shared" / "data")
         / "romeo-small-megre" / "small")  # as tests/_paths.SHARED_DATA
ROMEO_TES = (0.004, 0.008, 0.012)
ROMEO_B0 = 3.0


def chain(mag, phase, tes, vox, b0, b0_dir):
    """The default chain up to the local field; returns a dict of the arrays the table needs."""
    o = QSMOptions()
    mask, _ = run_masking(mag, phase, tes, vox, o.masking)
    fit, _ = run_field_fit(phase, mag, tes, mask, vox, b0, o.combination, o.unwrapping)
    local, final, _ = run_background_removal(fit["field_ppm"], mask, vox, b0_dir, o.bf_removal,
                                             weights=fit["reliability"])
    sd = noise_sd_ppm(fit, b0)
    return {"field": fit["field_ppm"], "local": local, "final": final, "mask": mask,
            "w": fit["reliability"], "sd": sd, "vox": vox, "b0_dir": b0_dir, "mag": mag}



def local_residual_max(chi, local, region, vox, b0_dir, sd, half_width_mm=6.0):
    """Largest local RMS of ``(D chi - f) / sd`` over boxes of +-``half_width_mm`` (boxes at
    least half inside ``region``): a local form of the field residual, for errors confined to a
    small region (not computed by the package; measured here to see whether it would separate
    good from bad inputs better than the global RMS)."""
    from scipy import ndimage

    r = field_misfit(chi, local, region, vox, b0_dir)
    ok = region & (sd > 0)
    z2 = np.where(ok, (r / np.where(ok, sd, 1.0)) ** 2, 0.0)
    size = [max(1, int(round(2 * half_width_mm / v)) + 1) for v in vox]
    den = ndimage.uniform_filter(ok.astype(np.float64), size)
    num = ndimage.uniform_filter(z2, size)
    inside = ok & (den > 0.5)
    return float(np.sqrt(num[inside] / den[inside]).max())


def label_means_ppb(chi, labels, region, index):
    x = chi - chi[region].mean()
    return np.array([1e3 * x[(labels == i) & region].mean() if ((labels == i) & region).any()
                     else np.nan for i in index])


def _own(preset, cache_dir):
    import accuracy as ACC

    d = ACC.load_session(preset, 11, 100.0, cache_dir)
    vox = tuple(float(v) for v in kernels.voxel_size_from_affine(d["affine"]))
    c = chain(d["mag"], d["phase"], d["tes"], vox, float(d["b0"]),
              kernels.b0_direction_from_affine(d["affine"]))
    c.update(labels=d["labels"], chi=d["chi"], index=sorted(set(np.unique(d["labels"])) - {0}))
    return c


def _indep(seed, acq, cache_dir):
    import independent as IND
    import independent_head as H

    d = IND.load_acquisition(seed, acq, 8.0, cache_dir)
    vox = tuple(float(v) for v in kernels.voxel_size_from_affine(d["affine"]))
    c = chain(d["mag"], d["phase"], d["tes"], vox, float(d["b0"]),
              kernels.b0_direction_from_affine(d["affine"]))
    c.update(labels=d["labels"], chi=d["chi"], index=H.label_table()["index"].tolist(),
             tes=d["tes"], b0=float(d["b0"]))
    return c


def _romeo():
    import nibabel as nib

    from qsmprep.qsm.phase import choose_phase_values, detect_and_rescale_phase

    pimg, mimg = nib.load(ROMEO / "Phase.nii"), nib.load(ROMEO / "Mag.nii")
    values, _ = choose_phase_values(pimg.get_fdata(), np.asarray(pimg.dataobj.get_unscaled()))
    phase, _ = detect_and_rescale_phase(values)
    mag = np.asarray(mimg.dataobj.get_unscaled(), np.float32)
    vox = tuple(float(v) for v in pimg.header.get_zooms()[:3])
    return chain(mag, phase, np.array(ROMEO_TES), vox, ROMEO_B0,
                 kernels.b0_direction_from_affine(pimg.affine))


def wrap_ball(c, radius_mm=12.0, shift_vox=25):
    """One phase wrap at the mean echo spacing (ppm) in a ball off the final mask's centre."""
    jump = kernels.hz_to_ppm(1.0 / float(np.diff(c["tes"]).mean()), c["b0"])
    centre = np.array(np.nonzero(c["final"])).mean(1) + np.array([shift_vox, 0, 0])
    g = np.indices(c["final"].shape, dtype=np.float32)
    r2 = sum(((g[k] - centre[k]) * c["vox"][k]) ** 2 for k in range(3))
    return np.where(r2 < radius_mm ** 2, jump, 0.0).astype(np.float32)


def dataset(name, cache_dir, _memo={}):
    """(arrays, local field to invert, region to invert in) for one dataset name."""
    if name in ("own-small", "own-1mm"):
        c = _own(name.split("-", 1)[1], cache_dir)
        return c, c["local"], c["final"]
    if name == "romeo":
        c = _romeo()
        return c, c["local"], c["final"]
    base = name.split(":")[0] if name.startswith("indep") else "indep1"
    seed = int(base[5:])
    acq = name.split(":")[1] if name.startswith("indep") and ":" in name else "axial"
    key = (seed, acq)
    if key not in _memo:
        _memo[key] = _indep(seed, acq, cache_dir)
    c = _memo[key]
    if name.startswith("indep"):
        return c, c["local"], c["final"]
    if name == "bad-total":
        m = c["mask"]
        return c, np.where(m, c["field"] - c["field"][m].mean(), 0).astype(np.float32), m
    if name == "bad-wrap" or name.startswith("bad-wrap:"):
        radius = float(name.split(":")[1]) if ":" in name else 12.0
        return c, ((c["local"] + wrap_ball(c, radius)) * c["final"]).astype(np.float32), c["final"]
    if name == "bad-noise":
        rng = np.random.default_rng(0)
        noise = rng.standard_normal(c["final"].shape).astype(np.float32) * np.float32(0.02)
        return c, noise * c["final"], c["final"]
    raise SystemExit(f"unknown dataset {name!r}")


def run(name, iters, cache_dir):
    c, local, region = dataset(name, cache_dir)
    maps, rows = {}, []
    for n in iters:
        info, c0 = {}, time.process_time()
        chi, _ = run_inversion(local, region, c["vox"], c["b0_dir"], "medi", weights=c["w"],
                               mag=c["mag"], info=info, n_iter=n)
        maps[n] = chi
        rows.append({"dataset": name, "n_iter": n, "change": info["final_change"],
                     "cpu": time.process_time() - c0,
                     "resid": field_residual(chi, local, region, c["vox"], c["b0_dir"], c["sd"]),
                     "local": local_residual_max(chi, local, region, c["vox"], c["b0_dir"],
                                                 c["sd"])})
    if "labels" in c:
        means = {n: label_means_ppb(maps[n], c["labels"], region, c["index"]) for n in iters}
        truth = (label_means_ppb(c["chi"], c["labels"], region, c["index"])
                 if not name.startswith("bad-noise") else None)
        for r in rows:
            r["vs_longest"] = float(np.nanmax(np.abs(means[r["n_iter"]] - means[iters[-1]])))
            if truth is not None:
                r["err"] = float(np.nanmax(np.abs(means[r["n_iter"]] - truth)))
    for r in rows:
        print(fmt(r), flush=True)
    return rows


def matrix(preset, cache_dir, inversions=("medi", "tkd")):
    """Field residual and DGM error of every registered combination, unwrapping and background
    removal method with ``inversions``, on qsmprep's own head (``--matrix PRESET``): does the
    flag fire on good data, and on which bad maps?"""
    import itertools

    import accuracy as ACC

    from qsmprep.qsm import methods
    from qsmprep.qsm.pipeline import reconstruct

    d = ACC.load_session(preset, 11, 100.0, cache_dir)
    index = sorted(set(np.unique(d["labels"])) - {0})
    print(f"{'combination':11s} {'unwrapping':10s} {'bf_removal':10s} {'inversion':9s} | "
          f"{'resid/sd':>8s} | {'DGM max':>7s} {'mean':>5s} (ppb)")
    rows = []
    for comb, unw, bf, inv in itertools.product(methods.names("combination"),
                                                methods.names("unwrapping"),
                                                methods.names("bf_removal"), inversions):
        r = reconstruct(d["mag"], d["phase"], d["tes"], float(d["b0"]), d["affine"],
                        QSMOptions(combination=comb, unwrapping=unw, bf_removal=bf, inversion=inv))
        m = r["eroded_mask"].astype(bool)
        err = np.abs(label_means_ppb(r["chi"], d["labels"], m, index)
                     - label_means_ppb(d["chi"], d["labels"], m, index))
        res = r["provenance"]["DipoleInversion"]["FieldResidual"]["RMSOverNoise"]
        rows.append((comb, unw, bf, inv, res, float(np.nanmax(err)), float(np.nanmean(err))))
        print(f"{comb:11s} {unw:10s} {bf:10s} {inv:9s} | {res:8.2f} | {rows[-1][5]:7.1f} "
              f"{rows[-1][6]:5.1f}", flush=True)
    return rows


HEADER = (f"{'dataset':16s} {'n_iter':>6s} | {'last change':>11s} {'resid/sd':>8s} "
          f"{'local':>6s} | {'DGM vs longest':>14s} {'DGM err':>7s} | {'cpu':>5s}")


def fmt(r):
    def num(k, f):
        return format(r[k], f) if k in r else "-".rjust(len(format(0.0, f)))
    return (f"{r['dataset']:16s} {r['n_iter']:6d} | {r['change']:11.4f} {r['resid']:8.2f} "
            f"{r['local']:6.1f} | "
            f"{num('vs_longest', '14.2f')} {num('err', '7.1f')} | {r['cpu']:5.1f}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default="own-small,romeo")
    p.add_argument("--iters", default="50,100", help="MEDI budgets, the default (50) first")
    p.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()))
    p.add_argument("--matrix", metavar="PRESET", help="instead: the field residual and DGM error of "
                   "every method combination on qsmprep's own head (small or 1mm)")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*iteration cap.*")
    logging.getLogger("qsmprep").setLevel(logging.ERROR)
    if args.matrix:
        return matrix(args.matrix, args.cache_dir)
    iters = [int(x) for x in args.iters.split(",")]
    print(HEADER, flush=True)
    rows = []
    for name in args.datasets.split(","):
        rows += run(name, iters, args.cache_dir)
    print("\n" + HEADER)
    for r in rows:
        print(fmt(r))
    return rows


if __name__ == "__main__":
    main()
