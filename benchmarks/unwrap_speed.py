"""Speed, peak memory and exactness of the spatial unwrappers on a 1 mm-size masked volume.

    python benchmarks/unwrap_speed.py [--shape 192 224 160] [--methods romeo laplacian skimage]

Each method runs in a fresh subprocess so that its peak resident memory (``ru_maxrss`` minus the
RSS before the call; covers numba/C allocations that ``tracemalloc`` cannot see) is its own.
The test phase is smooth (peak-to-peak > 20 pi inside the brain-sized ellipsoidal mask) plus
Gaussian noise (0.2 rad); "2pi errors" is the fraction of mask voxels whose error, after removing
the best global 2 pi n, exceeds pi; "rms" is the RMS error in rad after removing the median.
Prints one table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np


def make_case(shape, noise=0.2, seed=0):
    vs = (1.0, 1.0, 1.0)
    grids = np.meshgrid(*[np.arange(n, dtype=np.float32) - n / 2 for n in shape], indexing="ij")
    x, y, z = grids
    mask = (x / (0.40 * shape[0])) ** 2 + (y / (0.40 * shape[1])) ** 2 + (z / (0.40 * shape[2])) ** 2 < 1
    true = (
        12 * np.pi * np.exp(-((x - 10) ** 2 + y**2 + (z + 5) ** 2) / (2 * 30.0**2))
        + 0.05 * x
        - 0.03 * y
        + 2.0 * np.sin(z / 15.0)
    ).astype(np.float32)
    rng = np.random.default_rng(seed)
    noisy = true + np.float32(noise) * rng.standard_normal(shape, dtype=np.float32)
    wrapped = (np.mod(noisy + np.pi, 2 * np.pi) - np.pi).astype(np.float32)
    mag = np.where(mask, 1.0, 0.1).astype(np.float32)
    return noisy, wrapped, mask, mag, vs


def _rss_kib():
    with open(f"/proc/{os.getpid()}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def run_one(method, shape):
    from qsmprep.qsm import unwrap

    if method == "romeo":  # compile (or load the numba cache) outside the timing
        s, w, m, g, v = make_case((12, 12, 12))
        unwrap.unwrap_romeo(w, v, mask=m, mag=g)
    truth, wrapped, mask, mag, vs = make_case(shape)
    before = _rss_kib()
    t0 = time.perf_counter()
    out = unwrap.METHODS[method](wrapped, vs, mask=mask, mag=mag)
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    d = (out - truth)[mask].astype(np.float64)
    k = np.round(np.median(d) / (2 * np.pi))
    e = d - 2 * np.pi * k
    frac_2pi = float(np.mean(np.abs(e) > np.pi))
    e -= np.median(e)
    return {
        "method": method,
        "time_s": dt,
        "peak_mib": max(0, peak - before) / 1024.0,
        "frac_2pi_errors": frac_2pi,
        "rms_rad": float(np.sqrt(np.mean(e**2))),
        "n_mask": int(mask.sum()),
        "span_rad": float(np.ptp(truth[mask])),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=[192, 224, 160])
    ap.add_argument("--methods", nargs="+", default=["romeo", "laplacian", "skimage"])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    shape = tuple(args.shape)
    if args.child:
        print(json.dumps(run_one(args.child, shape)))
        return 0
    rows = []
    for m in args.methods:
        res = subprocess.run(
            [sys.executable, __file__, "--child", m, "--shape", *map(str, shape)],
            capture_output=True, text=True, check=True,
        )
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    print(f"shape {shape} (1 mm), mask {rows[0]['n_mask']} voxels, true phase span "
          f"{rows[0]['span_rad'] / np.pi:.1f} pi, noise 0.2 rad, FFT/numba workers: "
          f"{os.environ.get('QSMPREP_FFT_WORKERS', os.environ.get('OMP_NUM_THREADS', 'all'))}")
    print(f"{'method':<10} {'time_s':>8} {'peak_MiB':>9} {'2pi_err_frac':>13} {'rms_rad':>8}")
    for r in rows:
        print(f"{r['method']:<10} {r['time_s']:>8.2f} {r['peak_mib']:>9.0f} "
              f"{r['frac_2pi_errors']:>13.2e} {r['rms_rad']:>8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
