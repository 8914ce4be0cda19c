"""``python -m qsmprep.qsm.jit_warmup`` (run at image build time) fills the numba cache so that a
later process compiles nothing."""

import json
import os
import subprocess
import sys

CHECK = """
import json
import numpy as np
from qsmprep.qsm.jit_warmup import _sphere_session, dispatchers
from qsmprep.qsm.pipeline import reconstruct
# another shape, voxel size and memory order (nibabel hands the interfaces Fortran-ordered
# arrays) than the warm-up used: the signatures must still match
mag, phase, tes, b0, aff = _sphere_session(shape=(40, 36, 30), vox=1.5)
reconstruct(np.asfortranarray(mag), np.asfortranarray(phase), tes, b0, aff)
# LoadGRE's phase rescaling: stored values as float32, Fortran order, 4-D
from qsmprep.qsm.phase import detect_and_rescale_phase
stored = np.round(np.asfortranarray(phase / np.pi * 4096)).clip(-4096, 4095).astype(np.float32)
detect_and_rescale_phase(stored)
print(json.dumps({k: [sum(d.stats.cache_hits.values()), sum(d.stats.cache_misses.values()),
                      len(d.signatures)] for k, d in dispatchers().items()}))
"""


def _run(args, cache):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True,
                          check=True, timeout=600)


def test_warm_up_compiles_every_kernel_a_run_then_loads(tmp_path):
    """Fails if a kernel is added without the warm-up reaching it, or if the warm-up compiles
    signatures a run does not use (the run would then compile again: a cache miss)."""
    out = _run(["-m", "qsmprep.qsm.jit_warmup"], tmp_path).stdout
    assert "0 signature(s)" not in out
    assert any(tmp_path.rglob("*.nbi")), "no numba cache index written"
    stats = json.loads(_run(["-c", CHECK], tmp_path).stdout.strip().splitlines()[-1])
    for name, (hits, misses, n_sig) in stats.items():
        assert n_sig >= 1, f"{name} did not run"
        assert misses == 0 and hits == n_sig, f"{name}: {hits} cache hits, {misses} misses"
