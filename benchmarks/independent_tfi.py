"""Would a one-step (total field) inversion close the whole-brain gap? (issue 13 diagnosis)

The default chain is two-step: PDF fits sources outside the brain mask to the total field,
MEDI inverts what is left. On the independent heads its whole-brain NRMSE stays at 73 %
(``independent_limits.py``: the cortical ribbon loses most of its contrast, even on a
noise-free field). Total field inversion (TFI; Liu Z, Kee Y, Zhou D, Wang Y, Spincemaille P.
Preconditioned total field inversion (TFI) method for quantitative susceptibility mapping.
Magn Reson Med 2017;78:303-315) fits the sources inside and outside the mask together:

    J(chi_in, chi_out) = 1/2 || W (f - D chi_in - D chi_out) ||^2_M + alpha || M_G grad chi_in ||_1

(``f`` the total field, ``W`` the echo-fit reliability, ``M`` the brain mask, ``chi_out``
unregularised outside ``M`` as in PDF, ``M_G`` and ``alpha`` MEDI's gradient mask and weight).
Two questions, answered on both seeds (axial acquisition, the default chain's mask and field):

1. **Does this objective prefer the truth?** ``J`` is evaluated at candidate maps, each with
   its best outside sources (conjugate gradients on the residual, 200 iterations): the
   two-step result (PDF's own sources), the MEDI map with refitted sources, the true
   susceptibility inside the mask (plain, and minus its mean), and zero inside. If the truth
   has a higher ``J`` than the two-step map, no solver of this objective moves towards it.
2. **What does minimising it further do to the map?** Starting from the two-step solution
   (``chi_out`` = PDF's sources, preconditioned by ``P_B = 30`` outside as in TFI), ``--steps``
   lagged-diffusivity (IRLS) steps of ``--cg`` conjugate-gradient iterations each; the map is
   scored as in ``independent_limits.py`` after every step.

This is a diagnostic, not a method of the package: the pipeline has no TFI (docs/validation.md,
"Would a total field inversion close the gap?").

Usage::

    nice -n 10 .venv/bin/python benchmarks/independent_tfi.py --seeds 1 2 --cache-dir DIR
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
import independent_limits as LIM  # noqa: E402

from qsmprep.qsm import inversion as INV  # noqa: E402
from qsmprep.qsm import kernels  # noqa: E402
from qsmprep.qsm._fftgrid import cg as CG  # noqa: E402
from qsmprep.qsm._fftgrid import grad, grad_adj  # noqa: E402
from qsmprep.qsm.pipeline import QSMOptions, run_field_fit, run_masking  # noqa: E402

PAD_MM = 20.0  # PDF's padding: the outside sources live there
P_B = 30.0  # TFI's preconditioner outside the mask (Liu et al. 2017)
EPS = 1e-4  # ppm/mm: lagged-diffusivity smoothing of |grad chi|


class Joint:
    """The joint objective on PDF's cropped, padded grid."""

    def __init__(self, field, mask, vox, b0_dir, weights, magnitude, alpha=3e-4):
        self.p = INV._Problem(field, mask, vox, b0_dir, weights, PAD_MM, np.float32, None)
        wg = INV.magnitude_edge_weights(magnitude, self.p.mask_full, self.p.vox, 0.3)
        self.wg = np.stack([self.p.grid.embed(c, np.float32) for c in wg])
        self.m = self.p.m
        self.out = (1.0 - self.m).astype(np.float32)
        self.alpha = alpha
        self.g = np.empty((3,) + self.p.shape, np.float32)
        self.tmp = np.empty(self.p.shape, np.float32)

    def D(self, x):
        return self.p.ifft(self.p.fft(x) * self.p.d)

    def terms(self, chi_in, chi_out):
        """(data, TV) terms of J."""
        p = self.p
        res = p.w2 * (p.f - self.D(chi_in * self.m) - self.D(chi_out * self.out)) ** 2
        grad(chi_in * self.m, p.vox, self.g)
        tv = self.alpha * float(np.abs(self.wg * self.g)[:, self.m > 0].sum())
        return 0.5 * float(res.sum()), tv

    def best_outside(self, chi_in, iters=200, tol=1e-5):
        """Outside sources minimising the data term for a fixed ``chi_in`` (PDF on the residual)."""
        p, out = self.p, self.out

        def normal(x, o):
            o[...] = out * self.D(p.w2 * self.D(out * x))

        r = p.f - self.D(chi_in * self.m)
        x, _, _ = CG(normal, out * self.D(p.w2 * r), tol=tol, max_iter=iters)
        return x

    def refine(self, chi_in, chi_out, steps, cg_iter, callback):
        """Lagged-diffusivity steps on J from (chi_in, chi_out), preconditioned by P_B outside."""
        p, m, out = self.p, self.m, self.out
        P = (m + P_B * out).astype(np.float32)
        y = (chi_in * m + chi_out * out / P_B).astype(np.float32)
        rhs = P * self.D(p.w2 * p.f)
        for k in range(steps):
            grad(P * y * m, p.vox, self.g)
            lam = (self.alpha * self.wg ** 2 / np.sqrt((self.wg * self.g) ** 2 + EPS ** 2))
            lam = lam.astype(np.float32)

            def normal(x, o, lam=lam):
                c = P * x
                r = self.D(p.w2 * self.D(c))
                grad(c * m, p.vox, self.g)
                self.g *= lam
                grad_adj(self.g, p.vox, self.tmp)
                o[...] = P * (r + self.tmp * m)

            y, n_it, rel = CG(normal, rhs, x0=y, tol=1e-7, max_iter=cg_iter)
            chi = P * y
            callback(k + 1, chi * m, chi * out, n_it, rel)


def run(seed, cache_dir, steps, cg_iter):
    d = IND.load_acquisition(seed, "axial", 8.0, cache_dir)
    vox = tuple(float(v) for v in kernels.voxel_size_from_affine(d["affine"]))
    b0_dir = kernels.b0_direction_from_affine(d["affine"])
    mag, phase, tes, b0 = d["mag"], d["phase"], d["tes"], float(d["b0"])
    o = QSMOptions()
    mask, _ = run_masking(mag, phase, tes, vox, o.masking)
    fit, _ = run_field_fit(phase, mag, tes, mask, vox, b0, o.combination, o.unwrapping)
    field, w = fit["field_ppm"], fit["reliability"]
    mag3 = np.sqrt((mag.astype(np.float64) ** 2).sum(-1))
    J = Joint(field, mask, vox, b0_dir, w, mag3)
    p = J.p

    def scored(name, chi_in, chi_out, c0):
        data, tv = J.terms(chi_in, chi_out)
        sc = LIM.score(p.grid.extract(chi_in * J.m), mask, d, mask)
        sc.update(seed=seed, name=name, data=data, tv=tv, cpu=time.process_time() - c0)
        print(fmt(sc), flush=True)
        return sc

    rows = []
    c0 = time.process_time()
    x_pdf = J.best_outside(np.zeros(p.shape, np.float32), iters=100, tol=1e-4)  # = PDF's solve
    local = p.grid.extract((p.f - J.D(J.out * x_pdf)) * J.m)
    chi_medi = p.grid.embed(INV.medi(local, mask, vox, b0_dir, weights=w, magnitude=mag3),
                            np.float32)
    rows.append(scored("two-step (PDF sources, MEDI)", chi_medi, x_pdf, c0))
    c0 = time.process_time()
    rows.append(scored("MEDI map, sources refitted", chi_medi, J.best_outside(chi_medi), c0))
    truth = p.grid.embed(np.asarray(d["chi"], np.float32), np.float32)
    c0 = time.process_time()
    rows.append(scored("truth, sources refitted", truth, J.best_outside(truth), c0))
    shifted = truth - truth[J.m > 0].mean()
    c0 = time.process_time()
    rows.append(scored("truth - mean, refitted", shifted, J.best_outside(shifted), c0))
    zero = np.zeros(p.shape, np.float32)
    c0 = time.process_time()
    rows.append(scored("zero inside, refitted", zero, J.best_outside(zero), c0))
    c0 = time.process_time()
    J.refine(chi_medi, x_pdf, steps, cg_iter,
             lambda k, ci, co, n, rel: rows.append(scored(f"joint, step {k} ({n} CG)", ci, co, c0)))
    return rows


HEADER = (f"{'seed':>4s} {'map':30s} | {'data':>6s} {'TV':>5s} {'J':>6s} | {'NRMSE':>5s} "
          f"{'ctx':>6s} {'wm':>5s} | " + " ".join(f"{a:>4s}" for a in IND.ABBR.values())
          + f" {'max':>4s} | {'cpu':>4s}")


def fmt(r):
    return (f"{r['seed']:>4d} {r['name']:30s} | {r['data']:6.2f} {r['tv']:5.2f} "
            f"{r['data'] + r['tv']:6.2f} | {r['nrmse']:5.1f} {r['ctx']:+6.1f} {r['wm']:+5.1f} | "
            + " ".join(f"{r[a]:4.1f}" for a in IND.ABBR.values())
            + f" {r['max']:4.1f} | {r['cpu']:4.0f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[IND.TUNE_SEED, IND.HELD_OUT_SEED])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--cg", type=int, default=40)
    ap.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()))
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*iteration cap.*")
    print(HEADER, flush=True)
    rows = []
    for seed in args.seeds:
        rows += run(seed, args.cache_dir, args.steps, args.cg)
    print("\n" + HEADER)
    for r in rows:
        print(fmt(r))


if __name__ == "__main__":
    main()
