"""Accuracy of every sensible QSM pipeline on the simulator, against the known susceptibility.

Simulates one session (subject 1, baseline, seed 0; 3 T, the simulator's 6 echoes 4-24 ms and
its default noise, magnitude SNR 100 in WM at echo 1) once and caches the arrays in a .npz in the
temporary directory, then runs unwrapping x background removal x inversion combinations through
:func:`qsmprep.qsm.pipeline.reconstruct`, with the true brain mask, plus the default pipeline with
its own computed mask (what masking costs). Prints one table.

Metrics (benchmarks/metrics.py) are computed inside ``eroded mask & true brain`` on maps that are
both referenced to their mean over that region: NRMSE and HFEN (percent), XSIM, the mean absolute
error of each deep-gray-matter structure mean in ppb (average of |left error| and |right error|),
the linearity slope/intercept of recovered vs true structure means (the six structures, both
hemispheres), and per step the wall time (s) and peak traced memory (MB, numpy allocations via
``tracemalloc``; the whole-process peak RSS is printed at the end). Steps whose inputs are the same
as an earlier run (mask, total field, background removal) are computed once and their time and
memory are reported from that computation.

Usage::

    .venv/bin/python benchmarks/accuracy.py [--preset small|1mm] [--quick] [--out table.tsv]
        [--snr 100] [--seed 0] [--combos romeo:vsharp:medi,...]
        [--options '{"inversion": {"alpha": 1e-4}}'] [--sweep] [--auto-mask-all]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import itertools
import json
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import metrics as M  # noqa: E402

from qsmprep import atlas  # noqa: E402
from qsmprep.qsm import pipeline  # noqa: E402
from qsmprep.qsm.pipeline import QSMOptions, reconstruct  # noqa: E402

#: structures of the default atlas (qsmprep.atlas.DGM_LABELS) without the optional dentate
STRUCTURES = atlas.structures(dentate=False)
#: column names of the result tables (docs/algorithms.md); a structure added to the atlas gets its
#: atlas abbreviation without the hemisphere suffix
ABBR = {"caudate": "CN", "putamen": "PU", "pallidum": "GP", "thalamus": "TH",
        "substantia_nigra": "SN", "red_nucleus": "RN"}
for _lab in atlas.DGM_LABELS:
    ABBR.setdefault(_lab.structure, _lab.abbreviation.rsplit("_", 1)[0])
STEPS = ["masking", "field", "bf_removal", "inversion"]
UNWRAPPINGS = ["romeo", "laplacian"]
BACKGROUNDS = ["vsharp", "pdf", "resharp", "lbv"]
INVERSIONS = ["tkd", "tikhonov", "cg", "tv_admm", "medi", "rts"]


# ----------------------------------------------------------------------------- session cache
def read_session_npz(path: Path) -> dict:
    """A session cached by :func:`load_session` (or ``pdf_diag.py``): arrays, ``label_table``
    as a DataFrame and ``b0`` as a float."""
    z = np.load(path, allow_pickle=False)
    d = {k: z[k] for k in z.files}
    d["label_table"] = pd.read_csv(io.StringIO(str(d["label_table"])), sep="\t")
    d["b0"] = float(d["b0"])
    return d


def load_session(preset: str, seed: int, snr: float, cache_dir: Path | None = None) -> dict:
    """Simulate (or load from the .npz cache) one session; returns a dict of arrays."""
    cache_dir = Path(cache_dir or tempfile.gettempdir())
    path = cache_dir / f"qsmprep_accuracy_{preset}_seed{seed}_snr{snr:g}.npz"
    if path.exists():
        return read_session_npz(path)
    from qsmprep.simulate import SimulationConfig, simulate_session

    t = time.perf_counter()
    s = simulate_session(1, 0, preset=preset, seed=seed, config=SimulationConfig(snr=snr), group="HC")
    print(f"# simulated {preset} session in {time.perf_counter() - t:.0f} s -> {path}", flush=True)
    d = {"chi": s.chi.astype(np.float32), "labels": s.labels, "brain_mask": s.brain_mask,
         "mag": s.mag, "phase": s.phase, "tes": np.asarray(s.tes, float), "affine": s.affine,
         "b0": float(s.b0), "label_table": s.label_table.to_csv(sep="\t", index=False)}
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **d)
    tmp.replace(path)
    d["label_table"] = s.label_table
    return d


# ----------------------------------------------------------------------------- step probes
def _key(*parts):
    h = hashlib.sha1()
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(np.packbits(p.astype(bool)).tobytes() if p.dtype == bool else p.tobytes())
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()


class StepProbe:
    """Wraps the step functions of :mod:`qsmprep.qsm.pipeline` (which ``reconstruct`` calls by
    module-global name): records wall time and peak traced memory of each step, and reuses the
    result of a step whose inputs (and options) were seen before."""

    MEMO = {"total_field": ("field",), "remove_background": ("bf_removal",)}

    def __init__(self):
        self.cache = {}
        self.last = {}
        self._orig = {}

    def _wrap(self, name, step, memo):
        orig = getattr(pipeline, name)
        self._orig[name] = orig

        def wrapped(*args, **kwargs):
            key = None
            if memo:
                items = list(args) + sorted(kwargs.items(), key=lambda kv: kv[0])
                flat = [v for it in items for v in (it if isinstance(it, tuple) and len(it) == 2
                                                    and isinstance(it[0], str) else (it,))]
                key = (name, _key(*flat))
                if key in self.cache:
                    out, rec = self.cache[key]
                    self.last[step] = dict(rec, reused=True)
                    return out
            cur0 = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            t = time.perf_counter()
            out = orig(*args, **kwargs)
            rec = {"time_s": time.perf_counter() - t,
                   "peak_mb": (tracemalloc.get_traced_memory()[1] - cur0) / 2**20}
            self.last[step] = dict(rec, reused=False)
            if memo:
                self.cache[key] = (out, rec)
            return out

        setattr(pipeline, name, wrapped)

    def __enter__(self):
        tracemalloc.start()
        self._wrap("brain_mask", "masking", memo=True)
        self._wrap("total_field", "field", memo=True)
        self._wrap("remove_background", "bf_removal", memo=True)
        self._wrap("dipole_inversion", "inversion", memo=False)
        return self

    def __exit__(self, *exc):
        for name, f in self._orig.items():
            setattr(pipeline, name, f)
        tracemalloc.stop()


# ----------------------------------------------------------------------------- evaluation
def evaluate(res: dict, d: dict) -> dict:
    """Metrics of one reconstruction against the truth (see module docstring)."""
    ev = res["eroded_mask"] & d["brain_mask"]
    truth = M.reference_mean(d["chi"], ev)
    est = M.reference_mean(res["chi_unreferenced"], ev)
    vox = res["voxel_size"]
    out = {"nrmse": M.nrmse(est, truth, ev), "hfen": M.hfen(est, truth, ev),
           "xsim": M.xsim(est, truth, ev), "mask_vox": int(ev.sum()),
           "brain_cov": float(ev.sum() / d["brain_mask"].sum())}
    from qsmprep.roi import roi_statistics

    table = d["label_table"]
    rt = roi_statistics(truth, d["labels"], table, vox, mask=ev)
    re = roi_statistics(est, d["labels"], table, vox, mask=ev)
    err = (re["mean_ppb"].astype(float) - rt["mean_ppb"].astype(float)).to_numpy()
    tv, evv = [], []
    for s in STRUCTURES:
        sel = (table["structure"] == s).to_numpy() & (rt["n_voxels"].to_numpy() > 0)
        out[ABBR[s]] = float(np.mean(np.abs(err[sel]))) if sel.any() else float("nan")
        tv += list(rt["mean_ppb"].astype(float)[sel])
        evv += list(re["mean_ppb"].astype(float)[sel])
    out["max_abs"] = float(np.nanmax([out[ABBR[s]] for s in STRUCTURES]))
    out["slope"], out["intercept"] = M.linearity(tv, evv)
    return out


def run_one(d, probe, unwrapping, bf, inv, true_mask=True, method_options=None, label=""):
    opts = QSMOptions(unwrapping=unwrapping, bf_removal=bf, inversion=inv,
                      method_options=method_options or {})
    probe.last = {}
    t = time.perf_counter()
    res = reconstruct(d["mag"], d["phase"], d["tes"], d["b0"], d["affine"], opts,
                      mask=d["brain_mask"] if true_mask else None)
    wall = time.perf_counter() - t
    row = {"unwrap": unwrapping, "bf": bf, "inversion": inv,
           "mask": "true" if true_mask else opts.masking, "variant": label or "-"}
    row.update(evaluate(res, d))
    for s in STEPS:
        rec = probe.last.get(s)
        row[f"t_{s}"] = rec["time_s"] if rec else 0.0
        row[f"mb_{s}"] = rec["peak_mb"] if rec else 0.0
    row["t_total"] = sum(row[f"t_{s}"] for s in STEPS)
    row["run_wall"] = wall
    return row


def combos(quick: bool):
    if quick:
        return [("romeo", "vsharp", "tkd"), ("romeo", "vsharp", "medi"), ("romeo", "pdf", "rts"),
                ("laplacian", "vsharp", "medi")]
    c = list(itertools.product(["romeo"], BACKGROUNDS, INVERSIONS))
    # Laplacian unwrapping only with the fast SHARP-family removal (its error is in the field,
    # visible with any inversion)
    c += [("laplacian", "vsharp", i) for i in ("tkd", "tikhonov", "medi", "rts")]
    c += [("laplacian", "pdf", "medi")]
    return c


def sweep_variants():
    """Parameter variants of the default pipeline (romeo/vsharp/medi unless stated)."""
    return [
        ("romeo", "vsharp", "medi", {"inversion": {"alpha": 1e-4}}, "medi alpha=1e-4"),
        ("romeo", "vsharp", "medi", {"inversion": {"alpha": 1e-3}}, "medi alpha=1e-3"),
        ("romeo", "vsharp", "medi", {"inversion": {"n_iter": 150}}, "medi n_iter=150"),
        ("romeo", "vsharp", "medi", {"bf_removal": {"radii_mm": [6.0, 5.0, 4.0, 3.0, 2.0]}},
         "vsharp r<=6mm"),
        ("romeo", "vsharp", "tv_admm", {"inversion": {"n_iter": 150}}, "tv n_iter=150"),
        ("romeo", "vsharp", "rts", {"inversion": {"n_iter": 50}}, "rts n_iter=50"),
    ]


COLS = (["unwrap", "bf", "inversion", "mask", "variant", "nrmse", "hfen", "xsim"]
        + [ABBR[s] for s in STRUCTURES] + ["max_abs", "slope", "intercept"]
        + [f"t_{s}" for s in STEPS] + ["t_total"] + [f"mb_{s}" for s in STEPS] + ["brain_cov"])


def format_table(df: pd.DataFrame) -> str:
    hdr = (f"{'unwrap':9s} {'bf':7s} {'inv':8s} {'mask':13s} {'variant':16s} {'NRMSE%':>6s} "
           f"{'HFEN%':>6s} {'XSIM':>5s} " + " ".join(f"{ABBR[s]:>5s}" for s in STRUCTURES)
           + f" {'max':>5s} {'slope':>5s} {'icpt':>6s} | {'t_msk':>5s} {'t_fld':>5s} {'t_bf':>5s} "
           f"{'t_inv':>5s} {'t_tot':>6s} | {'MB_msk':>6s} {'MB_fld':>6s} {'MB_bf':>6s} "
           f"{'MB_inv':>6s} {'cov':>5s}")
    lines = [hdr]
    for _, r in df.iterrows():
        lines.append(
            f"{r.unwrap:9s} {r.bf:7s} {r.inversion:8s} {r['mask']:13s} {r.variant:16s} "
            f"{r.nrmse:6.1f} {r.hfen:6.1f} {r.xsim:5.3f} "
            + " ".join(f"{r[ABBR[s]]:5.1f}" for s in STRUCTURES)
            + f" {r.max_abs:5.1f} {r.slope:5.2f} {r.intercept:6.1f} | {r.t_masking:5.1f} "
            f"{r.t_field:5.1f} {r.t_bf_removal:5.1f} {r.t_inversion:5.1f} {r.t_total:6.1f} | "
            f"{r.mb_masking:6.0f} {r.mb_field:6.0f} {r.mb_bf_removal:6.0f} {r.mb_inversion:6.0f} "
            f"{r.brain_cov:5.2f}")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="1mm", choices=["small", "1mm"])
    p.add_argument("--quick", action="store_true", help="a few combinations only")
    p.add_argument("--out", type=Path, help="also write the table as TSV")
    p.add_argument("--snr", type=float, default=100.0, help="WM magnitude SNR at echo 1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--combos", default=None,
                   help="comma-separated unwrap:bf:inversion triples (overrides the default set)")
    p.add_argument("--options", default=None,
                   help="JSON method_options passed to every run, e.g. '{\"inversion\": {\"alpha\": 1e-4}}'")
    p.add_argument("--sweep", action="store_true", help="add parameter variants of the default")
    p.add_argument("--no-auto-mask", action="store_true", help="skip the computed-mask run")
    p.add_argument("--auto-mask-all", action="store_true",
                   help="run every combination with the computed mask too (not only the default)")
    args = p.parse_args(argv)

    d = load_session(args.preset, args.seed, args.snr, args.cache_dir)
    print(f"# preset {args.preset}: matrix {d['mag'].shape}, {len(d['tes'])} echoes "
          f"{d['tes'][0]*1e3:g}-{d['tes'][-1]*1e3:g} ms, B0 {d['b0']:g} T, SNR {args.snr:g}, "
          f"brain {int(d['brain_mask'].sum())} voxels", flush=True)
    mopts = json.loads(args.options) if args.options else None
    todo = ([tuple(c.split(":")) for c in args.combos.split(",")] if args.combos
            else combos(args.quick))
    dflt = QSMOptions()
    dkey = (dflt.unwrapping, dflt.bf_removal, dflt.inversion)
    # the default pipeline first (true and computed mask), then the variants, then the rest,
    # so an interrupted run has the important rows; the TSV is rewritten after every run
    runs = [(u, b, i, True, mopts, "") for u, b, i in todo if (u, b, i) == dkey]
    if not args.no_auto_mask:
        runs.append((*dkey, False, mopts, ""))
    if args.sweep:
        runs += [(u, b, i, True, o, lab) for u, b, i, o, lab in sweep_variants()]
    runs += [(u, b, i, True, mopts, "") for u, b, i in todo if (u, b, i) != dkey]
    if args.auto_mask_all:
        runs += [(u, b, i, False, mopts, "") for u, b, i in todo if (u, b, i) != dkey]
    rows = []
    t0 = time.perf_counter()
    with StepProbe() as probe:
        for u, b, i, tm, o, lab in runs:
            try:
                rows.append(run_one(d, probe, u, b, i, tm, o, lab))
            except Exception as exc:  # report, keep going
                print(f"# FAILED {u}/{b}/{i} mask={'true' if tm else 'auto'}: {exc!r}", flush=True)
                continue
            r = rows[-1]
            if args.out:
                pd.DataFrame(rows)[COLS].to_csv(args.out, sep="\t", index=False, float_format="%.4g")
            print(f"# done {u}/{b}/{i} {r['mask']} {r['variant']}: NRMSE {r['nrmse']:.1f}% "
                  f"max|DGM err| {r['max_abs']:.1f} ppb slope {r['slope']:.2f} "
                  f"({time.perf_counter() - t0:.0f} s elapsed)", flush=True)
    df = pd.DataFrame(rows)[COLS]
    print(f"\nQSM accuracy, simulator preset {args.preset} (default pipeline: "
          f"{dflt.masking}/{dflt.combination}/{dflt.unwrapping}/{dflt.bf_removal}/"
          f"{dflt.inversion}/{dflt.reference}); DGM columns: mean |error| in ppb; t_* in s; "
          f"MB_*: peak traced MB; cov: evaluated fraction of the true brain")
    print(format_table(df))
    print(f"# process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    if args.out:
        df.to_csv(args.out, sep="\t", index=False, float_format="%.4g")
    return df


if __name__ == "__main__":
    main()
