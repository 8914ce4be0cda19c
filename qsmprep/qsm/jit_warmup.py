"""Compile qsmprep's numba kernels once, ahead of a run: ``python -m qsmprep.qsm.jit_warmup``.

The kernels (ROMEO edge weights and region growing, the Gauss-Newton echo fit and its initial
estimate, the exact distance transform, the wrap-to-pi and phase-rescaling passes, the fused
ADMM and conjugate-gradient updates) are compiled on first use and cached on disk
(``NUMBA_CACHE_DIR``, or ``__pycache__`` next to the sources). A fresh installation pays the
compilation (about 8 s on one core) in its first session. The container image runs this module
at build time so that its first run starts with a filled cache; numba reuses a cached kernel
only on a CPU of the same model and features (its cache key), so the image sets
``NUMBA_CPU_NAME=generic`` for build and run alike (code for any x86-64 CPU; the speed it costs
is measured in docs/container.md).

The warm-up runs the default reconstruction (:func:`qsmprep.qsm.pipeline.reconstruct`) on a tiny
synthetic sphere, with the array types the pipeline's interfaces pass (float32 magnitude and
phase), plus the wrap-to-pi pass on float32 and float64 and the phase rescaling on float32
(as LoadGRE passes the stored values), so every kernel gets the signature a
real run asks for.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import numpy as np

__all__ = ["dispatchers", "warm_up", "main"]


def dispatchers() -> dict:
    """The numba dispatchers of qsmprep, by name (importing them imports numba)."""
    from . import _admmkernel, _wrapkernel, echoes, masking, unwrap

    return {
        "unwrap._grow_region": unwrap._grow_region,
        "unwrap._edge_weights_kernel": unwrap._edge_weights_kernel,
        "echoes._initial_estimate_kernel": echoes._initial_estimate_kernel,
        "echoes._gauss_newton_kernel": echoes._gauss_newton_kernel,
        "masking._sq_edt_kernel": masking._sq_edt_kernel,  # compiles _sq_edt_line into it
        "_wrapkernel.wrap_add": _wrapkernel.wrap_add,
        "_wrapkernel.rescale_wrap": _wrapkernel.rescale_wrap,
        # MEDI's float32 iteration (shrink_update serves the other types only)
        "_admmkernel.adjoint_difference": _admmkernel.adjoint_difference,
        "_admmkernel.grad_shrink_update": _admmkernel.grad_shrink_update,
        "_admmkernel.chi_step_spectrum": _admmkernel.chi_step_spectrum,
        "_admmkernel.data_update": _admmkernel.data_update,
        "_admmkernel.cg_step": _admmkernel.cg_step,
        "_admmkernel.cg_direction": _admmkernel.cg_direction,
    }


def _sphere_session(shape=(32, 32, 32), vox=2.0, tes=(4e-3, 9e-3, 14e-3), b0=3.0):
    """Magnitude and wrapped phase (float32, 4-D) of a sphere with a dipole-like field."""
    rng = np.random.default_rng(0)
    g = np.stack(np.meshgrid(*[(np.arange(n) - n / 2 + 0.5) * vox for n in shape],
                             indexing="ij"))
    r = np.sqrt((g ** 2).sum(0))
    inside = r < 0.38 * shape[0] * vox
    field_ppm = 0.05 * (3 * g[2] ** 2 - r ** 2) / (r.max() ** 2) + 0.01 * inside
    gamma = 2 * np.pi * 42.577478e6
    mag = np.stack([np.where(inside, 1.0, 0.02) * np.exp(-t * 25.0) for t in tes], -1)
    phase = np.stack([1.0 + gamma * b0 * 1e-6 * field_ppm * t for t in tes], -1)
    mag = mag + 0.005 * rng.standard_normal(mag.shape)
    phase = np.angle(np.exp(1j * (phase + 0.05 * rng.standard_normal(phase.shape))))
    affine = np.diag([vox, vox, vox, 1.0])
    return np.abs(mag).astype(np.float32), phase.astype(np.float32), np.asarray(tes), b0, affine


def warm_up() -> dict:
    """Compile every kernel with the signatures a default run uses.

    Returns
    -------
    dict
        Kernel name -> number of compiled signatures (0 means the warm-up missed it).
    """
    from .phase import detect_and_rescale_phase, wrap_to_pi
    from .pipeline import reconstruct

    mag, phase, tes, b0, affine = _sphere_session()
    reconstruct(mag, phase, tes, b0, affine)
    for dtype in (np.float32, np.float64):
        wrap_to_pi(np.linspace(-5.0, 9.0, 5000).astype(dtype))
    # the stored phase as LoadGRE passes it (float32, integer values)
    detect_and_rescale_phase(np.round(np.linspace(-4096, 4095, 5000)).astype(np.float32))
    return {name: len(d.signatures) for name, d in dispatchers().items()}


def main(argv=None) -> int:
    """Command line: warm up, print what was compiled, exit 1 if a kernel was missed."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.parse_args(argv)
    logging.getLogger("qsmprep").setLevel(logging.ERROR)  # the tiny sphere's solver notes
    t0 = time.perf_counter()
    counts = warm_up()
    for name, n in counts.items():
        print(f"{name}: {n} signature(s)")
    print(f"numba kernels compiled or loaded in {time.perf_counter() - t0:.1f} s")
    missed = [k for k, n in counts.items() if n == 0]
    if missed:
        print(f"not compiled by the warm-up: {missed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
