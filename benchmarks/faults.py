"""Exit code and time to fail of the run-time faults (issue 11, items 8-10), through the real CLI.

Simulates one subject (one session, ``small`` preset), then per case runs ``qsmprep ...
participant`` and prints one table: case, exit code, seconds from the event (or from the start
for failures at start-up) to the exit, descendant processes alive 10 s after the event.

Cases:

* ``lock``: another process holds the subject lock; the run must stop with 75 (time from start).
* ``sigterm`` / ``sigint``: signal once a Nipype worker runs and a node has finished (SIGINT is
  sent to the whole process group, as a terminal's Ctrl-C); exit 143 / 130.
* ``resume``: the run after the interruptions (must finish with 0; ``--full`` only).
* ``enospc-dataset``: output folder on a 8 kB tmpfs (root only): fails writing the dataset-level
  files, exit 73 (time from start).
* ``enospc-publish``: output folder on a 256 kB tmpfs with the whole work folder cached
  (``--full``, root only): fails at publication, exit 73.

Usage: ``nice -n 10 python benchmarks/faults.py [--full] [--keep DIR]``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

BIN = Path(sys.executable).parent
ENV = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")


def cli(root, out, label="01"):
    return [str(BIN / "qsmprep"), str(root / "sim"), str(out), "participant", "--participant-label",
            label, "-w", str(root / "work"), "--nprocs", "2", "--omp-nthreads", "1"]


def results(root):
    base = root / "work" / "qsmprep_wf"
    return list(base.rglob("result_*.pklz")) if base.exists() else []


def run_to_fail(cmd, log):
    t0 = time.monotonic()
    with open(log, "w") as fh:
        code = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=ENV).returncode
    return code, time.monotonic() - t0, 0


def run_and_signal(cmd, log, sig, n_before):
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=ENV, start_new_session=True)
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + 1200
    while time.monotonic() < deadline:
        kids = parent.children(recursive=True) if proc.poll() is None else []
        if proc.poll() is not None:
            return proc.returncode, float("nan"), 0
        if kids and len(results(Path(cmd[1]).parent)) > n_before:
            break
        time.sleep(0.2)
    kids = parent.children(recursive=True)
    t0 = time.monotonic()
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)  # the terminal sends Ctrl-C to the whole foreground group
    else:
        proc.send_signal(sig)
    code = proc.wait(timeout=60)
    elapsed = time.monotonic() - t0
    _, alive = psutil.wait_procs(kids, timeout=max(0.1, 10 - elapsed))
    for p in alive:
        p.kill()
    return code, elapsed, len(alive)


def with_tmpfs(root, size, fn):
    if os.geteuid() != 0:
        return None
    mnt = root / f"tmpfs-{size}"
    mnt.mkdir(exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        return None
    try:
        return fn(mnt)
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="also resume to completion and ENOSPC at publication")
    ap.add_argument("--keep", type=Path, default=None)
    args = ap.parse_args(argv)
    tmp = tempfile.TemporaryDirectory() if args.keep is None else None
    root = Path(tmp.name) if tmp else args.keep
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(BIN / "qsmprep-simulate"), str(root / "sim"), "--subjects", "1", "--sessions", "1",
                    "--seed", "5", "--preset", "small"], check=True, capture_output=True, env=ENV)
    out = root / "out"
    rows = []

    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from types import SimpleNamespace; from pathlib import Path;"
        "from qsmprep.cli.execution import lock_subjects;"
        "lock_subjects(SimpleNamespace(output_dir=Path(sys.argv[1]), work_dir=Path(sys.argv[2])), ['01']);"
        "print('locked', flush=True); time.sleep(600)"), str(out), str(root / "work")],
        stdout=subprocess.PIPE, text=True)
    holder.stdout.readline()
    rows.append(("lock (second run of a running subject)", *run_to_fail(cli(root, out), root / "lock.log"), "start"))
    holder.kill()
    holder.wait()

    rows.append(("sigterm", *run_and_signal(cli(root, out), root / "sigterm.log", signal.SIGTERM,
                                            len(results(root))), "signal"))
    rows.append(("sigint (Ctrl-C to the process group)", *run_and_signal(
        cli(root, out), root / "sigint.log", signal.SIGINT, len(results(root))), "signal"))

    res = with_tmpfs(root, "8k", lambda mnt: run_to_fail(cli(root, mnt / "out"), root / "enospc1.log"))
    rows.append(("enospc-dataset (8 kB tmpfs)", *(res or (None, float("nan"), 0)),
                 "start" if res else "skipped (needs root)"))
    if args.full:
        rows.append(("resume after the interruptions", *run_to_fail(cli(root, out), root / "resume.log"), "start"))
        res = with_tmpfs(root, "256k", lambda mnt: run_to_fail(cli(root, mnt / "out"), root / "enospc2.log"))
        rows.append(("enospc-publish (256 kB tmpfs, cached work)", *(res or (None, float("nan"), 0)),
                     "start" if res else "skipped (needs root)"))

    print(f"\n{'case':46s} {'exit':>5s} {'seconds':>8s} {'alive@10s':>9s}  timed from")
    for case, code, secs, alive, since in rows:
        print(f"{case:46s} {str(code):>5s} {secs:8.1f} {alive:9d}  {since}")
    print(f"(machine: {psutil.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; shared)")
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
