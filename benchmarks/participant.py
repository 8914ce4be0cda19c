#!/usr/bin/env python
"""Participant-level benchmark: per-step wall/CPU/memory, speed-up and accuracy vs a baseline.

Runs ``qsmprep participant`` on ``--subjects`` simulated subjects (default 1) of the
simulator's ``--preset`` (default ``1mm``: GRE and T1w 1 mm; ``1mm-aniso``: GRE 1 x 1 x 1.5 mm
and T1w 1 mm, the protocol issue 14 was timed on, with 2 subjects) with ``--sessions`` sessions
each, in one run (as ``qsmprep bids out participant`` does without ``--participant-label``), in a
child process with Nipype's resource monitor on, and prints

1. a per-step table: wall seconds (sum of node durations), CPU seconds (the monitor's 1 Hz
   CPU-percent samples integrated over each node, all threads and child processes), peak RSS of
   the step's largest node; plus the whole run's wall time, CPU time (``wait4`` rusage of the
   whole process tree, exact), CPU utilisation and the wall time per subject (the run's wall
   time divided by ``--subjects``). The per-step CPU seconds are estimates from
   psutil samples of the worker process and can be badly off for a node that shares its
   worker with others (seen: 197 CPU s for a 41 s node on 2 cores); trust the whole-run CPU.
   With ``--no-monitor`` the run is made as a user makes it, without Nipype's resource
   monitor, which blocks about 0.2 s at the start of every node (its first CPU sample): on
   1 x 1 x 1.5 mm subjects with two sessions the monitored run took 3 % longer for one subject
   and 9 % for two (docs/registration.md, "Sixteenth session"). The per-step wall seconds are
   then still known, CPU and memory per step are not;
2. accuracy on the simulator (``repeat`` mode: identical susceptibility at every session, plus
   planted changes caudate +10, putamen +5, pallidum +20, thalamus -8 ppb, so the true change
   of every structure is known): Dice of the published labels against the true labels (both
   restricted to the published QSM mask), each ROI's ``mean_ppb``, and the error of the
   measured baseline -> last-session change against the true change;
3. with ``--baseline RESULT.json`` (a file this script saved with ``--save`` for another code
   version, e.g. ``--code-commit <sha>``): per-step speed-up and the acceptance checks
   |delta Dice| <= 0.01, |delta mean_ppb| <= 1 ppb for every ROI, and the mean absolute change
   error no larger than the baseline's (+0.05 ppb tolerance for run-to-run noise).

Usage::

    python benchmarks/participant.py [--preset 1mm] [--sessions 2] [--subjects 1] [--seed 11] [--nprocs 2]
        [--omp-nthreads N] [--code-commit SHA | --code DIR] [--save out.json]
        [--baseline base.json | --interleave-with SHA [--repeats N]] [--work DIR]
        [--qsmprep-args '--bf-removal vsharp'] [--no-monitor]

``--interleave-with SHA --repeats N`` runs the code under test and that commit alternately, N
times each, prints every run's whole-run wall and CPU time, and compares the medians (per step
too) and the accuracy. On the machines of issue 14 the same code varied by 5-20 % between runs
minutes apart, so one run against a baseline measured on another day cannot show a change of a
few percent.

``--code-commit`` exports that commit with ``git archive`` into the work folder and runs it
(``PYTHONPATH``), so the baseline is measured by the same script on the same simulated data.
Wall times on a shared machine are noisy: compare CPU seconds as well, and note the load
average printed in the header.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

PLANTED = {"caudate": 10.0, "putamen": 5.0, "pallidum": 20.0, "thalamus": -8.0}

#: per-step grouping of Nipype nodes (first match wins, by substring of the node's path)
STEPS = (
    ("atlas -> subject template SyN", ("atlas_to_template", "atlas_to_t1w", "atlas_to_gre")),
    ("within-subject template", ("subject_template",)),
    ("template brain extraction", ("template_brain_extraction", "t1w_brain_extraction")),
    ("GRE -> T1w rigid", ("gre_to_t1w",)),
    ("T1w -> template rigid", ("t1w_to_template",)),
    ("label resampling", ("labels_to_", "t1w_brain_mask_")),
    ("registration QC", ("registration_qc",)),
    ("QSM (all steps)", ("qsm_",)),
    ("ROI statistics", ("roi_stats", "dgm_change")),
    ("report", ("report",)),
)


def _step_of(node_path: str) -> str:
    for step, keys in STEPS:
        if any(k in node_path for k in keys):
            return step
    return "other (sinks, merges, publication)"


# ------------------------------------------------------------------------------------ data
def simulate(bids: Path, preset: str, sessions: int, seed: int, subjects: int = 1) -> Path:
    """The simulated cohort (made once, reused when ``bids`` already holds one); subject k is the
    same head whatever ``subjects`` (:func:`qsmprep.simulate.simulate_cohort`)."""
    from qsmprep.simulate import SimulationConfig, simulate_cohort

    if (bids / "dataset_description.json").exists():
        return bids
    cfg = SimulationConfig(repeat=True, changes_ppb=dict(PLANTED))
    return simulate_cohort(bids, n_subjects=subjects, n_sessions=sessions, preset=preset,
                           seed=seed, config=cfg, overwrite=True)


def export_commit(commit: str, dest: Path) -> Path:
    """``git archive`` of ``commit`` (of this repository) into ``dest``; returns ``dest``."""
    if (dest / "qsmprep" / "__init__.py").exists():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    repo = Path(__file__).resolve().parents[1]
    arch = subprocess.run(["git", "-C", str(repo), "archive", commit], check=True,
                          capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=arch, check=True)
    return dest


# ------------------------------------------------------------------------------------ child
CHILD = r"""
import sys
from nipype import config as ncfg
_update = ncfg.update_config
def _keep_monitor(cfg):
    cfg = dict(cfg)
    cfg.pop("monitoring", None)
    return _update(cfg)
ncfg.update_config = _keep_monitor
ncfg.enable_resource_monitor()
ncfg.set("execution", "resource_monitor_frequency", "1")
from qsmprep.cli.run import main
main(sys.argv[1:])
"""


def _tree_rss(pid: int) -> int:
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc] + proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run_qsmprep(bids: Path, out: Path, work: Path, nprocs: int, omp: int | None,
                code: Path | None, log: Path, extra: list[str] | None = None,
                monitor: bool = True) -> dict:
    """Run the participant level in a child process; return wall, CPU, peak tree RSS.

    ``monitor=False`` runs it as a user would, without Nipype's resource monitor, which
    blocks about 0.2 s at the start of every node (its first CPU sample,
    ``ResourceMonitor(...)._sample(cpu_interval=0.2)``), also for the plumbing nodes that run
    one after another in the scheduler's process; the per-node CPU and memory are then not
    known."""
    if monitor:
        cmd = [sys.executable, "-c", CHILD]
    else:
        cmd = [sys.executable, "-c", "import sys; from qsmprep.cli.run import main; main(sys.argv[1:])"]
    cmd += [str(bids), str(out), "participant", "-w", str(work), "--nprocs", str(nprocs)]
    if omp:
        cmd += ["--omp-nthreads", str(omp)]
    cmd += list(extra or [])
    # Since --resource-monitor exists, qsmprep sets Nipype's monitor from it (and would switch
    # off the one CHILD enables), so pass it to code versions that have it.
    parser_src = (code or Path(__file__).resolve().parents[1]) / "qsmprep" / "cli" / "parser.py"
    if monitor and parser_src.is_file() and "--resource-monitor" in parser_src.read_text():
        cmd.append("--resource-monitor")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if code is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(code)] + [p for p in [
            os.environ.get("PYTHONPATH")] if p])
    peak = [0]
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        # cwd: Nipype's resource monitor writes its .proc-* sample files there
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env,
                                cwd=str(log.parent))

        def sample():
            while proc.poll() is None:
                peak[0] = max(peak[0], _tree_rss(proc.pid))
                time.sleep(0.5)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        _, status, ru = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    th.join(timeout=2)
    if proc.returncode != 0:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"qsmprep participant failed ({proc.returncode}); log {log}:\n{tail}")
    return {"wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime, "peak_gb": peak[0] / 1e9}


def node_records(work: Path) -> list[dict]:
    """One record per executed node: path, duration, integrated CPU seconds, peak RSS."""
    from nipype.utils.filemanip import loadpkl

    recs = []
    for pkl in work.rglob("result_*.pklz"):
        try:
            res = loadpkl(pkl)
        except Exception:  # noqa: BLE001 - a half-written pickle of a crashed node
            continue
        rt = getattr(res, "runtime", None)
        if rt is None:
            continue
        rt = rt[0] if isinstance(rt, list) else rt
        dur = float(getattr(rt, "duration", 0.0) or 0.0)
        prof = getattr(rt, "prof_dict", None) or {}
        cpu = float("nan")
        if prof.get("time") and len(prof["time"]) > 1:
            t = np.asarray(prof["time"], float)
            # psutil's first samples over a few milliseconds can read thousands of percent;
            # no process uses more cores than the machine has
            c = np.clip(np.asarray(prof["cpus"], float) / 100.0, 0.0, os.cpu_count() or 1)
            cpu = float(np.sum(0.5 * (c[1:] + c[:-1]) * np.diff(t)))
        elif prof.get("cpus"):
            cpu = float(prof["cpus"][0]) / 100.0 * dur
        path = str(pkl.parent.relative_to(work))
        recs.append({"node": path, "step": _step_of(path), "wall_s": dur, "cpu_s": cpu,
                     "peak_gb": float(getattr(rt, "mem_peak_gb", None) or float("nan")),
                     "start": str(getattr(rt, "startTime", "")),
                     "end": str(getattr(rt, "endTime", ""))})
    return recs


def step_table(recs: list[dict]) -> dict:
    """Per-step sums of node wall and CPU seconds and the largest node's peak RSS (CPU and
    memory NaN for a step none of whose nodes was monitored)."""
    out = {}
    for r in recs:
        s = out.setdefault(r["step"], {"wall_s": 0.0, "cpu_s": float("nan"),
                                       "peak_gb": float("nan"), "nodes": 0})
        s["wall_s"] += r["wall_s"]
        if not np.isnan(r["cpu_s"]):
            s["cpu_s"] = r["cpu_s"] + (0.0 if np.isnan(s["cpu_s"]) else s["cpu_s"])
        if not np.isnan(r["peak_gb"]):
            s["peak_gb"] = max(r["peak_gb"], 0.0 if np.isnan(s["peak_gb"]) else s["peak_gb"])
        s["nodes"] += 1
    return out


# ------------------------------------------------------------------------------------ accuracy
def _native(folder: Path, pattern: str) -> Path:
    """The one file matching ``pattern`` on the GRE grid (no ``space-`` entity)."""
    hits = sorted(p for p in folder.glob(pattern) if "_space-" not in p.name)
    if len(hits) != 1:
        raise FileNotFoundError(f"{folder}: expected one {pattern} without space-, found {hits}")
    return hits[0]


def accuracy(bids: Path, out: Path, sessions: list[str], subjects: list[str] | None = None) -> dict:
    """Dice, table error and change error of every ROI of every subject (``subjects``: labels
    without ``sub-``; default ``["01"]``)."""
    import nibabel as nb
    import pandas as pd

    subjects = subjects or ["01"]

    def key(sub, i):
        # one subject keeps the ROI index alone (the rows of earlier saved results)
        return int(i) if len(subjects) == 1 else f"{sub}:{int(i)}"

    rows = {}
    for sub in subjects:
        stats = {}
        for ses in sessions:
            an = out / f"sub-{sub}" / f"ses-{ses}" / "anat"
            tr = bids / "derivatives" / "qsmprep-truth" / f"sub-{sub}" / f"ses-{ses}" / "anat"
            dseg = np.asarray(nb.load(_native(an, "*_dseg.nii.gz")).dataobj)
            mask = np.asarray(nb.load(_native(an, "*_desc-brain_mask.nii.gz")).dataobj) > 0
            lab_t = np.asarray(nb.load(_native(tr, "*_desc-truth_dseg.nii.gz")).dataobj)
            truth = np.where(mask, lab_t, 0)
            df = pd.read_csv(next(an.glob("*_desc-dgm_stats.tsv")), sep="\t", na_values=["n/a"])
            tstats = pd.read_csv(next(tr.glob("*_desc-truth_stats.tsv")), sep="\t",
                                 na_values=["n/a"]).set_index("index")
            stats[ses] = (df.set_index("index"), tstats)
            # the truth the table estimates: each true label's mean minus the true map's mean
            # over the run's reference region (the published Chimap's support: mean referencing)
            chi_t = np.asarray(nb.load(_native(tr, "*_desc-truth_Chimap.nii.gz")).dataobj, float)
            ref = np.asarray(nb.load(_native(an, "*_Chimap.nii.gz")).dataobj) != 0
            ref_t = float(chi_t[ref].mean())
            for _, r in df.iterrows():
                i = int(r["index"])
                x, y = dseg == i, truth == i
                s = x.sum() + y.sum()
                name = r["name"] if len(subjects) == 1 else f"sub-{sub} {r['name']}"
                rec = rows.setdefault(key(sub, i), {"index": key(sub, i), "name": name,
                                                    "structure": r["structure"]})
                rec[f"dice_{ses}"] = float(2 * np.sum(x & y) / s) if s else float("nan")
                rec[f"mean_{ses}"] = float(r["mean_ppb"])
                sel = lab_t == i
                rec[f"err_{ses}"] = (float(r["mean_ppb"]) - 1e3 * (float(chi_t[sel].mean()) - ref_t)
                                     if sel.any() else float("nan"))
                if {"qc_flagged"} <= set(df.columns):
                    rec[f"qc_flagged_{ses}"] = int(df["qc_flagged"].iloc[0])
        b, f = sessions[0], sessions[-1]
        for i in stats[b][0].index:
            rec = rows[key(sub, i)]
            meas = stats[f][0].loc[i, "mean_ppb"] - stats[b][0].loc[i, "mean_ppb"]
            true = stats[f][1].loc[i, "mean_ppb"] - stats[b][1].loc[i, "mean_ppb"]
            rec["change_ppb"] = float(meas)
            rec["true_change_ppb"] = float(true)
            rec["change_err_ppb"] = float(meas - true)
    return {"rois": list(rows.values()), "sessions": sessions, "subjects": subjects}


def _fmt_table(header, rows):
    widths = [max(len(str(h)), *(len(str(r[k])) for r in rows)) for k, h in enumerate(header)]
    lines = ["  ".join(str(h).rjust(w) if k else str(h).ljust(w)
                       for k, (h, w) in enumerate(zip(header, widths)))]
    lines.append("-" * (sum(widths) + 2 * len(widths)))
    for r in rows:
        lines.append("  ".join(str(v).rjust(w) if k else str(v).ljust(w)
                               for k, (v, w) in enumerate(zip(r, widths))))
    return "\n".join(lines)


def report(res: dict, base: dict | None) -> int:
    steps = res["steps"]
    names = [s for s, _ in STEPS] + ["other (sinks, merges, publication)"]
    n_sub = len(res["accuracy"].get("subjects", ["01"]))
    print(f"# participant benchmark: code {res['label']}, preset {res['preset']}, "
          f"{n_sub} subject(s) x {len(res['accuracy']['sessions'])} session(s), seed "
          f"{res['seed']}, --nprocs "
          f"{res['nprocs']}, load average at start {res['load_start']:.1f} / end "
          f"{res['load_end']:.1f} (machine shared: wall times are noisy, compare CPU too)"
          + ("" if res.get("monitor", True) else
             "; no resource monitor (as a user runs it): per-step CPU and memory not measured"))
    header = ["step", "wall_s", "cpu_s", "peak_gb"]
    if base:
        header += ["base_wall_s", "base_cpu_s", "speedup_wall", "speedup_cpu"]
    rows = []
    for n in names:
        s = steps.get(n)
        b = (base or {}).get("steps", {}).get(n) if base else None
        if s is None and b is None:
            continue
        s = s or {"wall_s": 0.0, "cpu_s": 0.0, "peak_gb": 0.0}
        row = [n, f"{s['wall_s']:.1f}", f"{s['cpu_s']:.1f}", f"{s['peak_gb']:.2f}"]
        if base:
            b = b or {"wall_s": 0.0, "cpu_s": 0.0}
            row += [f"{b['wall_s']:.1f}", f"{b['cpu_s']:.1f}",
                    f"{b['wall_s'] / s['wall_s']:.1f}x" if s["wall_s"] > 0.05 else "removed",
                    "-" if np.isnan(s["cpu_s"]) or np.isnan(b["cpu_s"])
                    else f"{b['cpu_s'] / s['cpu_s']:.1f}x" if s["cpu_s"] > 0.05 else "removed"]
        rows.append(row)
    tot = res["total"]
    row = ["WHOLE RUN (wall clock, process-tree CPU)", f"{tot['wall_s']:.1f}",
           f"{tot['cpu_s']:.1f}", f"{tot['peak_gb']:.2f}"]
    if base:
        bt = base["total"]
        row += [f"{bt['wall_s']:.1f}", f"{bt['cpu_s']:.1f}",
                f"{bt['wall_s'] / tot['wall_s']:.2f}x", f"{bt['cpu_s'] / tot['cpu_s']:.2f}x"]
    rows.append(row)
    print(_fmt_table(header, rows))
    print(f"CPU utilisation {100 * tot['cpu_s'] / tot['wall_s']:.0f} % of "
          f"{100 * res['nprocs']} %; {tot['wall_s'] / 60 / n_sub:.2f} min per subject"
          + (f" (baseline {base['label']}: {base['total']['wall_s'] / 60 / n_sub:.2f} min)"
             if base else ""))

    acc = {r["index"]: r for r in res["accuracy"]["rois"]}
    sess = res["accuracy"]["sessions"]
    hdr = ["roi"] + [f"dice_{s}" for s in sess] + [f"mean_{s}" for s in sess] + [
        "change_err_ppb"]
    if base:
        bacc = {r["index"]: r for r in base["accuracy"]["rois"]}
        hdr += ["max_d_dice", "max_d_mean_ppb", "base_change_err"]
    rows = []
    worst_dice = worst_mean = 0.0
    for i, r in acc.items():
        row = [r["name"]] + [f"{r[f'dice_{s}']:.3f}" for s in sess] + [
            f"{r[f'mean_{s}']:.1f}" for s in sess] + [f"{r['change_err_ppb']:+.2f}"]
        if base and i in bacc:
            b = bacc[i]
            common = [s for s in sess if f"dice_{s}" in b]
            dd = max(abs(r[f"dice_{s}"] - b[f"dice_{s}"]) for s in common)
            dm = max(abs(r[f"mean_{s}"] - b[f"mean_{s}"]) for s in common)
            worst_dice, worst_mean = max(worst_dice, dd), max(worst_mean, dm)
            row += [f"{dd:.3f}", f"{dm:.2f}", f"{b['change_err_ppb']:+.2f}"]
        rows.append(row)
    print(_fmt_table(hdr, rows))
    mae = float(np.mean([abs(r["change_err_ppb"]) for r in acc.values()]))
    unchanged = [abs(r["change_err_ppb"]) for r in acc.values()
                 if PLANTED.get(r["structure"], 0.0) == 0.0]
    print(f"change error (measured - true), mean |.| over all ROIs {mae:.2f} ppb, over "
          f"unchanged ROIs {np.mean(unchanged):.2f} ppb")
    errs = [abs(r[f"err_{s}"]) for r in acc.values() for s in sess if f"err_{s}" in r]
    if errs:
        worst = max(((abs(r[f"err_{s}"]), r["name"], s) for r in acc.values() for s in sess
                     if f"err_{s}" in r), key=lambda t: t[0])
        print(f"table error (reported mean - true label mean, both against the run's reference "
              f"region): max |.| {worst[0]:.1f} ppb ({worst[1]}, {worst[2]}), mean |.| "
              f"{np.nanmean(errs):.1f} ppb")
    ok = True
    if base:
        bmae = float(np.mean([abs(r["change_err_ppb"]) for r in base["accuracy"]["rois"]]))
        checks = [
            (f"max |delta Dice| {worst_dice:.4f} <= 0.01", worst_dice <= 0.01),
            (f"max |delta mean_ppb| {worst_mean:.3f} <= 1 ppb", worst_mean <= 1.0),
            (f"change error {mae:.2f} ppb <= baseline {bmae:.2f} ppb (+0.05)",
             mae <= bmae + 0.05),
        ]
        for text, passed in checks:
            print(("PASS  " if passed else "FAIL  ") + text)
            ok &= passed
    return 0 if ok else 2


def run_once(bids: Path, work: Path, code: Path | None, label: str, args) -> dict:
    """One participant run of ``code`` (None: this tree) on ``bids``; the results dict."""
    tag = "".join(c if c.isalnum() else "_" for c in label)
    out, wdir = work / f"out-{tag}", work / f"work-{tag}"
    for d in (out, wdir):
        if d.exists():
            import shutil

            shutil.rmtree(d)
    load0 = os.getloadavg()[0]
    tot = run_qsmprep(bids, out, wdir, args.nprocs, args.omp_nthreads, code,
                      work / f"log-{tag}.txt", shlex.split(args.qsmprep_args),
                      monitor=not args.no_monitor)
    load1 = os.getloadavg()[0]
    recs = node_records(wdir)
    from qsmprep.simulate.config import session_names

    subjects = [f"{k:02d}" for k in range(1, args.subjects + 1)]
    return {"label": label, "preset": args.preset, "seed": args.seed, "nprocs": args.nprocs,
            "monitor": not args.no_monitor,
            "load_start": load0, "load_end": load1, "total": tot, "steps": step_table(recs),
            "nodes": recs,
            "accuracy": accuracy(bids, out, session_names(args.sessions), subjects)}


def median_result(runs: list[dict]) -> dict:
    """One results dict from repeated runs of one code version: the median whole-run and
    per-step times; nodes and accuracy of the first run (the same code gives the same maps)."""
    med = dict(runs[0])
    med["label"] = f"{runs[0]['label'].rsplit('#', 1)[0]} (median of {len(runs)})"
    med["total"] = {k: float(np.median([r["total"][k] for r in runs])) for k in runs[0]["total"]}
    steps = {}
    for name in runs[0]["steps"]:
        vals = [r["steps"].get(name) for r in runs if name in r["steps"]]
        steps[name] = {k: float(np.median([v[k] for v in vals])) for k in vals[0]}
    med["steps"] = steps
    med["load_start"] = float(np.median([r["load_start"] for r in runs]))
    med["load_end"] = float(np.median([r["load_end"] for r in runs]))
    return med


def print_interleaved(pairs: list[tuple[dict, dict]]) -> None:
    """Whole-run wall / CPU of every run in the order they ran, and the medians."""
    print("# interleaved runs (same machine, alternating code versions)")
    rows = []
    for k, (cur, base) in enumerate(pairs, 1):
        for r in (cur, base):
            rows.append([f"{k}: {r['label']}", f"{r['total']['wall_s']:.1f}",
                         f"{r['total']['cpu_s']:.1f}", f"{r['load_start']:.1f}"])
    print(_fmt_table(["run", "wall_s", "cpu_s", "load_start"], rows))
    for name, idx in (("this code", 0), ("baseline", 1)):
        w = [p[idx]["total"]["wall_s"] for p in pairs]
        c = [p[idx]["total"]["cpu_s"] for p in pairs]
        print(f"{name}: median wall {np.median(w):.1f} s (range {min(w):.1f}-{max(w):.1f}), "
              f"median CPU {np.median(c):.1f} s (range {min(c):.1f}-{max(c):.1f})")
    print()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="1mm")
    ap.add_argument("--sessions", type=int, default=2)
    ap.add_argument("--subjects", type=int, default=1,
                    help="subjects in the run (issue 14 timed 2; the table gives wall per subject)")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--nprocs", type=int, default=2)
    ap.add_argument("--omp-nthreads", type=int, default=None)
    ap.add_argument("--no-monitor", action="store_true",
                    help="run without Nipype's resource monitor, as a user does (it adds about "
                         "0.2 s to every node); per-step CPU and memory are then not measured")
    ap.add_argument("--qsmprep-args", default="",
                    help="further qsmprep options, one string (e.g. '--bf-removal vsharp')")
    ap.add_argument("--code", type=Path, default=None, help="qsmprep source tree to run")
    ap.add_argument("--code-commit", default=None, help="git commit to export and run")
    ap.add_argument("--label", default=None, help="name of the code version in the table")
    ap.add_argument("--work", type=Path, default=None, help="work folder (kept)")
    ap.add_argument("--save", type=Path, default=None, help="write the results as JSON")
    ap.add_argument("--baseline", type=Path, default=None, help="results JSON to compare with")
    ap.add_argument("--interleave-with", default=None, metavar="COMMIT",
                    help="also run this commit, alternating with the code under test "
                         "(--repeats times each), and compare medians")
    ap.add_argument("--repeats", type=int, default=1,
                    help="runs of each code version with --interleave-with (default 1)")
    ap.add_argument("--show", type=Path, default=None,
                    help="only print the tables of a saved results JSON (with --baseline)")
    args = ap.parse_args(argv)
    if args.interleave_with and args.baseline:
        ap.error("--interleave-with measures its own baseline: drop --baseline")
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    if args.subjects < 1:
        ap.error("--subjects must be at least 1")

    base = json.loads(args.baseline.read_text()) if args.baseline else None
    if args.show:
        return report(json.loads(args.show.read_text()), base)

    work = (args.work or Path(tempfile.mkdtemp(prefix="qsmprep-partbench-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    repo = Path(__file__).resolve().parents[1]

    def resolve(commit):
        sha = subprocess.run(["git", "-C", str(repo), "rev-parse", commit], check=True,
                             capture_output=True, text=True).stdout.strip()
        return export_commit(sha, work / f"code-{sha[:10]}"), sha[:10]

    code, label = args.code, args.label
    if args.code_commit:
        code, short = resolve(args.code_commit)
        label = label or short
    if label is None:
        try:
            label = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short=10", "HEAD"],
                                   check=True, capture_output=True, text=True).stdout.strip() + "(tree)"
        except (OSError, subprocess.CalledProcessError):
            label = "working tree"
    sub_tag = "" if args.subjects == 1 else f"-{args.subjects}sub"
    bids = simulate(work / f"sim-{args.preset}-{args.sessions}ses{sub_tag}-seed{args.seed}",
                    args.preset, args.sessions, args.seed, args.subjects)
    if not args.interleave_with:
        res = run_once(bids, work, code, label, args)
        if args.save:
            args.save.write_text(json.dumps(res, indent=1))
        return report(res, base)

    # A/B/A/B...: the machine's drift (5-15 % between runs minutes apart, more on a shared
    # machine) hits both versions alike; the medians are compared
    base_code, base_label = resolve(args.interleave_with)
    pairs = []
    for k in range(1, args.repeats + 1):
        cur = run_once(bids, work, code, f"{label}#{k}", args)
        old = run_once(bids, work, base_code, f"{base_label}#{k}", args)
        pairs.append((cur, old))
    res, base = median_result([p[0] for p in pairs]), median_result([p[1] for p in pairs])
    if args.save:
        args.save.write_text(json.dumps({**res, "runs": [p[0] for p in pairs],
                                         "baseline_runs": [p[1] for p in pairs]}, indent=1))
    print_interleaved(pairs)
    return report(res, base)


if __name__ == "__main__":
    sys.exit(main())
