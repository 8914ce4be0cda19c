"""Speed and memory of background removal and dipole inversion against the FFT floor.

Prints one table. Steps:

1. The floor: one forward+inverse FFT pair of the padded 1 mm-like volume (complex64 ``fftn`` /
   ``ifftn`` and real float32 ``rfftn`` / ``irfftn``) with ``--workers`` threads (default 2), and
   the real pair on the cropped grid the solvers actually use (mask bounding box + margin).
2. An analytic ellipsoid head (``benchmarks/qsm_phantom.py``; oblique B0; Gaussian field noise)
   and, for background removal, the exact exterior field of air/body spheres outside the brain.
3. Every method, each in a fresh process: total wall time, peak RSS and its
   increase over the process baseline (psutil, sampled every 10 ms), time per iteration (from runs with two fixed iteration
   counts) in units of the full-volume real FFT pair and of the cropped-grid pair it needs, the
   accuracy (inversion: mean absolute error of structure means in ppb and NRMSE after whole-brain
   referencing; background: relative local-field error), and the change of structure means when
   run in float64 instead of float32 (ppb; must be < 0.5). Background methods are scored by the structure-mean error after the
   default inversion of their local field (the local field's own error is dominated by what each
   method defines as background, e.g. SHARP removes the harmonic field of sources in the eroded
   rim).

Usage: ``python benchmarks/speed.py [--vox 1.0] [--workers 2] [--methods tv_admm rts ...]``
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

B0 = np.array([0.2, 0.3, 0.93]) / np.linalg.norm([0.2, 0.3, 0.93])
FOV = (192.0, 224.0, 176.0)
NOISE_PPM_1MM = 0.003  # local-field noise SD at 1 mm, scaled by voxel volume
SPHERES = [((0, 100, -60), 25, -9.4), ((90, 0, -40), 15, -9.4), ((-90, 5, -40), 15, -9.4),
           ((0, -10, -270), 150, -9.0)]
# fixed-iteration runs used to time one iteration: (method, option names for n and tol, FFT pairs
# per iteration)
ITER = {"cg": ("max_iter", "tol", 2), "tv_admm": ("n_iter", "tol", 2),
        "medi": ("n_iter", "tol", 2), "rts": ("n_iter", "tol", 1),
        "pdf": ("max_iter", "tol", 2), "resharp": ("max_iter", "tol", 2)}
DEFAULT = "tv_admm"
INV = ["tkd", "tikhonov", "cg", "tv_admm", "medi", "rts"]
BG = ["vsharp", "pdf", "resharp"]


def _time_pair(shape, real, workers, repeat=5):
    import scipy.fft as sfft

    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape, dtype=np.float32)
    if not real:
        x = x.astype(np.complex64)
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        if real:
            sfft.irfftn(sfft.rfftn(x, workers=workers), s=shape, workers=workers)
        else:
            sfft.ifftn(sfft.fftn(x, workers=workers), workers=workers)
        ts.append(time.perf_counter() - t)
    return float(np.median(ts[1:]))


def _sphere_field(shape, vox, b0):
    from qsm_phantom import _coords

    g0 = _coords(shape, vox)
    out = np.zeros(shape)
    for c, a, dchi in SPHERES:
        g = [gi - ci for gi, ci in zip(g0, c)]
        r2 = g[0] ** 2 + g[1] ** 2 + g[2] ** 2
        cos2 = (g[0] * b0[0] + g[1] * b0[1] + g[2] * b0[2]) ** 2 / r2
        out += dchi / 3.0 * a**3 / r2**1.5 * (3 * cos2 - 1)
    return out


class _PeakRSS:
    """Peak resident memory (MB) of this process, sampled every 10 ms by a thread (``ru_maxrss``
    is inherited across fork/exec, so it would report the parent's peak)."""

    def __init__(self):
        import threading

        import psutil

        self._proc = psutil.Process()
        self.base = self.peak = self._proc.memory_info().rss / 2**20
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self._proc.memory_info().rss / 2**20)

    def stop(self):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss / 2**20)
        return self.peak


def _job(npz, kind, name, opts, workers):
    """Run one method in this (fresh) process; return timing, peak RSS and outputs summary."""
    os.environ["QSMPREP_FFT_WORKERS"] = str(workers)
    from qsm_phantom import structure_means_ppb

    from qsmprep.qsm import background, inversion

    data = dict(np.load(npz))
    labels = {k[4:]: data[k] for k in data if k.startswith("lab_")}
    mem = _PeakRSS()
    t = time.perf_counter()
    if kind == "inv":
        chi = inversion.METHODS[name](data["field"], data["mask"], tuple(data["vox"]), data["b0"],
                                      magnitude=data["mag"], workers=workers, **opts)
        wall = time.perf_counter() - t
        mem.stop()
        means = structure_means_ppb(chi, data["mask"], labels)
        m = data["mask"]
        x = chi[m] - chi[m].mean()
        y = data["chi"][m] - data["chi"][m].mean()
        acc = float(np.linalg.norm(x - y) / np.linalg.norm(y))
    else:
        local, er = background.METHODS[name](data["total"], data["mask"], tuple(data["vox"]),
                                             data["b0"], workers=workers, **opts)
        wall = time.perf_counter() - t
        mem.stop()
        # accuracy of the chain that matters: default inversion of this local field in the
        # eroded mask, structure means referenced to the eroded mask's mean (truth likewise)
        chi = inversion.METHODS[inversion.DEFAULT](local, er, tuple(data["vox"]), data["b0"],
                                                   magnitude=data["mag"], workers=workers)
        means = structure_means_ppb(chi, er, labels)
        truth = structure_means_ppb(data["chi"], er, labels)
        means = {k: means[k] - truth[k] for k in means}  # errors
        acc = float(er.sum() / data["mask"].sum())
    return dict(wall=wall, peak=mem.peak, base=mem.base, acc=acc, means=means)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vox", type=float, default=1.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--methods", nargs="*", default=INV + BG)
    ap.add_argument("--no-f64", action="store_true", help="skip the float64 comparison")
    args = ap.parse_args(argv)
    os.environ["QSMPREP_FFT_WORKERS"] = str(args.workers)
    from qsm_phantom import make_phantom, structure_means_ppb

    from qsmprep.qsm import _fftgrid, inversion, kernels

    global DEFAULT
    DEFAULT = inversion.DEFAULT

    vox = (args.vox,) * 3
    t0 = time.perf_counter()
    ph = make_phantom(vox, FOV, B0)
    shape = ph["mask"].shape
    rng = np.random.default_rng(0)
    noise = rng.normal(0, NOISE_PPM_1MM / args.vox**1.5, shape)
    field = (ph["field"] + noise) * ph["mask"]
    total = (ph["field"] + _sphere_field(shape, vox, ph["b0"]) + noise) * ph["mask"]
    truth = structure_means_ppb(ph["chi"], ph["mask"], ph["labels"])
    tmp = tempfile.mkdtemp(prefix="qsmprep-speed-")
    npz = os.path.join(tmp, "phantom.npz")
    np.savez(npz, field=field.astype(np.float32), total=total.astype(np.float32),
             local=ph["field"].astype(np.float32), mask=ph["mask"], mag=ph["magnitude"],
             chi=ph["chi"], vox=np.array(vox), b0=ph["b0"],
             **{"lab_" + k: v for k, v in ph["labels"].items()})
    print(f"phantom {shape} at {args.vox} mm built in {time.perf_counter() - t0:.1f} s")

    full = kernels.next_fast_shape(shape)
    crop = _fftgrid.CropGrid(ph["mask"], [int(np.ceil(12.0 / v)) for v in vox]).shape
    fl_c = _time_pair(full, False, args.workers)
    fl_r = _time_pair(full, True, args.workers)
    fl_rc = _time_pair(crop, True, args.workers)
    print(f"FFT floor, workers={args.workers}: padded {full}: complex64 pair {fl_c:.3f} s, "
          f"real float32 pair {fl_r:.3f} s; cropped inversion grid {crop}: real pair {fl_rc:.3f} s")

    ctx = mp.get_context("spawn")

    def run(kind, name, opts):
        with cf.ProcessPoolExecutor(1, mp_context=ctx, max_tasks_per_child=1) as ex:
            return ex.submit(_job, npz, kind, name, opts, args.workers).result()

    rows = []
    for name in args.methods:
        kind = "inv" if name in INV else "bg"
        r = run(kind, name, {})
        per_it = pairs = None
        if name in ITER:
            nkey, tkey, pairs = ITER[name]
            ta = run(kind, name, {nkey: 5, tkey: 0.0})["wall"]
            tb = run(kind, name, {nkey: 15, tkey: 0.0})["wall"]
            per_it = (tb - ta) / 10.0
        d64 = None
        if not args.no_f64 and kind == "inv":
            r64 = run(kind, name, {"dtype": np.float64})
            d64 = max(abs(r["means"][k] - r64["means"][k]) for k in truth)
        if kind == "inv":
            err = [r["means"][k] - truth[k] for k in truth]
            acc = f"MAE {np.mean(np.abs(err)):5.1f} max {np.max(np.abs(err)):5.1f} ppb NRMSE {r['acc']:.3f}"
        else:
            err = list(r["means"].values())
            acc = (f"MAE {np.mean(np.abs(err)):5.1f} max {np.max(np.abs(err)):5.1f} ppb after "
                   f"{DEFAULT}; mask kept {r['acc']:.2f}")
        rows.append((name, r["wall"], r["peak"], r["peak"] - r["base"], per_it, pairs, d64, acc))

    print()
    print(f"{'method':9s} {'total s':>8s} {'peakRSS MB':>10s} {'+MB':>6s} {'s/iter':>7s} "
          f"{'iter/floor':>10s} {'iter/needed':>11s} {'f32-f64 ppb':>11s}  accuracy")
    for name, wall, peak, dpeak, per_it, pairs, d64, acc in rows:
        it_s = f"{per_it:7.3f}" if per_it is not None else f"{'-':>7s}"
        it_f = f"{per_it / fl_r:10.2f}" if per_it is not None else f"{'-':>10s}"
        it_n = f"{per_it / (pairs * fl_rc):11.2f}" if per_it is not None else f"{'-':>11s}"
        d = f"{d64:11.1e}" if d64 is not None else f"{'-':>11s}"
        print(f"{name:9s} {wall:8.2f} {peak:10.0f} {dpeak:6.0f} {it_s} {it_f} {it_n} {d}  {acc}")
    print("iter/floor: one iteration in units of the full padded real-FFT pair; iter/needed: in "
          "units of the cropped-grid real-FFT pairs the iteration needs (tv_admm/medi/cg/pdf/"
          "resharp 2, rts 1).")


if __name__ == "__main__":
    main()
