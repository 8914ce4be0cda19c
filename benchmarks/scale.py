#!/usr/bin/env python
"""Scale benchmark: BIDS indexing at cohort size, per-participant cost, projected cluster time.

    python benchmarks/scale.py [--subjects 200] [--participant | --participant-seconds S --participant-gb G]
                               [--nodes 1 2 4 8 16 40 80 160] [--node-cpus 2] [--node-mem-gb 24]

Measures and prints one table:

1. pybids indexing (``qsmprep.bids.build_layout``) of a synthetic dataset of ``--subjects`` x 2
   sessions of tiny files (T1w + 4 echoes x magnitude/phase per session, JSON sidecars, a
   top-level ``MEGRE.json``): cold into a new ``--bids-database-dir``, warm reusing it, and the
   in-memory index of one participant (what a task without the shared database pays).
   Targets: cold < 60 s, warm < 5 s.
2. ``--participant``: one simulated subject (2 sessions) at the 1 mm preset through
   ``qsmprep participant --nprocs 2``: wall time and peak memory (sum of the RSS of the whole
   process tree, sampled every 0.5 s).
3. ``--group-subjects N`` (e.g. 1000): the group level (``qsmprep BIDS OUT group``, a fresh
   process, so start-up is included) on N synthetic subjects x 2 sessions of participant
   outputs (``*_desc-dgm_stats.tsv`` with the simulator's DGM values, group and time effects,
   and ``participants.tsv``): wall and CPU time, peak memory (``ru_maxrss``) and the number of
   participants the group tables contain. Target <= 15 s for 1,000 subjects. Then a table of
   the CPU seconds per part (inputs, long/analysis tables, each statistic, TSV writing, figures,
   provenance, report, start-up) from one more run with the steps timed inside the process.
   ``--group-baseline ed15f88`` runs the same on the source of that commit (``git archive``),
   side by side, and checks that every TSV/JSON output is byte-identical; ``--group-repeat R``
   keeps the fastest of R runs per version:

       python benchmarks/scale.py --skip-index --group-subjects 1000 --group-baseline ed15f88
4. Projection for the seed study's cohort (160 subjects x 2 sessions) on N nodes: tasks per node
   = min(node CPUs // 2, node memory // peak memory); wall = index (cold) + ceil(160 / (N x
   tasks per node)) x participant time + group time. The participant time and memory come from
   step 2, or from ``--participant-seconds``/``--participant-gb`` (e.g. measured elsewhere).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def make_dataset(root: Path, n_subjects: int, n_sessions: int = 2, n_echoes: int = 4) -> int:
    """Write a BIDS dataset of tiny files; return the number of files written."""
    import nibabel as nib

    root.mkdir(parents=True)
    tiny = root / "_tiny.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.int16), np.eye(4)), str(tiny))
    blob = tiny.read_bytes()
    tiny.unlink()
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "scale benchmark", "BIDSVersion": "1.9.0"}))
    (root / "MEGRE.json").write_text(json.dumps({"MagneticFieldStrength": 3.0}))
    rows = ["participant_id\tgroup\tage\tsex"]
    n = 2
    for s in range(1, n_subjects + 1):
        sub = f"sub-{s:03d}"
        rows.append(f"{sub}\t{'MS' if s % 2 else 'HC'}\t{30 + s % 40}\t{'F' if s % 3 else 'M'}")
        for ses in ("baseline", "followup")[:n_sessions]:
            anat = root / sub / f"ses-{ses}" / "anat"
            anat.mkdir(parents=True)
            (anat / f"{sub}_ses-{ses}_T1w.nii.gz").write_bytes(blob)
            (anat / f"{sub}_ses-{ses}_T1w.json").write_text('{"RepetitionTime": 2.3}')
            n += 2
            for e in range(1, n_echoes + 1):
                for part in ("mag", "phase"):
                    stem = anat / f"{sub}_ses-{ses}_echo-{e}_part-{part}_MEGRE"
                    Path(f"{stem}.nii.gz").write_bytes(blob)
                    side = {"EchoTime": 0.004 * e}
                    if part == "phase":
                        side["Units"] = "rad"
                    Path(f"{stem}.json").write_text(json.dumps(side))
                    n += 2
    (root / "participants.tsv").write_text("\n".join(rows) + "\n")
    return n + 1


def time_indexing(bids: Path, work: Path) -> dict:
    try:
        from qsmprep.bids import build_layout

        def index(database_dir=None, labels=None):
            return build_layout(bids, database_dir=database_dir, participant_labels=labels,
                                validate=False)
        how = "qsmprep.bids.build_layout"
    except ImportError:  # before qsmprep.bids existed
        from bids import BIDSLayout

        def index(database_dir=None, labels=None):
            return BIDSLayout(str(bids), validate=False, database_path=database_dir)
        how = "bids.BIDSLayout"

    db = work / "bids_db"
    t0 = time.perf_counter()
    layout = index(db)
    cold = time.perf_counter() - t0
    n_megre = len(layout.get(suffix="MEGRE", extension=".nii.gz"))
    # metadata really indexed (get_metadata silently returns {} otherwise)
    some = layout.get(suffix="MEGRE", extension=".nii.gz")[0]
    assert "EchoTime" in layout.get_metadata(some.path)
    del layout
    t0 = time.perf_counter()
    layout = index(db)
    warm = time.perf_counter() - t0
    assert len(layout.get(suffix="MEGRE", extension=".nii.gz")) == n_megre
    t0 = time.perf_counter()
    one = index(None, ["001"])
    single = time.perf_counter() - t0
    assert len(one.get(suffix="MEGRE", extension=".nii.gz")) == n_megre // max(
        1, len(layout.get_subjects()))
    return {"how": how, "cold": cold, "warm": warm, "single": single, "n_megre": n_megre}


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


def run_participant(work: Path, nprocs: int = 2) -> dict:
    bindir = Path(sys.executable).parent
    sim = shutil.which("qsmprep-simulate", path=str(bindir)) or "qsmprep-simulate"
    app = shutil.which("qsmprep", path=str(bindir)) or "qsmprep"
    bids = work / "sim1mm"
    t0 = time.perf_counter()
    subprocess.run([sim, str(bids), "--subjects", "1", "--sessions", "2", "--seed", "3",
                    "--preset", "1mm"], check=True, stdout=subprocess.DEVNULL)
    t_sim = time.perf_counter() - t0
    peak = [0]
    cmd = [app, str(bids), str(work / "out1mm"), "participant", "-w", str(work / "work1mm"),
           "--nprocs", str(nprocs)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def sample():
        while proc.poll() is None:
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            time.sleep(0.5)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - t0
    th.join()
    if proc.returncode != 0:
        raise RuntimeError(f"qsmprep participant failed ({proc.returncode}):\n{err[-3000:]}")
    t0 = time.perf_counter()
    subprocess.run([app, str(bids), str(work / "out1mm"), "group", "-w", str(work / "work1mm")],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    group = time.perf_counter() - t0
    return {"seconds": wall, "gb": peak[0] / 1e9, "simulate": t_sim, "group": group}


def make_group_inputs(root: Path, n_subjects: int, seed: int = 0) -> tuple[Path, Path]:
    """Synthetic participant outputs (ROI tables) + participants.tsv for the group level."""
    import pandas as pd

    from qsmprep.atlas import load_atlas
    from qsmprep.roi import COLUMNS as ROI_COLUMNS
    from qsmprep.simulate.config import SimulationConfig

    cfg = SimulationConfig()
    labels = load_atlas(None).labels
    labels = labels[["index", "name", "structure", "hemisphere"]].reset_index(drop=True)
    rng = np.random.default_rng(seed)
    bids, out = root / "bids", root / "out"
    bids.mkdir(parents=True)
    out.mkdir(parents=True)
    (bids / "dataset_description.json").write_text(json.dumps(
        {"Name": "group scale benchmark", "BIDSVersion": "1.9.0"}))
    (out / "dataset_description.json").write_text(json.dumps(
        {"Name": "qsmprep", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
         "GeneratedBy": [{"Name": "qsmprep"}]}))
    base = labels["structure"].map(lambda st: 1000 * cfg.chi_ppm.get(st, 0.05)).to_numpy()
    rows = ["participant_id\tgroup\tage\tsex"]
    width = max(3, len(str(n_subjects)))
    try:  # the faults helper's completion marker, when this version has it
        from qsmprep import publish as _publish
        mark = getattr(_publish, "mark_complete", None)
    except ImportError:
        mark = None
    for s in range(1, n_subjects + 1):
        label = f"{s:0{width}d}"
        group = "MS" if s % 2 else "HC"
        rows.append(f"sub-{label}\t{group}\t{30 + s % 40}\t{'F' if s % 3 else 'M'}")
        subj = base + rng.normal(0, cfg.between_subject_sd_ppb, len(base))
        if group == "MS":
            subj = subj + labels["structure"].map(cfg.group_effects_ppb).fillna(0).to_numpy()
        for k, ses in enumerate(("baseline", "followup")):
            mean = subj + k * labels["structure"].map(cfg.time_effects_ppb).fillna(0).to_numpy()
            mean = mean + rng.normal(0, cfg.within_subject_sd_ppb, len(base))
            df = labels.assign(mean_ppb=mean, median_ppb=mean + rng.normal(0, 1, len(base)),
                               sd_ppb=rng.uniform(15, 30, len(base)),
                               n_voxels=rng.integers(200, 9000, len(base)))
            df["volume_mm3"] = df["n_voxels"].astype(float)
            df = df[ROI_COLUMNS]  # the participant-level table contract (qsmprep.roi)
            anat = out / f"sub-{label}" / f"ses-{ses}" / "anat"
            anat.mkdir(parents=True)
            df.to_csv(anat / f"sub-{label}_ses-{ses}_atlas-DGM_desc-dgm_stats.tsv", sep="\t",
                      index=False, float_format="%.4f")
        if mark is not None:
            mark(out, label)
    (bids / "participants.tsv").write_text("\n".join(rows) + "\n")
    return bids, out


#: run inside the group process (unless ``--no-group-parts``): wraps the group level's steps (names that
#: exist in the baseline ed15f88 and later) and writes their wall/CPU seconds as JSON
_PARTS_DRIVER = r"""
import functools, json, sys, time
out_json = sys.argv.pop(1)
parts = {}
def timed(label, f):
    @functools.wraps(f)
    def w(*a, **k):
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            return f(*a, **k)
        finally:
            p = parts.setdefault(label, [0.0, 0.0])
            p[0] += time.perf_counter() - t0
            p[1] += time.process_time() - c0
    return w
def clock(label, f, *a):
    return timed(label, f)(*a)
cli = clock("import qsmprep.cli.run", lambda: __import__("qsmprep.cli.run", fromlist=["run"]))
clock("import qsmprep.group (and what it imports at the top)", lambda: __import__("qsmprep.group.run"))
import qsmprep.stats as qstats
import qsmprep.group.run as grun
import qsmprep.group.report as grep_
import qsmprep.group.inputs as ginp
for mod, name, label in [
    (ginp.GroupInputs, "long_table", "long table (dgm_long)"),  # after ed15f88
    (grun, "collect_inputs", "inputs: find, read and check ROI tables + participants.tsv"),
    (qstats, "build_long_table", "long table (dgm_long)"),
    (qstats, "analysis_table", "analysis table (dgm_analysis)"),
    (qstats, "descriptives", "descriptives"),
    (qstats, "mixed_anova", "mixed ANOVA"),
    (qstats, "follow_up_ttests", "t-tests"),
    (qstats, "fit_lmm", "linear mixed model"),
    (grun, "write_table", "write TSV + JSON tables"),
    (grep_, "make_figures", "figures (SVG)"),
    (grun, "collect_provenance", "provenance (Chimap sidecars)"),
    (grep_, "write_report", "report.html"),
]:
    if hasattr(mod, name):
        setattr(mod, name, timed(label, getattr(mod, name)))
grun_run_group = grun.run_group
import qsmprep.group as gpkg
gpkg.run_group = timed("run_group (total)", grun_run_group)
code = clock("qsmprep CLI run (total)", cli.run, sys.argv[1:])
Path = __import__("pathlib").Path
Path(out_json).write_text(json.dumps(parts))
sys.exit(code)
"""


def _code_tree(commit: str, dest: Path) -> Path:
    """Source of ``commit`` (``git archive`` of this repository) in ``dest``."""
    import io
    import tarfile

    repo = Path(__file__).resolve().parents[1]
    shutil.rmtree(dest, ignore_errors=True)
    blob = subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", commit],
                          check=True, capture_output=True).stdout
    dest.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(dest)
    return dest


def _group_process(cmd: list, env: dict, cwd: Path) -> dict:
    """Run one group-level process; wall, CPU (user + system) and peak RSS from ``wait4``.

    ``cwd`` must not hold a ``qsmprep`` folder: ``python -c`` imports from the working folder
    first, which would run that code instead of the version on ``PYTHONPATH``.
    """
    import os

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=str(cwd))
    err = proc.stderr.read()
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"qsmprep group failed ({code}):\n{err[-3000:]}")
    return {"wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "peak_mb": ru.ru_maxrss / 1024}


def _same_tables(a: Path, b: Path) -> list:
    """TSV/JSON files of two group folders that differ (or exist in one only)."""
    names = {p.relative_to(a) for p in a.rglob("*") if p.suffix in (".tsv", ".json")}
    names |= {p.relative_to(b) for p in b.rglob("*") if p.suffix in (".tsv", ".json")}
    return sorted(str(n) for n in names
                  if not ((a / n).is_file() and (b / n).is_file()
                          and (a / n).read_bytes() == (b / n).read_bytes()))


def time_group(root: Path, n_subjects: int, baseline: str | None = None, repeat: int = 1,
               parts: bool = True) -> dict:
    """Group level on ``n_subjects`` x 2 sessions, for this code and optionally ``baseline``.

    Each code version runs ``repeat`` times as ``qsmprep BIDS OUT group`` (a fresh process;
    the fastest run is kept) and, with ``parts``, once more inside a driver that times the group
    level's steps (the same functions in every version since ed15f88).  The TSV/JSON outputs of
    the two versions are compared byte for byte.
    """
    import os

    bindir = Path(sys.executable).parent
    app = shutil.which("qsmprep", path=str(bindir)) or "qsmprep"
    t0 = time.perf_counter()
    if (root / "bids" / "participants.tsv").exists() and (root / "out").is_dir():
        bids, out = root / "bids", root / "out"  # --keep folder of an earlier run: same inputs
        n_subjects = len((bids / "participants.tsv").read_text().splitlines()) - 1
    else:
        bids, out = make_group_inputs(root, n_subjects)
    t_make = time.perf_counter() - t0
    versions = [("this code", Path(__file__).resolve().parents[1])]
    if baseline:
        versions.insert(0, (f"baseline {baseline}", _code_tree(baseline, root / f"code-{baseline}")))
    res = {"make": t_make, "versions": {}}
    for label, src in versions:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(src)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
        runs = []
        for i in range(repeat):
            shutil.rmtree(out / "group", ignore_errors=True)
            runs.append(_group_process([app, str(bids), str(out), "group", "-w", str(root / "work")], env, root))
        keep = root / f"group-{len(res['versions'])}"
        shutil.rmtree(keep, ignore_errors=True)
        shutil.move(str(out / "group"), str(keep))
        entry = {"wall": min(r["wall"] for r in runs), "cpu": min(r["cpu"] for r in runs),
                 "peak_mb": max(r["peak_mb"] for r in runs), "outputs": keep}
        if parts:
            pj = root / "parts.json"
            pr = _group_process([sys.executable, "-c", _PARTS_DRIVER, str(pj), str(bids), str(out),
                                 "group", "-w", str(root / "work")], env, root)
            entry["parts"] = json.loads(pj.read_text())
            entry["parts_process_cpu"] = pr["cpu"]
            shutil.rmtree(out / "group", ignore_errors=True)
        import pandas as pd

        entry["used"] = pd.read_csv(keep / "dgm_long.tsv", sep="\t", usecols=["participant_id"])[
            "participant_id"].nunique()
        res["versions"][label] = entry
    if baseline:
        a, b = (v["outputs"] for v in res["versions"].values())
        res["differ"] = _same_tables(a, b)
    res["load"] = os.getloadavg()[0]
    return res


def group_table(n_subjects: int, g: dict) -> str:
    """Markdown table of :func:`time_group`: whole process, then the per-part CPU seconds."""
    labels = list(g["versions"])
    vs = [g["versions"][k] for k in labels]
    lines = [f"Group level, {n_subjects} subjects x 2 sessions (load average {g['load']:.1f}):", "",
             "| | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    lines.append("| wall, qsmprep process incl. start-up (s) | " + " | ".join(f"{v['wall']:.1f}" for v in vs) + " |")
    lines.append("| CPU, user + system (s) | " + " | ".join(f"{v['cpu']:.1f}" for v in vs) + " |")
    lines.append("| peak RSS (MB) | " + " | ".join(f"{v['peak_mb']:.0f}" for v in vs) + " |")
    lines.append("| participants in dgm_long.tsv | " + " | ".join(str(v["used"]) for v in vs) + " |")
    if all("parts" in v for v in vs):
        names = list(dict.fromkeys(n for v in vs for n in v["parts"]))
        lines.append("| *per part, CPU s (driver run)* |" + " |" * len(labels))
        for n in names:
            lines.append(f"| {n} | " + " | ".join(
                f"{v['parts'][n][1]:.2f}" if n in v["parts"] else "-" for v in vs) + " |")
        lines.append("| start-up and exit outside the parts (s) | " + " | ".join(
            f"{v['parts_process_cpu'] - v['parts'].get('import qsmprep.cli.run', [0, 0])[1] - v['parts'].get('import qsmprep.group (and what it imports at the top)', [0, 0])[1] - v['parts'].get('qsmprep CLI run (total)', [0, 0])[1]:.2f}"
            for v in vs) + " |")
    lines.append(f"| target: wall <= 15 s | " + " | ".join("PASS" if v["wall"] <= 15 else "FAIL" for v in vs) + " |")
    if "differ" in g:
        lines += ["", "TSV/JSON outputs identical to the baseline: "
                  + ("yes" if not g["differ"] else "NO: " + ", ".join(g["differ"]))]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", type=int, default=200)
    ap.add_argument("--participant", action="store_true",
                    help="also run one 1 mm subject (2 sessions) through qsmprep (minutes)")
    ap.add_argument("--participant-seconds", type=float, default=None)
    ap.add_argument("--participant-gb", type=float, default=None)
    ap.add_argument("--group-seconds", type=float, default=60.0,
                    help="group-level time used in the projection when not measured")
    ap.add_argument("--nprocs", type=int, default=2)
    ap.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 4, 8, 16, 40, 80, 160])
    ap.add_argument("--node-cpus", type=int, default=2)
    ap.add_argument("--node-mem-gb", type=float, default=24.0)
    ap.add_argument("--cohort", type=int, default=160, help="subjects to project (2 sessions each)")
    ap.add_argument("--keep", type=Path, default=None,
                    help="keep the files in this folder (the group inputs in it are reused by a later run)")
    ap.add_argument("--group-subjects", type=int, default=0,
                    help="also time the group level on this many synthetic subjects x 2 sessions")
    ap.add_argument("--group-baseline", default=None, metavar="COMMIT",
                    help="also time the group level of this commit (git archive) on the same inputs, "
                         "and compare the TSV/JSON outputs (e.g. ed15f88)")
    ap.add_argument("--group-repeat", type=int, default=1,
                    help="group-level runs per code version; the fastest is kept")
    ap.add_argument("--no-group-parts", action="store_true",
                    help="skip the instrumented run that times each part of the group level")
    ap.add_argument("--skip-index", action="store_true", help="skip the indexing measurement")
    args = ap.parse_args(argv)

    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="qsmprep-scale-"))
    rows = []
    try:
        idx = {"cold": 0.0}
        if not args.skip_index:
            t0 = time.perf_counter()
            n_files = make_dataset(tmp / "bids", args.subjects)
            t_make = time.perf_counter() - t0
            idx = time_indexing(tmp / "bids", tmp)
            rows += [
                (f"dataset: {args.subjects} subjects x 2 sessions", f"{n_files} files", f"written in {t_make:.1f} s"),
                (f"index cold -> --bids-database-dir ({idx['how']})", f"{idx['cold']:.1f} s",
                 "PASS < 60 s" if idx["cold"] < 60 else "FAIL >= 60 s"),
                ("index warm, reusing the database", f"{idx['warm']:.2f} s",
                 "PASS < 5 s" if idx["warm"] < 5 else "FAIL >= 5 s"),
                ("index one participant in memory (no database)", f"{idx['single']:.2f} s", ""),
            ]
        group_md = ""
        if args.group_subjects:
            g = time_group(tmp / "group-scale", args.group_subjects, args.group_baseline,
                           max(1, args.group_repeat), not args.no_group_parts)
            v = g["versions"]["this code"]
            rows.append((f"group level, {args.group_subjects} subjects x 2 sessions "
                         "(qsmprep process incl. start-up)", f"{v['wall']:.1f} s",
                         f"CPU {v['cpu']:.1f} s; peak RSS {v['peak_mb']:.0f} MB; "
                         f"{'PASS' if v['wall'] <= 15 else 'FAIL'} <= 15 s; {v['used']} participants "
                         f"in dgm_long.tsv; inputs written in {g['make']:.0f} s; load average "
                         f"{g['load']:.1f}"))
            group_md = group_table(args.group_subjects, g)
        secs, gb, group = args.participant_seconds, args.participant_gb, args.group_seconds
        source = "given"
        if args.participant:
            m = run_participant(tmp, args.nprocs)
            secs, gb, group, source = m["seconds"], m["gb"], m["group"], "measured"
            rows += [
                (f"participant, 1 mm, 2 sessions, --nprocs {args.nprocs}", f"{secs / 60:.1f} min",
                 f"peak RSS (process tree) {gb:.2f} GB"),
                ("group level (1 subject)", f"{group:.1f} s", f"simulation {m['simulate']:.0f} s"),
            ]
        if secs:
            per_node = max(1, min(args.node_cpus // args.nprocs,
                                  int(args.node_mem_gb // gb) if gb else args.node_cpus))
            for n in args.nodes:
                waves = math.ceil(args.cohort / (n * per_node))
                wall = idx["cold"] + waves * secs + group
                rows.append((f"projected: {args.cohort} subjects x 2 sessions on {n} node(s)",
                             f"{wall / 3600:.1f} h",
                             f"{per_node} task(s)/node ({args.node_cpus} CPUs, {args.node_mem_gb:g} GB), "
                             f"{waves} wave(s), participant time {source}"))
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    print(f"{'measurement':<{w0}}  {'value':>{w1}}  note")
    print("-" * (w0 + w1 + 40))
    for a, b, c in rows:
        print(f"{a:<{w0}}  {b:>{w1}}  {c}")
    if group_md:
        print()
        print(group_md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
