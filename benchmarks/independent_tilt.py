"""Where the tilted acquisitions' red nucleus deficit comes from (issue 13 diagnosis).

On the independent heads the table's red nucleus reads 3-8 ppb lower when B0 is tilted by 8
degrees than when it is not, in every noise draw (docs/validation.md, "Noise or tilt?"). This
re-images the baseline head of each seed axial and tilted without noise and replaces, step by
step, what the default chain starts from:

``complex``
    the noise-free images through the default chain (what the scanner measures, without noise:
    qsm-forward's shim, phase offset, k-space crop of the complex signal, so intravoxel
    dephasing);
``forward``
    the chain's mask and weights, but background removal, inversion and referencing run on the
    noise-free dipole field of the acquisition-grid truth over the whole field of view (qsmprep's
    kernel): what background removal and inversion do with a perfect total field;
``masklocal``
    the chain's mask and weights, no background removal: MEDI on the field of the true
    susceptibility inside the chain's mask (what ``forward`` would give if background removal
    were perfect);
``local`` / ``local200``
    MEDI alone (50 / 200 iterations) on the field of the true susceptibility inside the true
    brain, on the true brain: what the inversion does with a perfect local field;

and, with ``--noisy``, the cached noisy ``axial`` and ``oblique`` acquisitions of
``independent.py``. Each is scored as in ``independent.py`` (``lab``: per-structure |error|
inside the true labels, ppb; ``tab``: the reported table, which erodes the labels by one voxel,
against the tissue truth). The last block prints the *tilt effect*: the tilted acquisition's
reported value minus the axial one's, per label (ppb). The head, the labels and the truth are
the same arrays in both (qsm-forward tilts B0 in the head's frame), so without a tilt effect it
is zero up to noise. The first case where it vanishes locates it.

``--bf-removal`` / ``--bf-options`` change the background removal of every case (e.g.
``'{"weighted": false}'``: PDF without the reliability weights), ``--uniform-weights`` weights
every mask voxel equally in ``forward`` and ``masklocal`` (background removal and MEDI),
``--tilt`` sets the tilt (default 8 degrees). docs/validation.md, "Where the tilt effect comes
from", has the results.

Usage::

    nice -n 10 .venv/bin/python benchmarks/independent_tilt.py --seeds 1 2 --cache-dir DIR [--noisy]
        [--models complex,forward,masklocal,local,local200] [--tilt 8] [--uniform-weights]
        [--bf-removal auto] [--bf-options JSON]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import independent as IND  # noqa: E402
import independent_head as H  # noqa: E402

from qsmprep.qsm import kernels  # noqa: E402
from qsmprep.qsm.pipeline import (QSMOptions, run_background_removal, run_field_fit,  # noqa: E402
                                  run_inversion, run_masking, run_referencing)

#: the cases, in the order of the chain they replace (module docstring)
MODELS = ("complex", "forward", "masklocal", "local", "local200")
#: inversion-only cases: MEDI on the true local field, with its iteration count
LOCAL = {"local": 50, "local200": 200}
RN = H.DGM_LABELS[H.T_RN]


def noise_free(seed: int, tilt: float, cache_dir: Path, head_cache: dict) -> dict:
    """The baseline head of ``seed`` imaged noise-free with B0 tilted by ``tilt`` degrees
    (cached in ``cache_dir``)."""
    path = cache_dir / f"qsmprep_independent_seed{seed}_nonoise-complex_tilt{tilt:g}.npz"
    if path.exists():
        return IND.load_cached(path)
    if seed not in head_cache:
        head_cache.clear()
        head_cache[seed] = H.build_head(seed)
    t0 = time.process_time()
    d = H.acquire(head_cache[seed], tilt_deg=tilt, noise=False)
    print(f"# simulated seed {seed} tilt {tilt:g} noise-free in "
          f"{time.process_time() - t0:.0f} s CPU", flush=True)
    return IND.save_cached(path, d)


def evaluate(d: dict, tissue: pd.Series, case: str = "complex", bf_removal: str = "auto",
             bf_options: dict | None = None, uniform_weights: bool = False) -> dict:
    """The default chain on ``d`` (``complex``, ``noisy``; its background removal
    ``bf_removal`` with ``bf_options``), or its mask and weights with the field of ``case``
    (``forward``, ``masklocal``: :func:`forward_chain`)."""
    if case in ("forward", "masklocal"):
        t0, c0 = time.perf_counter(), time.process_time()
        res = forward_chain(mask_and_weights(d), d, local_only=case == "masklocal",
                            bf_removal=bf_removal, bf_options=bf_options,
                            uniform_weights=uniform_weights)
        cost = {"t_wall": time.perf_counter() - t0, "t_cpu": time.process_time() - c0,
                "peak_mb": np.nan}
    else:
        res, cost = IND.run_chain(d, "default", {"bf_removal": dict(bf_options or {})},
                                  {"bf_removal": bf_removal})
    s = IND.score(res, d, tissue)
    return {**s, **cost, "_rep": s["_rep"]}


def mask_and_weights(d: dict) -> dict:
    """The default chain's brain mask and field reliability for ``d`` (its first two steps,
    as :func:`qsmprep.qsm.pipeline.reconstruct` runs them), without the rest of the chain."""
    o = QSMOptions()
    vox = tuple(float(v) for v in kernels.voxel_size_from_affine(d["affine"]))
    mask, _ = run_masking(d["mag"], d["phase"], d["tes"], vox, o.masking)
    fit, _ = run_field_fit(d["phase"], d["mag"], d["tes"], mask, vox, float(d["b0"]),
                           o.combination, o.unwrapping)
    return {"mask": mask, "reliability": fit["reliability"], "voxel_size": vox}


def forward_chain(res: dict, d: dict, local_only: bool = False, bf_removal: str = "auto",
                  bf_options: dict | None = None, uniform_weights: bool = False) -> dict:
    """Background removal, inversion and referencing of the default chain (its mask and
    weights, ``res`` of :func:`mask_and_weights`) on the noise-free dipole field of the acquisition-grid truth over the whole field
    of view (qsmprep's kernel, the affine's B0 direction; no shim, phase offset, k-space crop or
    intravoxel dephasing); ``local_only``: no background removal, the field of the truth inside
    the chain's mask (demeaned there) is the local field; ``uniform_weights``: background
    removal and inversion weight every mask voxel equally instead of by the chain's field
    reliability."""
    o = QSMOptions()
    vox = tuple(float(v) for v in kernels.voxel_size_from_affine(d["affine"]))
    b0_dir = kernels.b0_direction_from_affine(d["affine"])
    truth = np.asarray(d["chi"], np.float64)
    w = np.ones_like(res["reliability"]) if uniform_weights else res["reliability"]
    if local_only:
        eroded = res["mask"].astype(bool)
        local = true_local_field(truth, eroded, vox, b0_dir)
    else:
        field = kernels.forward_field(truth, vox, b0_dir, pad=48)
        local, eroded, _ = run_background_removal(field.astype(np.float32), res["mask"], vox,
                                                  b0_dir, bf_removal, weights=w,
                                                  **(bf_options or {}))
    info: dict = {}
    chi, _ = run_inversion(local, eroded, vox, b0_dir, o.inversion, weights=w, mag=d["mag"],
                           info=info)
    chi_ref, _ = run_referencing(chi, eroded, o.reference, mag=d["mag"], tes=d["tes"],
                                 voxel_size=vox)
    return {**res, "eroded_mask": eroded, "chi_unreferenced": chi, "chi": chi_ref,
            "inversion_info": info}


def true_local_field(truth: np.ndarray, mask: np.ndarray, vox, b0_dir) -> np.ndarray:
    """The field (ppm) of the truth inside ``mask`` (demeaned there), zero outside: a local
    field that background removal would return if it were perfect."""
    inside = np.where(mask, truth - truth[mask].mean(), 0.0)
    return (kernels.forward_field(inside, vox, b0_dir, pad=32) * mask).astype(np.float32)


def evaluate_local(d: dict, tissue: pd.Series, n_iter: int) -> dict:
    """MEDI alone: the field of the true susceptibility inside the true brain (demeaned there;
    qsmprep's dipole kernel with the B0 direction of the affine), inverted on the true brain
    with the default MEDI and ``n_iter`` iterations; the table is referenced to, and its
    labels cut by, the true brain."""
    vox = tuple(float(v) for v in kernels.voxel_size_from_affine(d["affine"]))
    b0_dir = kernels.b0_direction_from_affine(d["affine"])
    brain = d["brain_mask"].astype(bool)
    local = true_local_field(np.asarray(d["chi"], np.float64), brain, vox, b0_dir)
    t0, c0 = time.perf_counter(), time.process_time()
    info: dict = {}
    chi, _ = run_inversion(local, brain, vox, b0_dir, "medi", weights=brain.astype(np.float32),
                           mag=d["mag"], info=info, n_iter=n_iter)
    cost = {"t_wall": time.perf_counter() - t0, "t_cpu": time.process_time() - c0, "peak_mb": np.nan}
    chi = np.asarray(chi, np.float64)
    res = {"chi": np.where(brain, chi - chi[brain].mean(), 0.0), "chi_unreferenced": chi,
           "eroded_mask": brain, "mask": brain, "voxel_size": vox, "inversion_info": info}
    s = IND.score(res, d, tissue)
    return {**s, **cost, "_rep": s["_rep"]}


def tilt_effect(rows: list[dict]) -> pd.DataFrame:
    """Tilted minus axial reported value per label (ppb), one row per (seed, case)."""
    out = []
    by = {(r["seed"], r["model"], r["tilt"]): r["_rep"] for r in rows}
    for (seed, model, tilt), rep in by.items():
        if tilt == 0 or (seed, model, 0.0) not in by:
            continue
        diff = rep - by[(seed, model, 0.0)]
        out.append({"seed": seed, "model": model, **{int(k): float(v) for k, v in diff.items()}})
    return pd.DataFrame(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    p.add_argument("--cache-dir", type=Path, required=True)
    p.add_argument("--tilt", type=float, default=8.0)
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated cases (module docstring)")
    p.add_argument("--bf-removal", default="auto",
                   help="background removal of the chain and the forward case (default: auto)")
    p.add_argument("--bf-options", type=json.loads, default=None,
                   help='options of that method, JSON (e.g. \'{"max_iter": 1000, "tol": 1e-7}\')')
    p.add_argument("--uniform-weights", action="store_true",
                   help="forward and masklocal: uniform weights instead of the chain's reliability")
    p.add_argument("--noisy", action="store_true",
                   help="also the noisy axial and oblique acquisitions of independent.py")
    args = p.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    for m in models:
        if m not in MODELS:
            p.error(f"unknown case {m!r}: {', '.join(MODELS)}")
    args.cache_dir.mkdir(parents=True, exist_ok=True)

    rows, heads = [], {}
    for seed in args.seeds:
        tissue = IND.tissue_table(seed, "axial", args.cache_dir)
        cases = [(m, t) for m in models for t in (0.0, args.tilt)]
        if args.noisy:
            cases += [("noisy", 0.0), ("noisy", args.tilt)]
        for model, tilt in cases:
            if model == "noisy":
                d = IND.load_acquisition(seed, "oblique" if tilt else "axial", args.tilt, args.cache_dir)
            else:  # every noise-free case takes the images, truth and geometry of ``complex``
                d = noise_free(seed, tilt, args.cache_dir, heads)
            ev = (evaluate_local(d, tissue, LOCAL[model]) if model in LOCAL
                  else evaluate(d, tissue, model, args.bf_removal, args.bf_options,
                                args.uniform_weights))
            r = {"seed": seed, "model": model, "tilt": tilt, **ev}
            rows.append(r)
            rn = [r["tab_err"][k] for k in RN]
            print(f"{seed:4d} {model:9s} {tilt:4g} | NRMSE {r['nrmse_ev']:5.1f} | "
                  + " ".join(f"{r[a]:4.1f}" for a in IND.ABBR.values())
                  + f" lab {r['lab_max']:4.1f} | tab {r['tab_max']:5.1f} RN L/R {rn[0]:+5.1f} {rn[1]:+5.1f}"
                  f" | {r['t_cpu']:.0f} s CPU", flush=True)
        heads.clear()

    eff = tilt_effect(rows)
    names = H.label_table().set_index("index")["name"]
    print(f"\nTilt effect: tilted ({args.tilt:g} deg) minus axial reported value per label (ppb)")
    print(f"{'seed':>4s} {'model':9s} | " + " ".join(f"{k:>5d}" for k in names.index) + " | max |.|")
    for _, e in eff.iterrows():
        vals = [e[k] for k in names.index]
        print(f"{int(e['seed']):4d} {e['model']:9s} | " + " ".join(f"{v:+5.1f}" for v in vals)
              + f" | {np.nanmax(np.abs(vals)):5.1f}")
    print("# labels: " + ", ".join(f"{k} {v}" for k, v in names.items()))
    return rows, eff


if __name__ == "__main__":
    main()
