"""Background removal alone (+ the default inversion) on qsmprep's own simulator, against the truth.

A cheap probe of one background-removal step (issue 13: why PDF is worse than V-SHARP at 3 mm on
the own head): the session of ``benchmarks/accuracy.py`` (subject 1, baseline, seed 0) is
simulated once (noise-free truth kept: total field, susceptibility of the whole head) and cached;
the mask and the total field are computed once per mask (true or computed, as the pipeline does);
then every variant runs only ``remove_background`` and ``dipole_inversion`` (MEDI, default
options) and is scored like ``accuracy.py`` (:func:`accuracy.evaluate`: per-structure |error| in
ppb inside ``eroded mask & brain``, both maps referenced to their mean there).

Also printed per variant: the local-field error (ppm RMS) inside the returned mask against the
true local field ``D * (chi_brain)`` (the field of the brain's own susceptibility), after removing
the least-squares ``a + c D*M`` (a constant and the field of a uniform susceptibility inside the
mask, which no background removal can tell from background; ``c_err`` is that ``c`` in ppb), over
the whole returned mask (``e_all``), its outer 6 mm (``e_rim``) and deeper (``e_deep``); the CG
iterations and final relative residual of the background step's ``cg`` call (PDF, RESHARP).

Usage::

    nice -n 19 python benchmarks/pdf_diag.py [--preset small] [--mask true|auto|both]
        [--variants 'NAME=JSON;NAME=JSON'] [--total fit|true] [--session-dir DIR]
        [--no-local-error]

``--variants`` entries are ``name=json`` with keys ``method``, ``opts`` (method options),
``erode_mm`` (erode the returned mask, zeroing the local field outside, before the inversion),
``no_weights``, ``remove_uniform`` (subtract ``a + c D*M`` before the inversion; ``c_rm``),
``inv`` and ``inv_opts`` (another inversion). ``--session-dir`` reads ``accuracy.py``'s cached
session (the rows of ``docs/validation_background.md``); without it the session is simulated
into ``--cache-dir`` with its noise-free total field (``--total true``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accuracy as A  # noqa: E402

from qsmprep.qsm import background as _bg  # noqa: E402
from qsmprep.qsm import kernels  # noqa: E402
from qsmprep.qsm.masking import erode_mm  # noqa: E402
from qsmprep.qsm.pipeline import (QSMOptions, run_background_removal, run_field_fit,  # noqa: E402
                                  run_inversion, run_masking)

COLS = [A.ABBR[s] for s in A.STRUCTURES]
DEFAULT_VARIANTS = {
    "vsharp": {"method": "vsharp"},
    "pdf": {"method": "pdf"},
}


_CG_LOG: list = []
_cg = _bg.cg


def _logged_cg(*args, **kwargs):
    """The background module's CG, recording (iterations, final relative residual)."""
    x, n_it, rel = _cg(*args, **kwargs)
    _CG_LOG.append((n_it, rel))
    return x, n_it, rel


_bg.cg = _logged_cg


def load(preset: str, cache_dir: Path, session_dir: Path | None = None) -> dict:
    """The accuracy.py session (subject 1, baseline, seed 0, SNR 100) plus the noise-free truth
    (total field, chi of the head), simulated once and cached in ``cache_dir``; or, with
    ``session_dir``, accuracy.py's cached session there (without the noise-free truth)."""
    if session_dir is not None:
        return A.load_session(preset, 0, 100.0, session_dir)
    path = cache_dir / f"pdf_diag_{preset}_seed0.npz"
    if path.exists():
        return A.read_session_npz(path)
    from qsmprep.simulate import SimulationConfig, simulate_session

    s = simulate_session(1, 0, preset=preset, seed=0, config=SimulationConfig(snr=100.0), group="HC")
    d = {"chi": s.chi.astype(np.float32), "labels": s.labels, "brain_mask": s.brain_mask,
         "mag": s.mag, "phase": s.phase, "tes": np.asarray(s.tes, float), "affine": s.affine,
         "b0": float(s.b0), "label_table": s.label_table.to_csv(sep="\t", index=False),
         "field_true": s.field_ppm.astype(np.float32), "chi_head": s.chi_head.astype(np.float32)}
    np.savez(path, **d)
    d["label_table"] = s.label_table
    return d


def local_error(local, m, d, vox, b0_dir):
    """RMS (ppm) of local - D*(chi_brain) in m after removing the best multiple of D*M; whole,
    outer 6 mm, deeper than 6 mm."""
    pad = max(d["chi"].shape) // 2
    truth = kernels.forward_field(d["chi"] * d["brain_mask"], vox, b0_dir, pad=pad)
    dm = kernels.forward_field(m.astype(np.float64), vox, b0_dir, pad=pad)
    e = np.asarray(local, np.float64) - truth
    a = np.stack([np.ones(int(m.sum())), dm[m]], 1)
    coef, *_ = np.linalg.lstsq(a, e[m], rcond=None)
    e = np.where(m, e - coef[0] - coef[1] * dm, 0.0)
    deep = erode_mm(m, vox, 6.0)
    rms = lambda s: float(np.sqrt(np.mean(e[s] ** 2))) if s.any() else float("nan")  # noqa: E731
    return (rms(m), rms(m & ~deep), rms(deep), float(np.sqrt(np.mean(truth[deep] ** 2))),
            1e3 * float(coef[1]))


def remove_uniform_component(local, m, vox, b0_dir):
    """Subtract the least-squares ``a + c D*M`` (a constant field and the field of a uniform
    susceptibility ``c`` inside ``m``) from ``local`` inside ``m``; returns the field and c (ppb)."""
    pad = max(m.shape) // 2
    dm = kernels.forward_field(m.astype(np.float64), vox, b0_dir, pad=pad)
    a = np.stack([np.ones(int(m.sum())), dm[m]], 1)
    coef, *_ = np.linalg.lstsq(a, np.asarray(local, np.float64)[m], rcond=None)
    out = np.where(m, local - coef[0] - coef[1] * dm, 0.0).astype(np.float32)
    return out, 1e3 * float(coef[1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="small", choices=["small", "1mm"])
    p.add_argument("--mask", default="both", choices=["true", "auto", "both"])
    p.add_argument("--total", default="fit", choices=["fit", "true"],
                   help="total field: the pipeline's echo fit, or the noise-free simulated field")
    p.add_argument("--variants", default=None, help="'name=json;name=json'")
    p.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()))
    p.add_argument("--session-dir", type=Path, default=None,
                   help="use accuracy.py's cached session in this folder (no --total true)")
    p.add_argument("--no-local-error", action="store_true")
    args = p.parse_args(argv)
    variants = DEFAULT_VARIANTS
    if args.variants:
        variants = {}
        for item in args.variants.split(";"):
            name, js = item.split("=", 1)
            variants[name.strip()] = json.loads(js)
    d = load(args.preset, args.cache_dir, args.session_dir)
    vox = tuple(float(v) for v in kernels.voxel_size_from_affine(d["affine"]))
    b0_dir = tuple(kernels.b0_direction_from_affine(d["affine"]))
    dflt = QSMOptions()
    masks = ["true", "auto"] if args.mask == "both" else [args.mask]
    print(f"# preset {args.preset} {d['mag'].shape} vox {vox}; total field: {args.total}")
    print(f"{'mask':5s} {'variant':28s} {'NRMSE':>6s} " + " ".join(f"{a:>5s}" for a in COLS)
          + f" {'max':>5s} {'slope':>5s} {'icpt':>5s} {'cov':>5s} | {'e_all':>7s} {'e_rim':>7s} "
          f"{'e_deep':>7s} {'loc':>7s} {'c_err':>6s} {'c_rm':>6s} | {'it':>5s} {'rel':>8s} {'t_bf':>5s}", flush=True)
    for mk in masks:
        mask, _ = run_masking(d["mag"], d["phase"], d["tes"], vox, dflt.masking,
                              user_mask=d["brain_mask"] if mk == "true" else None)
        fit, _ = run_field_fit(d["phase"], d["mag"], d["tes"], mask, vox, d["b0"], dflt.combination,
                               dflt.unwrapping)
        total = fit["field_ppm"] if args.total == "fit" else np.where(mask, d["field_true"], 0)
        for name, v in variants.items():
            opts = dict(v.get("opts", {}))
            _CG_LOG.clear()
            t = time.perf_counter()
            local, er, _ = run_background_removal(total, mask, vox, b0_dir, v["method"],
                                                  weights=None if v.get("no_weights") else fit["reliability"],
                                                  **opts)
            t_bf = time.perf_counter() - t
            n_it, rel = _CG_LOG[-1] if _CG_LOG else ("-", float("nan"))
            if v.get("erode_mm"):
                er = er & erode_mm(er, vox, float(v["erode_mm"]))
                local = local * er
            c_rm = float("nan")
            if v.get("remove_uniform"):
                local, c_rm = remove_uniform_component(local, er, vox, b0_dir)
            chi, _ = run_inversion(local, er, vox, b0_dir, v.get("inv", dflt.inversion),
                                   weights=fit["reliability"], mag=d["mag"], **v.get("inv_opts", {}))
            r = A.evaluate({"eroded_mask": er, "chi_unreferenced": chi, "voxel_size": vox}, d)
            le = (np.nan,) * 5 if args.no_local_error else local_error(local, er & d["brain_mask"], d,
                                                                        vox, b0_dir)
            print(f"{mk:5s} {name:28s} {r['nrmse']:6.1f} "
                  + " ".join(f"{r[a]:5.1f}" for a in COLS)
                  + f" {r['max_abs']:5.1f} {r['slope']:5.2f} {r['intercept']:5.1f} {r['brain_cov']:5.2f} | "
                  f"{le[0]:7.4f} {le[1]:7.4f} {le[2]:7.4f} {le[3]:7.4f} {le[4]:6.1f} {c_rm:6.1f} | "
                  f"{n_it:>5} {rel:8.1e} "
                  f"{t_bf:5.1f}", flush=True)


if __name__ == "__main__":
    main()
