"""Faults through the real CLI on a tiny simulated cohort (2 subjects x 1 session, 3 mm preset).

One scenario, in order (each step needs the state the previous one left):

1. ``kill -9`` of a run of sub-02 after a node finished: no worker survives (PR_SET_PDEATHSIG),
   the lock dies with the process, sub-02 is not complete.
2. A run of sub-01 holds the subject lock; a second run of sub-01 stops at once with exit 75.
3. SIGTERM to the first run after a node finished: exit 143, no process left within 10 s,
   sub-01 not complete.
4. Reruns of sub-01 and sub-02 in parallel into the same output and work folders: both exit 0,
   both subjects complete, and the nodes finished before the interruptions are not recomputed.
5. Full disk at publication (monkeypatched ENOSPC in-process; and a real tmpfs when root):
   exit 73, nothing of the subject published, the message names the folder and its free space.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from qsmprep.publish import completed_subjects

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def report_line(request, line):
    path = Path(request.config.rootpath) / ".pytest_cache" / "qsmprep-summary.txt"
    path.parent.mkdir(exist_ok=True)
    with path.open("a") as fh:
        fh.write(line + "\n")


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")


def _args(root, label, out=None):
    return [str(BIN / "qsmprep"), str(root / "sim"), str(out or root / "out"), "participant",
            "--participant-label", label, "-w", str(root / "work"), "--nprocs", "2",
            "--omp-nthreads", "1"]


def _start(root, label, tag):
    log = open(root / f"{tag}.log", "w")
    proc = subprocess.Popen(_args(root, label), stdout=log, stderr=subprocess.STDOUT, env=_env())
    proc.log_path = root / f"{tag}.log"
    return proc


def _results(root, label):
    """Nipype result files of the subject's finished nodes -> mtime."""
    base = root / "work" / "qsmprep_wf" / f"sub_{label}_wf"
    return {p: p.stat().st_mtime_ns for p in base.rglob("result_*.pklz")} if base.exists() else {}


def _wait_for(predicate, timeout, what, proc=None):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the run exited early ({proc.returncode}):\n"
                                 + proc.log_path.read_text()[-3000:])
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _node_running(root, label, proc):
    """At least one node of the subject finished (cache to resume from) and workers exist."""
    try:
        kids = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        return False
    return len(_results(root, label)) >= 2 and len(kids) > 0


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    subprocess.run([str(BIN / "qsmprep-simulate"), str(root / "sim"), "--subjects", "2", "--sessions",
                    "1", "--seed", "5", "--preset", "small"], check=True, capture_output=True, env=_env())
    return root


def test_kill_lock_sigterm_resume_parallel_enospc(cohort, request, monkeypatch):
    root = cohort
    out = root / "out"

    # 1. kill -9 of sub-02 after a node finished
    b = _start(root, "02", "b1")
    _wait_for(lambda: _node_running(root, "02", b), 600, "a finished node of sub-02", b)
    kids = psutil.Process(b.pid).children(recursive=True)
    b.kill()
    b.wait(10)
    _, alive = psutil.wait_procs(kids, timeout=10)
    for p in alive:
        p.kill()
    assert not alive, "workers of a kill -9'ed run kept running"
    cached_02 = _results(root, "02")
    assert "02" not in completed_subjects(out)

    # 2. a run of sub-01 holds the lock: a second one stops at once
    a = _start(root, "01", "a1")
    _wait_for(lambda: (out / "logs" / "locks" / "sub-01.owner.json").exists(), 300, "sub-01 lock", a)
    t0 = time.monotonic()
    second = subprocess.run(_args(root, "01"), capture_output=True, text=True, env=_env())
    t_lock = time.monotonic() - t0
    assert second.returncode == 75, second.stderr[-3000:]
    assert "sub-01 is already being processed" in second.stderr and f"PID {a.pid}" in second.stderr

    # 3. SIGTERM once a node finished
    _wait_for(lambda: _node_running(root, "01", a), 600, "a finished node of sub-01", a)
    cached_01 = _results(root, "01")
    kids = psutil.Process(a.pid).children(recursive=True)
    t0 = time.monotonic()
    a.send_signal(signal.SIGTERM)
    code = a.wait(timeout=15)
    t_term = time.monotonic() - t0
    _, alive = psutil.wait_procs(kids, timeout=max(0.1, 10 - t_term))
    for p in alive:
        p.kill()
    log = a.log_path.read_text()
    assert code == 143, log[-3000:]
    assert not alive, f"{len(alive)} process(es) alive 10 s after SIGTERM"
    assert t_term < 10.0
    assert "terminated (SIGTERM)" in log and "Traceback" not in log, log[-3000:]
    assert "01" not in completed_subjects(out)

    # 4. both subjects in parallel, same folders: resume and finish
    t0 = time.monotonic()
    a2, b2 = _start(root, "01", "a2"), _start(root, "02", "b2")
    codes = [a2.wait(timeout=1800), b2.wait(timeout=1800)]
    t_resume = time.monotonic() - t0
    assert codes == [0, 0], a2.log_path.read_text()[-3000:] + b2.log_path.read_text()[-3000:]
    assert completed_subjects(out) == {"01", "02"}
    for cached in (cached_01, cached_02):
        now = _results(root, "01") | _results(root, "02")
        rerun = [p.parent.name for p, m in cached.items() if now.get(p) != m]
        assert not rerun, f"nodes recomputed after the interruption: {rerun}"

    # 5a. full disk at publication, monkeypatched (runs everywhere): in-process, all cached
    from qsmprep import publish
    from qsmprep.cli.run import main

    out2 = root / "out-enospc"

    def no_space(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))

    monkeypatch.setattr(publish, "_copyfile", no_space)
    t0 = time.monotonic()
    with pytest.raises(SystemExit) as info:
        main(_args(root, "01", out2)[1:])
    t_enospc = time.monotonic() - t0
    assert info.value.code == 73
    assert not list(out2.glob("sub-*")) and completed_subjects(out2) == set()
    assert not [p for p in out2.rglob(".*") if p.name != ".bidsignore"], "temporary files left"
    monkeypatch.undo()
    report_line(request, f"[faults] CLI: second run of a locked subject exit 75 in {t_lock:.1f} s; "
                         f"SIGTERM -> exit 143 in {t_term:.1f} s, no worker left; parallel resume "
                         f"of 2 subjects {t_resume:.0f} s; ENOSPC at publication (cached rerun) "
                         f"exit 73 in {t_enospc:.1f} s (shared machine)")

    # 5b. a real full disk (root only: mount a tmpfs smaller than the subject's outputs)
    if os.geteuid() != 0:
        pytest.skip("real full-disk case needs root to mount a tmpfs (CI runs as root)")
    mnt = root / "tmpfs"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        t0 = time.monotonic()
        proc = subprocess.run(_args(root, "01", mnt / "out"), capture_output=True, text=True, env=_env())
        t_full = time.monotonic() - t0
        assert proc.returncode == 73, proc.stderr[-3000:]
        assert "No space left on device" in proc.stderr and str(mnt / "out") in proc.stderr
        assert "free of" in proc.stderr
        assert not list((mnt / "out").glob("sub-*"))
        assert not [p for p in (mnt / "out").rglob(".*") if p.name != ".bidsignore"]
        report_line(request, f"[faults] CLI: real full disk (256 kB tmpfs) exit 73 in {t_full:.1f} s")
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
