"""R2* accuracy on qsmprep's own simulator (the independent simulator's R2* is in independent.py).

Simulates one session (``qsmprep.simulate.simulate_session``, subject 1, baseline), fits R2* with
every method of :mod:`qsmprep.qsm.relaxometry` inside the true brain mask and prints, per DGM
label, the mean R2* against the truth (the simulator's noise-free magnitude decay,
``log(m_clean[e0] / m_clean[e1]) / (TE1 - TE0)``), in 1/s, plus time. One table.
``--field-correction`` adds ``loglinear+sinc`` (``field_correction="sinc"`` with qsmprep's total
field from the default echo fit inside the true brain mask). This simulator has no intravoxel
dephasing (each voxel's signal is one point of the field), so what the correction changes here
is what it does where there is nothing to correct.

Usage::

    .venv/bin/python benchmarks/r2star.py [--preset small|1mm] [--seed 0] [--field-correction]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from qsmprep.qsm import relaxometry
from qsmprep.simulate import simulate_session


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="small", choices=["small", "1mm"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--field-correction", action="store_true",
                   help="also loglinear with field_correction='sinc' (qsmprep's total field)")
    args = p.parse_args(argv)
    s = simulate_session(1, 0, preset=args.preset, seed=args.seed, group="HC")
    tes = np.asarray(s.tes, float)
    clean = s.mag_clean.astype(np.float64)
    ok = (clean[..., 0] > 0) & (clean[..., 1] > 0)
    truth = np.zeros(clean.shape[:3])
    truth[ok] = np.log(clean[..., 0][ok] / clean[..., 1][ok]) / (tes[1] - tes[0])
    brain = s.brain_mask.astype(bool)
    rows = []
    variants = {m: (m, {}) for m in sorted(relaxometry.METHODS)}
    if args.field_correction:
        from qsmprep.qsm.kernels import voxel_size_from_affine
        from qsmprep.qsm.pipeline import QSMOptions, run_field_fit

        o, vox = QSMOptions(), tuple(float(v) for v in voxel_size_from_affine(s.affine))
        fit, _ = run_field_fit(s.phase, s.mag, tes, brain, vox, float(s.b0), o.combination,
                               o.unwrapping)
        from qsmprep.qsm.kernels import ppm_to_hz

        variants["loglinear+sinc"] = ("loglinear", {
            "field_correction": "sinc", "voxel_size": vox,
            "field_hz": ppm_to_hz(fit["field_ppm"].astype(np.float64), float(s.b0))})
    for label, (method, kw) in variants.items():
        t0 = time.perf_counter()
        try:
            r2, _ = relaxometry.r2star_t2star(s.mag, tes, brain, method=method, **kw)
        except ValueError as exc:  # e.g. ARLO with unequal echo spacing
            print(f"# {method}: {exc}")
            continue
        dt = time.perf_counter() - t0
        for rec in s.label_table.to_dict("records"):
            sel = (s.labels == rec["index"]) & brain
            if not sel.any():
                continue
            rows.append({"method": label, "label": rec["name"], "n_vox": int(sel.sum()),
                         "true_1_s": truth[sel].mean(), "est_1_s": float(r2[sel].mean()),
                         "err_1_s": float(r2[sel].mean() - truth[sel].mean()), "time_s": dt})
    df = pd.DataFrame(rows)
    print(f"R2* on the own simulator, preset {args.preset}, seed {args.seed}, {tes.size} echoes "
          f"{tes[0] * 1e3:g}-{tes[-1] * 1e3:g} ms (1/s)")
    print(df.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    for method, g in df.groupby("method"):
        print(f"# {method}: max |error| {g['err_1_s'].abs().max():.2f} 1/s over {len(g)} labels")
    return df


if __name__ == "__main__":
    main()
