"""qsmprep on a real single-node SLURM cluster (slurm-wlm + munge started here, stopped after).

Opt-in: ``QSMPREP_TEST_SLURM=1`` (needs root, slurmctld/slurmd/munged installed, e.g.
``scripts/slurm_cluster.sh install``). Runs a 3-subject simulated cohort

1. locally with MultiProc (the reference),
2. through ``workflows/slurm/submit.sh``: pybids index job -> participant job array -> group job
   (``--dependency=afterok``), one participant per array task,
3. for one participant through Nipype's ``SLURM`` plugin (every node an sbatch job),

and requires the derivatives of 2 and 3 to equal the reference (scripts/compare_derivatives.py).
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests._paths import REPO_ROOT, load_script

ROOT = REPO_ROOT
BIN = Path(sys.executable).parent
QSMPREP = shutil.which("qsmprep", path=str(BIN)) or shutil.which("qsmprep")
SIMULATE = shutil.which("qsmprep-simulate", path=str(BIN)) or shutil.which("qsmprep-simulate")


def _skip_reason():
    if os.environ.get("QSMPREP_TEST_SLURM") != "1":
        return "set QSMPREP_TEST_SLURM=1 to run the SLURM tests (starts slurmctld/slurmd/munged)"
    if os.geteuid() != 0:
        return "the SLURM test starts munged and slurmd, which needs root"
    missing = [t for t in ("slurmctld", "slurmd", "munged", "sbatch") if not shutil.which(t)]
    if missing:
        return f"not installed: {missing} (run scripts/slurm_cluster.sh install)"
    if not (QSMPREP and SIMULATE):
        return "qsmprep / qsmprep-simulate are not installed"
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))
compare_trees = load_script("scripts/compare_derivatives.py").compare_trees

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
            "BOOT_FAIL", "DEADLINE", "PREEMPTED"}
TIMINGS = {}
N_SUBJECTS = int(os.environ.get("QSMPREP_SLURM_SUBJECTS", "3"))
# The same options for every run: fast settings (the point is SLURM == local, not accuracy) and
# one ITK/OpenMP thread per process, so array tasks (1 CPU) and the local run (2 CPUs) do the
# same floating-point work in registration.
RUN_ARGS = ["--no-longitudinal", "--inversion", "tkd", "--omp-nthreads", "1"]


def _run(cmd, env=None, **kw):
    print("+", " ".join(map(str, cmd)), flush=True)
    return subprocess.run([str(c) for c in cmd], env=env, check=True, **kw)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    sdir = tmp_path_factory.mktemp("slurm")
    script = ROOT / "scripts" / "slurm_cluster.sh"
    t0 = time.monotonic()
    _run(["bash", script, "start", sdir])
    TIMINGS["cluster start"] = time.monotonic() - t0
    env = dict(os.environ, SLURM_CONF=str(sdir / "slurm.conf"),
               LOGNAME=os.environ.get("LOGNAME", "root"),
               PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    try:
        yield env
    finally:
        subprocess.run(["bash", str(script), "stop", str(sdir)], env=env, check=False)
        print("\nSLURM test timings (s): " + json.dumps({k: round(v, 1) for k, v in TIMINGS.items()}))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    base = tmp_path_factory.mktemp("slurm_cohort")
    t0 = time.monotonic()
    _run([SIMULATE, base / "bids", "--subjects", str(N_SUBJECTS), "--sessions", "2", "--seed", "11",
          "--preset", "small"])
    TIMINGS["simulate"] = time.monotonic() - t0
    return base


@pytest.fixture(scope="module")
def local_run(cohort):
    out = cohort / "out_local"
    t0 = time.monotonic()
    _run([QSMPREP, cohort / "bids", out, "participant", "-w", cohort / "work_local",
          "--nprocs", "2", *RUN_ARGS])
    _run([QSMPREP, cohort / "bids", out, "group", "-w", cohort / "work_local"])
    TIMINGS["local MultiProc (3 subjects)"] = time.monotonic() - t0
    return out


def _states(job_id, env):
    res = subprocess.run(["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"], env=env,
                         capture_output=True, text=True)
    return [s.strip() for s in res.stdout.split() if s.strip()]


def _wait(job_id, env, timeout=3600):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        states = _states(job_id, env)
        if states and all(s in TERMINAL for s in states):
            return states
        time.sleep(3)
    pytest.fail(f"SLURM job {job_id} did not finish in {timeout} s: {_states(job_id, env)}")


def test_job_array_and_group_job_match_local_run(cluster, cohort, local_run):
    out = cohort / "out_array"
    work = cohort / "work_array"
    t0 = time.monotonic()
    res = _run(["bash", ROOT / "workflows/slurm/submit.sh", "--bids", cohort / "bids",
                "--out", out, "--work", work, "--cpus", "1", "--mem", "4G",
                "--cmd", QSMPREP, "--python", sys.executable, "--", *RUN_ARGS], env=cluster,
               capture_output=True, text=True)
    print(res.stdout)
    ids = dict(line.split(":", 1) for line in res.stdout.splitlines() if line.endswith(
        tuple("0123456789")) and ":" in line)
    index_id, array_id, group_id = (ids[k].strip() for k in ("index job", "array job", "group job"))
    assert f"participants: {N_SUBJECTS}" in res.stdout

    group_states = _wait(group_id, cluster)
    TIMINGS["SLURM index + array + group"] = time.monotonic() - t0
    logs = sorted((work / "logs").glob("*.log"))
    if group_states != ["COMPLETED"]:
        for log in logs:
            print(f"--- {log.name}\n{log.read_text()[-3000:]}")
    assert _states(index_id, cluster) == ["COMPLETED"]
    assert _states(array_id, cluster) == ["COMPLETED"] * N_SUBJECTS
    assert group_states == ["COMPLETED"]
    # the shared database was built once, and each task worked in its own folder
    assert (work / "bids_db" / "layout_index.sqlite").is_file()
    assert sorted(p.name for p in work.glob("sub-*")) == [f"sub-{i:02d}" for i in
                                                          range(1, N_SUBJECTS + 1)]

    problems, summary = compare_trees(local_run, out)
    print("array vs local:", summary)
    assert summary["files"] > 0
    assert problems == [], "\n".join(problems)


def test_nipype_slurm_plugin_one_participant(cluster, cohort, local_run):
    out = cohort / "out_plugin"
    t0 = time.monotonic()
    _run([QSMPREP, cohort / "bids", out, "participant", "--participant-label", "01",
          "-w", cohort / "work_plugin", "--plugin", "SLURM", "--plugin-args",
          json.dumps({"sbatch_args": "--cpus-per-task=1 --mem=3G", "max_jobs": 4}), *RUN_ARGS],
         env=cluster)
    TIMINGS["Nipype SLURM plugin (1 subject)"] = time.monotonic() - t0
    problems, summary = compare_trees(local_run / "sub-01", out / "sub-01")
    print("SLURM plugin vs local (sub-01):", summary)
    assert summary["files"] > 0
    assert problems == [], "\n".join(problems)
