"""What compiling qsmprep's numba kernels for a generic CPU costs (``NUMBA_CPU_NAME=generic``).

The container image fills the numba cache at build time (``python -m qsmprep.qsm.jit_warmup``).
numba reuses a cached kernel only on the CPU model it was compiled for, unless both build and run
set ``NUMBA_CPU_NAME=generic`` (code for any x86-64 CPU, no AVX). This script measures, per CPU
setting, in a fresh process with an empty cache: the compile time (first run minus second run)
and the steady-state time of the numba-backed steps of one session (brain mask + echo fit with
ROMEO), and checks that both settings give the same total field.

Usage::

    python benchmarks/numba_cpu.py [--preset 1mm] [--cache-dir DIR]

``--cache-dir`` holds ``benchmarks/accuracy.py``'s cached session (simulated if absent).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import numpy as np
sys.path.insert(0, {bench!r})
import accuracy as A
from qsmprep.qsm.kernels import voxel_size_from_affine
from qsmprep.qsm.pipeline import run_field_fit, run_masking
d = A.load_session({preset!r}, 0, 100.0, {cache!r})
vox = tuple(float(v) for v in voxel_size_from_affine(d["affine"]))
mag, phase = d["mag"].astype(np.float32), d["phase"].astype(np.float32)
times = []
for _ in range(2):
    t = time.process_time()
    mask = run_masking(mag, phase, d["tes"], vox, "phase-quality")[0]
    fit = run_field_fit(phase, mag, d["tes"], mask, vox, d["b0"], "nonlinear", "romeo")
    times.append(time.process_time() - t)
field = fit[0]["field_ppm"]
np.save({out!r}, np.asarray(field, np.float32))
print(json.dumps({{"first": times[0], "second": times[1],
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="1mm", choices=["small", "1mm"])
    p.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()))
    a = p.parse_args(argv)
    bench = str(Path(__file__).resolve().parent)
    rows, fields = [], {}
    for cpu in ("host", "generic"):
        with tempfile.TemporaryDirectory() as numba_cache:
            out = str(Path(numba_cache) / "field.npy")
            env = dict(os.environ, NUMBA_CACHE_DIR=numba_cache)
            env.pop("NUMBA_CPU_NAME", None)
            if cpu == "generic":
                env["NUMBA_CPU_NAME"] = "generic"
            code = CHILD.format(bench=bench, preset=a.preset, cache=str(a.cache_dir), out=out)
            res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                 text=True, check=True)
            r = json.loads(res.stdout.strip().splitlines()[-1])
            import numpy as np

            fields[cpu] = np.load(out)
            rows.append((cpu, r["first"] - r["second"], r["second"], r["rss_mb"]))
    import numpy as np

    diff = float(np.max(np.abs(fields["host"] - fields["generic"])))
    print(f"numba-backed steps (brain mask + nonlinear echo fit + ROMEO), preset {a.preset}, CPU s")
    print(f"{'NUMBA_CPU_NAME':>15s} {'compile':>8s} {'steps':>8s} {'peak MB':>8s}")
    for cpu, comp, steps, mb in rows:
        print(f"{cpu:>15s} {comp:8.1f} {steps:8.1f} {mb:8.0f}")
    print(f"# max |total field difference| host vs generic: {diff:.3g} ppm")


if __name__ == "__main__":
    main()
