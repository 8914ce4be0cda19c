"""R2* on the independent (qsm-forward) heads: per-label signed errors, per fit method.

Loads the cached acquisitions of ``independent.py`` (nothing is simulated unless
``--decompose``), computes the brain mask with the default masking step (as ``independent.py``
does), fits R2* with every method of :mod:`qsmprep.qsm.relaxometry` and an unweighted NLLS
comparator (``nlls``) and prints, per DGM label, the mean fitted R2* minus the mean true R2*
(1/s) inside ``label & mask`` -- the ``r2s`` column of ``independent.py`` is the maximum |error|
of the default method. ``int`` repeats it inside the labels eroded by one voxel (3-D,
6-connected, as the participant table's ``--roi-erosion auto``), which leaves out the voxels
whose signal mixes the label with its neighbours.

``--decompose`` (axial acquisition only) rebuilds the head and re-images it noise-free
(qsm-forward, the same calls as ``independent_head.acquire`` with ``peak_snr = inf``) twice:
with the field and phase offset (``clean``) and without them (``nofield``: no intravoxel
dephasing, so what is left is the k-space crop of a sum of exponentials); both are cached in
``--cache-dir``. (Check: |acquired| minus ``clean`` has the same RMS at every echo, the noise SD,
so ``clean`` is the acquired signal without its noise.) Per label::

    noisy - truth = (noisy - clean) + (clean - nofield) + (nofield - truth)
                     noise              through-slice      partial volume / crop
                                        dephasing          (sinc kernel, Gibbs)

``sinc[:floor[:smooth_mm]]`` in ``--methods`` is the ``loglinear`` fit with
``field_correction="sinc"`` (:func:`qsmprep.qsm.relaxometry.dephasing_factor`; default floor 0.3,
no smoothing) using qsmprep's own total field: the default echo combination and unwrapping
(:func:`qsmprep.qsm.pipeline.run_field_fit`) inside the computed mask, cached as
``..._r2sfield.npz`` in ``--field-dir`` (default ``--cache-dir``). In the decomposition the
noisy and the noise-free (``clean``) signal are corrected with that same field; ``nofield`` is
left as it is (no field, nothing to correct).

Usage::

    nice -n 19 .venv/bin/python benchmarks/r2star_independent.py --seeds 1 2 \
        --cache-dir CACHE_DIR [--acqs axial,followup,oblique] [--decompose] \
        [--methods loglinear,sinc,sinc:0.5:1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
import independent as indep  # noqa: E402
import independent_head as H  # noqa: E402

from qsmprep.qsm import relaxometry  # noqa: E402
from qsmprep.qsm.kernels import ppm_to_hz  # noqa: E402
from qsmprep.qsm.pipeline import QSMOptions, run_field_fit, run_masking  # noqa: E402


def r2star_nlls(mag4d, tes, mask, n_iter=20, r2star_max=500.0):
    """Comparator, not a qsmprep method: unweighted non-linear least squares of
    ``m_e = S0 exp(-R2* TE_e)`` (Gauss-Newton on (S0, R2*), started from the weighted log-linear
    fit), the reference fit of Pei et al. MRM 2015;73:843 (ARLO)."""
    m = mag4d[mask].astype(np.float64)
    tes = np.asarray(tes, np.float64)
    r2 = relaxometry.r2star_loglinear(mag4d, tes, mask)[mask].astype(np.float64)
    e = np.exp(-r2[:, None] * tes)
    s0 = (m * e).sum(1) / (e * e).sum(1)
    for _ in range(n_iter):
        e = np.exp(-r2[:, None] * tes)
        res = m - s0[:, None] * e
        ja, jr = e, -s0[:, None] * tes * e
        a11, a12, a22 = (ja * ja).sum(1), (ja * jr).sum(1), (jr * jr).sum(1)
        b1, b2 = (ja * res).sum(1), (jr * res).sum(1)
        det = a11 * a22 - a12**2
        ok = det > 0
        s0 = s0 + np.where(ok, (a22 * b1 - a12 * b2) / np.where(ok, det, 1.0), 0.0)
        r2 = r2 + np.where(ok, (a11 * b2 - a12 * b1) / np.where(ok, det, 1.0), 0.0)
    out = np.zeros(mask.shape, np.float32)
    out[mask] = np.clip(np.nan_to_num(r2), 0.0, r2star_max)
    return out


def fit(method, mag, tes, mask, field_hz=None, voxel_size=None):
    """A registered method of :mod:`qsmprep.qsm.relaxometry`, the ``nlls`` comparator, or
    ``sinc[:floor[:smooth_mm]]`` (``loglinear`` with ``field_correction="sinc"``)."""
    if method == "nlls":
        return r2star_nlls(mag, tes, mask)
    if method.startswith("sinc"):
        parts = method.split(":")
        floor = float(parts[1]) if len(parts) > 1 else 0.3
        smooth = float(parts[2]) if len(parts) > 2 else 0.0
        return relaxometry.r2star_loglinear(mag, tes, mask, field_correction="sinc",
                                            correction_floor=floor, correction_smooth_mm=smooth,
                                            field_hz=field_hz, voxel_size=voxel_size)
    return relaxometry.r2star_t2star(mag, tes, mask, method=method)[0]


def voxel_size(d):
    return tuple(float(v) for v in np.linalg.norm(np.asarray(d["affine"])[:3, :3], axis=0))


def total_field_hz(seed, acq, d, mask, args):
    """qsmprep's total field (Hz; default combination and unwrapping inside ``mask``), cached."""
    vox = "" if args.sim_vox == 1.0 else f"_vox{args.sim_vox:g}"
    path = (args.field_dir or args.cache_dir) / \
        f"qsmprep_independent_seed{seed}_{acq}_tilt{args.tilt:g}{vox}_r2sfield.npz"
    if path.exists():
        z = np.load(path)
        if np.array_equal(z["mask"], mask):
            return ppm_to_hz(z["field_ppm"].astype(np.float64), float(d["b0"]))
    o = QSMOptions()
    t0 = time.process_time()
    res, _ = run_field_fit(d["phase"], d["mag"], d["tes"], mask, voxel_size(d), float(d["b0"]),
                           o.combination, o.unwrapping)
    print(f"# seed {seed} {acq}: total field in {time.process_time() - t0:.0f} s CPU", flush=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, field_ppm=res["field_ppm"], mask=mask)
    tmp.replace(path)
    return ppm_to_hz(res["field_ppm"].astype(np.float64), float(d["b0"]))


def computed_mask(d):
    """The default chain's brain mask (what ``independent.py`` fits R2* inside)."""
    mask, _ = run_masking(d["mag"], d["phase"], d["tes"], voxel_size(d), QSMOptions().masking)
    return mask


def label_errors(r2, truth, labels, mask):
    """Per label: mean fitted minus mean true R2* in ``label & mask`` and in its interior."""
    out = {}
    for rec in H.label_table().to_dict("records"):
        lab = labels == rec["index"]
        sel = lab & mask
        inner = ndimage.binary_erosion(lab) & mask
        if not sel.any():
            out[rec["name"]] = {"n": 0, "true": np.nan, "err": np.nan, "err_int": np.nan}
            continue
        out[rec["name"]] = {
            "n": int(sel.sum()), "true": float(truth[sel].mean()),
            "err": float(r2[sel].mean() - truth[sel].mean()),
            "err_int": float(r2[inner].mean() - truth[inner].mean()) if inner.any() else np.nan}
    return out


def _noise_free(head, tes, with_field=True, b0=3.0, tr=35e-3, flip=15.0, slab_mm=(-75.0, 75.0)):
    """|signal| of ``independent_head.acquire`` without noise (optionally without the field and
    the phase offset), on the acquisition grid."""
    import qsm_forward.qsm_forward as qf

    nz = head.chi.shape[2] // 3 * 3
    lo_shape = (head.chi.shape[0], head.chi.shape[1], nz // 3 * 2)
    if with_field:
        field = qf.generate_field(head.chi.astype(np.float64), head.brain.astype(float),
                                  voxel_size=[head.sim_vox] * 3, B0_dir=H.tilt_vector(0.0))
        _, field, _ = qf.generate_shimmed_field(field, head.brain.astype(float), order=2)
        offset = qf.generate_phase_offset(head.m0.astype(np.float64), head.brain.astype(float),
                                          head.m0.shape)
    else:
        field, offset = np.zeros(head.chi.shape), 0.0
    cz = H._centre(head.chi.shape, head.sim_vox)[2]
    sl = slice(*(int(round((cz + zm / head.sim_vox) / 1.5)) for zm in slab_mm))
    mags = []
    for te in tes:
        s = qf.generate_signal(field=field, B0=b0, TR=tr, TE=te, flip_angle=flip,
                               phase_offset=offset, R1=head.r1.astype(np.float64),
                               R2star=head.r2s.astype(np.float64), M0=head.m0.astype(np.float64))
        mags.append(np.abs(qf.crop_kspace(s[..., :nz], lo_shape))[:, :, sl].astype(np.float32))
        del s
    return np.stack(mags, axis=-1)


def noise_free(seed, d, args):
    """``{"clean": mag, "nofield": mag}`` of the axial acquisition, cached in ``--cache-dir``."""
    vox = "" if args.sim_vox == 1.0 else f"_vox{args.sim_vox:g}"
    path = args.cache_dir / f"qsmprep_independent_seed{seed}_axial_r2snoisefree{vox}.npz"
    if path.exists():
        z = np.load(path)
        return {k: z[k] for k in z.files}
    head = H.build_head(seed, sim_vox=args.sim_vox)
    out = {}
    for name, wf in (("clean", True), ("nofield", False)):
        t0 = time.process_time()
        out[name] = _noise_free(head, d["tes"], with_field=wf)
        print(f"# seed {seed} {name}: {time.process_time() - t0:.0f} s CPU", flush=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **out)
    tmp.replace(path)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[indep.TUNE_SEED, indep.HELD_OUT_SEED])
    p.add_argument("--acqs", default="axial,followup,oblique")
    p.add_argument("--methods", default=",".join(sorted(relaxometry.METHODS) + ["nlls"]),
                   help="registered methods and/or 'nlls' (comparator)")
    p.add_argument("--tilt", type=float, default=8.0)
    p.add_argument("--sim-vox", type=float, default=1.0)
    p.add_argument("--cache-dir", type=Path, required=True)
    p.add_argument("--field-dir", type=Path,
                   help="where qsmprep's total fields are cached (default: --cache-dir)")
    p.add_argument("--decompose", action="store_true",
                   help="re-image the axial head noise-free, with and without the field")
    p.add_argument("--out", type=Path, help="also write the per-label rows as TSV")
    args = p.parse_args(argv)
    methods = args.methods.split(",")
    rows = []
    for seed in args.seeds:
        for acq in args.acqs.split(","):
            d = indep.load_acquisition(seed, acq, args.tilt, args.cache_dir, args.sim_vox)
            mask = computed_mask(d)
            vox = voxel_size(d)
            fhz = (total_field_hz(seed, acq, d, mask, args)
                   if any(m.startswith("sinc") for m in methods) else None)
            fits = {}
            for m in methods:
                t0 = time.process_time()
                fits[m] = fit(m, d["mag"], d["tes"], mask, fhz, vox)
                dt = time.process_time() - t0
                for lab, e in label_errors(fits[m], d["r2s"], d["labels"], mask).items():
                    rows.append({"seed": seed, "acq": acq, "signal": "noisy", "method": m,
                                 "label": lab, **e, "cpu_s": dt})
            if args.decompose and acq == "axial":
                for name, mag in noise_free(seed, d, args).items():
                    for m in methods:
                        f_use = fhz if name == "clean" or fhz is None else np.zeros_like(fhz)
                        r2 = fit(m, mag, d["tes"], mask, f_use, vox)
                        for lab, e in label_errors(r2, d["r2s"], d["labels"], mask).items():
                            rows.append({"seed": seed, "acq": acq, "signal": name, "method": m,
                                         "label": lab, **e, "cpu_s": np.nan})
            df = pd.DataFrame(rows)
            if args.out:
                df.to_csv(args.out, sep="\t", index=False, float_format="%.4g")
    df = pd.DataFrame(rows)
    pd.set_option("display.width", 250)
    for (seed, acq, sig), g in df.groupby(["seed", "acq", "signal"], sort=False):
        print(f"\nseed {seed} {acq} {sig}: fitted minus true R2* (1/s), label & computed mask "
              "(err) and its 1-voxel-eroded interior (int)")
        t = g.pivot(index="label", columns="method", values=["err", "err_int"])
        t.columns = [f"{a}_{b}" for a, b in t.columns]
        t["true"] = g.groupby("label")["true"].first()
        print(t.round(2).to_string())
        for m, gm in g.groupby("method"):
            print(f"# seed {seed} {acq} {sig} {m}: max |err| {gm['err'].abs().max():.2f}, "
                  f"interior {gm['err_int'].abs().max():.2f} 1/s")
    if "clean" in set(df["signal"]):
        print("\nThe fit against the noise-free signal's own fit (noisy minus clean, same method, "
              "axial): max |difference of label means| (1/s)")
        for (seed, m), g in df[df.acq == "axial"].groupby(["seed", "method"]):
            e = g.pivot(index="label", columns="signal", values="err")
            print(f"# seed {seed} {m}: noise {(e['noisy'] - e['clean']).abs().max():.2f}, "
                  f"field {(e['clean'] - e['nofield']).abs().max():.2f}, "
                  f"partial volume {e['nofield'].abs().max():.2f} 1/s")
    return df


if __name__ == "__main__":
    main()
