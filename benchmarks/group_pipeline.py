"""Image-based group validation: simulate a cohort, run qsmprep participant + group, and print
the recovered vs planted effects (issue: group level, "Validation").

Default: 12 MS + 6 HC subjects x 2 sessions at the simulator's small preset, with the seed
study's effects planted by :class:`qsmprep.simulate.config.SimulationConfig` (MS > HC in caudate
and pallidum, MS < HC in thalamus, caudate increases over time, putamen null). Every subject goes
through the full pipeline (QSM reconstruction, longitudinal atlas registration, ROI tables).

    python benchmarks/group_pipeline.py --n-ms 12 --n-hc 6 --workdir /tmp/grp --nprocs 2
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from group_effects import recovered_table  # noqa: E402

from qsmprep.group import DEFAULT_STRUCTURES  # noqa: E402
from qsmprep.simulate.config import SimulationConfig  # noqa: E402


def planted_effects(cfg: SimulationConfig) -> dict:
    out = {}
    for s in DEFAULT_STRUCTURES:
        out[s] = {
            "group": cfg.group_effects_ppb.get(s, 0.0),
            "time": cfg.time_effects_ppb.get(s, 0.0),
            "group_x_time": cfg.interaction_effects_ppb.get(s, 0.0),
        }
    return out


def _run(cmd):
    t = time.perf_counter()
    subprocess.run([str(c) for c in cmd], check=True)
    return time.perf_counter() - t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-ms", type=int, default=12)
    ap.add_argument("--n-hc", type=int, default=6)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--nprocs", type=int, default=2)
    ap.add_argument("--workdir", type=Path, required=True)
    args = ap.parse_args(argv)
    bindir = Path(sys.executable).parent
    n = args.n_ms + args.n_hc
    sim, out, work = args.workdir / "bids", args.workdir / "out", args.workdir / "work"
    timings = {}
    if not (sim / "participants.tsv").exists():
        timings["simulate"] = _run([bindir / "qsmprep-simulate", sim, "--subjects", n, "--sessions", 2,
                                    "--seed", args.seed, "--preset", args.preset, "--n-ms", args.n_ms])
    timings["participant"] = _run([bindir / "qsmprep", sim, out, "participant", "-w", work,
                                   "--nprocs", args.nprocs, "--omp-nthreads", 1])
    timings["group"] = _run([bindir / "qsmprep", sim, out, "group"])
    anova = pd.read_csv(out / "group" / "anova.tsv", sep="\t", na_values="n/a")
    lmm = pd.read_csv(out / "group" / "lmm.tsv", sep="\t", na_values="n/a")
    table = recovered_table(anova, lmm, planted_effects=planted_effects(SimulationConfig()))
    pd.set_option("display.width", 200)
    print(f"\nRecovered vs planted: {args.n_ms} MS + {args.n_hc} HC x 2 sessions, preset {args.preset}, "
          f"seed {args.seed}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print("\nWall time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items())
          + f"; participant per subject {timings['participant'] / n:.0f} s at --nprocs {args.nprocs}")


if __name__ == "__main__":
    main()
