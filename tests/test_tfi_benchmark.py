"""The joint (total field) objective of benchmarks/independent_tfi.py on a noise-free phantom."""

from __future__ import annotations

import numpy as np

from tests._paths import load_script

T = load_script("benchmarks/independent_tfi.py")
VOX = (2.0, 2.0, 2.0)


def _phantom():
    """Ellipsoidal 'brain' with three inclusions, a strong 'air cavity' source just outside."""
    n = 40
    z, y, x = np.mgrid[:n, :n, :n].astype(float) - n / 2
    mask = (x / 14) ** 2 + (y / 16) ** 2 + (z / 12) ** 2 <= 1
    chi_in = np.zeros((n, n, n), np.float32)
    for c, r, v in (((0, 0, 4), 3, 0.15), ((0, 5, -4), 2.5, -0.08), ((3, -6, 0), 2, 0.1)):
        chi_in[(x - c[2]) ** 2 + (y - c[1]) ** 2 + (z - c[0]) ** 2 <= r ** 2] = v
    chi_in *= mask
    cavity = ((x + 0) ** 2 + (y - 19) ** 2 + (z + 2) ** 2 <= 9) & ~mask
    mag = np.where(mask, 1.0, 0.05).astype(np.float32)
    return mask, chi_in, cavity, mag


def _joint():
    mask, chi_in, cavity, mag = _phantom()
    J = T.Joint(np.zeros(mask.shape, np.float32), mask, VOX, (0.0, 0.0, 1.0), None, mag,
                alpha=1e-4)
    p = J.p
    truth_in = p.grid.embed(chi_in, np.float32)
    truth_out = p.grid.embed(cavity.astype(np.float32) * -9.0, np.float32)  # air: -9 ppm
    p.f[...] = (J.D(truth_in * J.m) + J.D(truth_out * J.out)) * J.m  # measured inside only
    return J, truth_in


def test_truth_fits_the_data_and_beats_zero():
    J, truth = _joint()
    zero = np.zeros_like(truth)
    data_truth, tv_truth = J.terms(truth, J.best_outside(truth, iters=300, tol=1e-7))
    data_zero, tv_zero = J.terms(zero, J.best_outside(zero, iters=300, tol=1e-7))
    assert tv_zero == 0 and tv_truth > 0
    assert data_zero > 0
    # noise-free: the truth with its best outside sources explains the field almost exactly
    assert data_truth < 1e-2 * data_zero
    assert data_truth + tv_truth < data_zero


def test_refine_lowers_the_objective_and_the_error():
    """From zero inside (and PDF's outside sources) the lagged-diffusivity steps lower J at
    every step and bring the map towards the truth (NRMSE after removing the mean inside the
    mask, which the field does not determine)."""
    J, truth = _joint()
    m = J.m > 0

    def nrmse(chi):
        a, t = chi[m] - chi[m].mean(), truth[m] - truth[m].mean()
        return float(np.linalg.norm(a - t) / np.linalg.norm(t))

    zero = np.zeros_like(truth)
    start_out = J.best_outside(zero, iters=100, tol=1e-4)
    rows = [(sum(J.terms(zero, start_out)), nrmse(zero))]
    J.refine(zero, start_out, 4, 30,
             lambda k, ci, co, n, rel: rows.append((sum(J.terms(ci, co)), nrmse(ci))))
    js, errs = [r[0] for r in rows], [r[1] for r in rows]
    assert len(rows) == 5
    assert all(b < a for a, b in zip(js, js[1:])), js
    assert all(b < a for a, b in zip(errs, errs[1:])), errs
    assert errs[-1] < 0.5, errs
