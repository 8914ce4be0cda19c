#!/usr/bin/env python
"""Time and peak memory of simulating one session (in memory) and writing it, per preset.

Each preset runs in a fresh subprocess so the peak resident memory (ru_maxrss) is its own.
Prints one table: preset, GRE matrix, T1w matrix, model build, session, write, peak memory.

    .venv/bin/python benchmarks/simulate_speed.py [small 1mm]
"""

import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, tempfile, time
from pathlib import Path
import numpy as np
from qsmprep.atlas import load_atlas
from qsmprep.simulate import SimulationConfig, simulate_session, build_head_model
from qsmprep.simulate.cohort import write_session
from qsmprep.simulate.config import PRESETS
preset = sys.argv[1]
load_atlas(None)
t0 = time.perf_counter(); model = build_head_model(PRESETS[preset].model_mm); t1 = time.perf_counter()
cfg = SimulationConfig()
d = simulate_session(1, 0, preset=preset, seed=0, config=cfg, group="MS", model=model)
t2 = time.perf_counter()
with tempfile.TemporaryDirectory() as tmp:
    write_session(Path(tmp), "01", "baseline", d, cfg)
t3 = time.perf_counter()
print(json.dumps({"preset": preset, "gre": "x".join(map(str, d.mag.shape)),
                  "gre_mm": float(d.voxel_size[0]), "t1w": "x".join(map(str, d.t1w.shape)),
                  "model_s": t1 - t0, "session_s": t2 - t1, "write_s": t3 - t2,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main(presets):
    rows = []
    for p in presets:
        out = subprocess.run([sys.executable, "-c", CHILD, p], capture_output=True, text=True,
                             check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'preset':7s} {'GRE matrix (mm)':22s} {'T1w matrix':14s} {'model s':>8s} "
          f"{'session s':>9s} {'write s':>8s} {'peak MB':>8s}")
    for r in rows:
        print(f"{r['preset']:7s} {r['gre'] + ' (' + format(r['gre_mm'], 'g') + ')':22s} "
              f"{r['t1w']:14s} {r['model_s']:8.1f} {r['session_s']:9.1f} {r['write_s']:8.1f} "
              f"{r['peak_mb']:8.0f}")


if __name__ == "__main__":
    main(sys.argv[1:] or ["small", "1mm"])
