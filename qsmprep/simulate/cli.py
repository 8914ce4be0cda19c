"""``qsmprep-simulate``: write a simulated longitudinal QSM cohort (BIDS + ground truth)."""

from __future__ import annotations

import argparse
import sys
import time

from .. import __version__
from .config import PRESETS, SimulationConfig


def build_parser() -> argparse.ArgumentParser:
    """The ``qsmprep-simulate`` command line.

    Returns
    -------
    argparse.ArgumentParser
        ``OUT_DIR`` plus the cohort size, seed, preset and effect options (``--help`` lists
        them with their defaults).
    """
    p = argparse.ArgumentParser(
        prog="qsmprep-simulate",
        description="Simulate a longitudinal multi-echo GRE + T1w cohort (HC/MS, planted "
        "deep gray matter susceptibility effects) as a BIDS dataset with ground truth under "
        "derivatives/qsmprep-truth/.")
    p.add_argument("out_dir", help="output BIDS folder (must be empty or absent)")
    p.add_argument("--version", action="version", version=f"qsmprep-simulate {__version__}")
    p.add_argument("--subjects", type=int, default=2, help="number of subjects (default 2)")
    p.add_argument("--sessions", type=int, default=2, help="sessions per subject (default 2)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="small",
                   help="small: 3 mm GRE / 2 mm T1w (tests); 1mm: 1 mm (benchmarks); "
                        "1mm-aniso: GRE 1 x 1 x 1.5 mm, T1w 1 mm")
    p.add_argument("--n-ms", type=int, default=None,
                   help="number of MS subjects (default: three quarters of the cohort)")
    p.add_argument("--integer-phase", action="store_true",
                   help="write phase as integers -4096..4095 with Units 'arbitrary'")
    p.add_argument("--oblique", action="store_true", help="tilt the GRE slab by 15 degrees")
    p.add_argument("--snr", type=float, default=None, help="magnitude SNR of WM at echo 1")
    p.add_argument("--repeat", action="store_true",
                   help="identical susceptibility at every session (only motion/noise differ)")
    p.add_argument("--change", action="append", default=[], metavar="STRUCTURE=PPB",
                   help="planted change per session step for every subject, e.g. "
                   "--change caudate=10 (repeatable; added on top of the default effects)")
    p.add_argument("--no-effects", action="store_true",
                   help="no group or time effects (only --change and random variation)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT_DIR")
    return p


def main(argv=None) -> int:
    """Simulate a cohort as the command line asks (:func:`qsmprep.simulate.cohort.simulate_cohort`).

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success (one line with the cohort and its folder on stdout); 64 for a bad
        ``--change`` or value; 73 when ``OUT_DIR`` is not empty (without ``--overwrite``).
        argparse's own errors exit 2 and ``--version`` exits 0 (``SystemExit``).

    Example
    -------
    >>> main(["sim/bids", "--subjects", "1", "--sessions", "2", "--seed", "0"])  # doctest: +SKIP
    0
    """
    args = build_parser().parse_args(argv)
    from .cohort import simulate_cohort

    cfg = SimulationConfig(repeat=args.repeat)
    if args.no_effects:
        cfg = cfg.with_(group_effects_ppb={}, time_effects_ppb={}, interaction_effects_ppb={})
    if args.change:
        changes = {}
        for item in args.change:
            name, _, val = item.partition("=")
            try:
                changes[name.strip()] = float(val)
            except ValueError:
                print(f"qsmprep-simulate: error: --change {item!r}: expected STRUCTURE=PPB",
                      file=sys.stderr)
                return 64
        cfg = cfg.with_(changes_ppb=changes)
    if args.snr is not None:
        cfg = cfg.with_(snr=args.snr)
    t0 = time.perf_counter()
    try:
        out = simulate_cohort(args.out_dir, n_subjects=args.subjects, n_sessions=args.sessions,
                              preset=args.preset, seed=args.seed, config=cfg, n_ms=args.n_ms,
                              integer_phase=args.integer_phase, oblique=args.oblique,
                              overwrite=args.overwrite)
    except (ValueError, FileExistsError) as exc:
        print(f"qsmprep-simulate: error: {exc}", file=sys.stderr)
        return 64 if isinstance(exc, ValueError) else 73
    print(f"Simulated {args.subjects} subject(s) x {args.sessions} session(s) "
          f"(preset {args.preset}, seed {args.seed}) in {time.perf_counter() - t0:.1f} s: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
