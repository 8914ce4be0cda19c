"""FFT convolution with the dipole kernel: ``irfftn(rfftn(x) * D)`` against ``_fftgrid.convolve``.

PDF (100 CG iterations, 4 FFTs each) and MEDI (50 ADMM iterations) spend most of their time in
this pair. ``convolve`` multiplies the spectrum in place and runs the inverse transforms of the
leading axes in place, so each call allocates two complex arrays fewer (the product and
``scipy.fft.irfftn``'s temporary). Prints one table: variant, median and best time per call
(ms), peak memory per call traced by ``tracemalloc`` (MB; it sees numpy's arrays but not
pocketfft's internal temporary, so it does not show that saving), max |difference| relative
to max |result|.

Usage::

    .venv/bin/python benchmarks/fft_convolve.py [--shape 180 240 216] [--repeats 15]

The default shape is the padded PDF grid of the 1 mm simulator head (pad 20 mm).
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np
import scipy.fft as sfft

from qsmprep.qsm import kernels
from qsmprep.qsm._fftgrid import convolve


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=[180, 240, 216])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args(argv)
    shape = tuple(args.shape)
    w = args.workers
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    d = kernels.dipole_kernel(shape, (1.0, 1.0, 1.0), (0.0, 0.0, 1.0), rfft=True, dtype=np.float32)

    variants = {
        "irfftn(rfftn(x) * D)": lambda: sfft.irfftn(sfft.rfftn(x, workers=w) * d, s=shape, workers=w),
        "convolve(x, D)": lambda: convolve(x, d, shape, w),
    }
    ref = variants["irfftn(rfftn(x) * D)"]()
    times = {k: [] for k in variants}
    for _ in range(args.repeats):  # interleaved, so machine drift hits both alike
        for k, f in variants.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    print(f"# shape {shape}, float32, {w} worker(s), {args.repeats} interleaved repeats")
    print(f"{'variant':24s} {'median_ms':>9s} {'best_ms':>8s} {'peak_MB':>8s} {'max_rel_diff':>12s}")
    for k, f in variants.items():
        tracemalloc.start()
        out = f()
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        diff = float(np.abs(out - ref).max() / np.abs(ref).max())
        t = np.asarray(times[k]) * 1e3
        print(f"{k:24s} {np.median(t):9.1f} {t.min():8.1f} {peak:8.0f} {diff:12.2e}")


if __name__ == "__main__":
    main()
