"""Run-time safety (qsmprep.cli.execution): subject locks across processes, SIGTERM/SIGINT with a
worker pool, full disk -> exit 73.

The signal tests run a small script in a real subprocess: it enters the same guard as the CLI,
starts a ProcessPoolExecutor (what Nipype's MultiProc uses) whose workers compute, and the test
sends the signal and checks with psutil that no worker survives.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from types import SimpleNamespace

import psutil
import pytest

from qsmprep.cli import execution
from qsmprep.errors import OutputNotWritableError, SubjectLockedError


def _config(tmp_path):
    return SimpleNamespace(output_dir=tmp_path / "out", work_dir=tmp_path / "work")


def _wait_for(predicate, timeout, what):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():
            return time.monotonic() - t0
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


HOLDER = textwrap.dedent("""
    import sys, time
    from types import SimpleNamespace
    from pathlib import Path
    from qsmprep.cli.execution import lock_subjects
    root = Path(sys.argv[1])
    lock_subjects(SimpleNamespace(output_dir=root / "out", work_dir=root / "work"), [sys.argv[2]])
    print("locked", flush=True)
    time.sleep(600)
""")


def test_subject_lock_across_processes(tmp_path):
    """A subject held by another live process: exit 75 at once, naming that PID; another
    subject can be locked meanwhile; a holder killed with -9 leaves no stale lock.

    Fails if the second run waits (or runs), if locks are per folder rather than per subject,
    or if a dead holder's lock blocks the subject for good.
    """
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path), "01"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        cfg = _config(tmp_path)
        t0 = time.monotonic()
        with pytest.raises(SubjectLockedError) as info:
            execution.lock_subjects(cfg, ["01"])
        elapsed = time.monotonic() - t0
        assert info.value.exit_code == 75
        msg = str(info.value)
        assert "sub-01" in msg and f"PID {holder.pid}" in msg, msg
        assert elapsed < 2.0, elapsed  # stops at once, does not wait
        # another subject, same output and work folders, at the same time: fine
        held = execution.lock_subjects(cfg, ["02"])
        assert len(held) == 2  # output and work folder locks
        execution.release_locks()
        # the holder dies without releasing (kill -9): its lock does not outlive it
        holder.kill()
        holder.wait(10)
        held = execution.lock_subjects(cfg, ["01"])
        assert len(held) == 2
    finally:
        execution.release_locks()
        if holder.poll() is None:
            holder.kill()


def test_lock_owner_file_removed_on_release(tmp_path):
    """The owner record names this process while held and is gone once released (fails if a
    released lock leaves a record naming a finished run, or cannot be taken again)."""
    cfg = _config(tmp_path)
    execution.lock_subjects(cfg, ["03"])
    owner = cfg.output_dir / "logs" / "locks" / "sub-03.owner.json"
    assert json.loads(owner.read_text())["pid"] == os.getpid()
    execution.release_locks()
    assert not owner.exists()
    execution.lock_subjects(cfg, ["03"])  # can be taken again by the same process
    execution.release_locks()


# ------------------------------------------------------------------------------------------
POOL = textwrap.dedent("""
    import os, sys, time
    from concurrent.futures import ProcessPoolExecutor
    from types import SimpleNamespace
    from pathlib import Path
    from qsmprep.cli.execution import run_guarded

    def burn(k):
        # a long computation in C that never checks for signals: the worst case for cleanup
        import numpy as np
        a = np.random.default_rng(k).random((300, 300))
        t0 = time.time()
        while time.time() - t0 < 120:
            a = np.linalg.inv(a @ a.T + np.eye(300))
        return k

    def runner(config):
        with ProcessPoolExecutor(max_workers=2) as pool:
            futs = [pool.submit(burn, k) for k in range(4)]
            print("started", flush=True)
            if sys.argv[2] == "main-busy":  # the main thread too is inside numpy
                import numpy as np
                a = np.random.default_rng(0).random((400, 400))
                t0 = time.time()
                while time.time() - t0 < 120:
                    a = np.linalg.inv(a @ a.T + np.eye(400))
            [f.result() for f in futs]
        return 0

    root = Path(sys.argv[1])
    sys.exit(run_guarded(runner, SimpleNamespace(output_dir=root / "out", work_dir=root / "work")))
""")


def _kill(procs):
    """Clean up survivors (so that a failing test does not leave busy orphans behind)."""
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass


def _start_pool(tmp_path, mode="idle"):
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", POOL, str(tmp_path), mode], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "started", proc.stderr.read()
    parent = psutil.Process(proc.pid)
    _wait_for(lambda: len(parent.children(recursive=True)) >= 2, 30, "two worker processes")
    time.sleep(0.5)  # workers inside numpy
    return proc, parent.children(recursive=True)


@pytest.mark.parametrize("mode", ["idle", "main-busy"])
def test_sigterm_stops_workers_exit_143(tmp_path, mode):
    """SIGTERM (what SLURM and docker stop send): exit 143 within 10 s, one line, no worker
    left, also while the main thread is inside numpy (fails on a traceback, a hang, or an
    orphaned worker still computing)."""
    proc, children = _start_pool(tmp_path, mode)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=10)
    elapsed = time.monotonic() - t0
    _, alive = psutil.wait_procs(children, timeout=max(0.1, 10 - elapsed))
    _kill(alive)
    stderr = proc.stderr.read()
    assert code == 143, stderr
    assert not alive, f"workers still running 10 s after SIGTERM: {[c.pid for c in alive]}"
    assert "Traceback" not in stderr and "terminated (SIGTERM)" in stderr, stderr
    assert elapsed < 10.0


def test_ctrl_c_one_line_exit_130(tmp_path):
    """Ctrl-C on the whole process group: exit 130 and exactly one line on stderr (fails if
    each worker prints its KeyboardInterrupt traceback, or a worker survives)."""
    proc, children = _start_pool(tmp_path)
    # a terminal's Ctrl-C reaches the whole process group: the workers get SIGINT as well
    for p in [proc.pid] + [c.pid for c in children]:
        os.kill(p, signal.SIGINT)
    code = proc.wait(timeout=10)
    _, alive = psutil.wait_procs(children, timeout=10)
    _kill(alive)
    stderr = proc.stderr.read()
    assert code == 130, stderr
    assert not alive
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "interrupted (Ctrl-C)" in lines[0], stderr


def test_workers_die_with_a_killed_main_process(tmp_path):
    """kill -9 cannot be handled; PR_SET_PDEATHSIG still takes the workers down (Linux)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux only")
    proc, children = _start_pool(tmp_path)
    proc.kill()
    proc.wait(timeout=10)
    _, alive = psutil.wait_procs(children, timeout=10)
    _kill(alive)
    assert not alive, "orphaned workers kept computing after kill -9 of the main process"


# ------------------------------------------------------------------------------------------
def test_enospc_anywhere_is_exit_73(tmp_path):
    """A full disk anywhere in a run: exit 73 with both folders and their free space named, and
    the cut-short temporary removed (fails on a traceback's exit 1 or a leftover file)."""
    cfg = _config(tmp_path)
    cfg.output_dir.mkdir()
    left = cfg.output_dir / f".dataset_description.json.{os.getpid()}.tmp"

    def runner(config):
        left.write_text("half")  # the temporary of an atomic write cut short by the full disk
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(left))

    with pytest.raises(OutputNotWritableError) as info:
        execution.run_guarded(runner, cfg)
    msg = str(info.value)
    assert info.value.exit_code == 73
    assert str(cfg.output_dir) in msg and "free of" in msg and str(cfg.work_dir) in msg, msg
    assert not left.exists()


def test_enospc_in_a_nipype_node_is_exit_73(tmp_path):
    """A node's failure is logged by Nipype (traceback text): a full disk there also gives 73."""
    import logging

    cfg = _config(tmp_path)

    def runner(config):
        logging.getLogger("nipype.workflow").error(
            "Saving crash info to x\nOSError: [Errno 28] No space left on device: '/w/x.nii'")
        return 1

    with pytest.raises(OutputNotWritableError):
        execution.run_guarded(runner, cfg)
    # a node failure for another reason stays exit 1
    assert execution.run_guarded(lambda c: 1, cfg) == 1


GRANDCHILD = textwrap.dedent("""
    import multiprocessing as mp, sys
    from concurrent.futures import ProcessPoolExecutor
    from types import SimpleNamespace
    from pathlib import Path
    from qsmprep.cli.execution import run_guarded

    def in_worker(n):
        # a node that forks a process of its own: that child must run normally
        import os
        pid = os.fork()
        if pid == 0:
            os._exit(n)
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)

    def runner(config):
        with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("fork")) as ex:
            print(ex.submit(in_worker, 7).result(timeout=60), flush=True)
        return 0

    root = Path(sys.argv[1])
    sys.exit(run_guarded(runner, SimpleNamespace(output_dir=root / "out", work_dir=root / "work")))
""")


def test_workers_can_fork_their_own_workers(tmp_path):
    """The fork hook that ties workers to the main process must not kill a worker's own
    children (fails if the child of a worker is killed instead of exiting with 7)."""
    proc = subprocess.run([sys.executable, "-c", GRANDCHILD, str(tmp_path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "7"  # the worker's own child ran and exited normally
