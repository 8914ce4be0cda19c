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
3. Projection for the seed study's cohort (160 subjects x 2 sessions) on N nodes: tasks per node
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
    args = ap.parse_args(argv)

    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="qsmprep-scale-"))
    rows = []
    try:
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
