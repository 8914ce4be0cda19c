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
   and ``participants.tsv``): wall and CPU time, and the number of participants the group
   tables contain. Target <= 15 s for 1,000 subjects.
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


def time_group(root: Path, n_subjects: int) -> dict:
    import os

    bindir = Path(sys.executable).parent
    app = shutil.which("qsmprep", path=str(bindir)) or "qsmprep"
    t0 = time.perf_counter()
    bids, out = make_group_inputs(root, n_subjects)
    t_make = time.perf_counter() - t0
    t0 = time.perf_counter()
    proc = subprocess.Popen([app, str(bids), str(out), "group", "-w", str(root / "work")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = proc.stderr.read()
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"qsmprep group failed ({code}):\n{err[-3000:]}")
    n_used = float("nan")
    long = out / "group" / "dgm_long.tsv"
    if long.exists():
        import pandas as pd

        n_used = pd.read_csv(long, sep="\t", usecols=["participant_id"])["participant_id"].nunique()
    return {"wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "make": t_make, "used": n_used}


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
    ap.add_argument("--keep", type=Path, default=None, help="keep the files in this folder")
    ap.add_argument("--group-subjects", type=int, default=0,
                    help="also time the group level on this many synthetic subjects x 2 sessions")
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
        if args.group_subjects:
            import os

            g = time_group(tmp / "group-scale", args.group_subjects)
            rows.append((f"group level, {args.group_subjects} subjects x 2 sessions "
                         "(qsmprep process incl. start-up)", f"{g['wall']:.1f} s",
                         f"CPU {g['cpu']:.1f} s; {'PASS' if g['wall'] <= 15 else 'FAIL'} "
                         f"<= 15 s; {g['used']} participants in dgm_long.tsv; inputs written "
                         f"in {g['make']:.0f} s; load average {os.getloadavg()[0]:.1f}"))
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
