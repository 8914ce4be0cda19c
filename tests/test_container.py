"""The container image, built and run for real (scripts/ci_container_test.sh).

Opt-in: ``QSMPREP_TEST_CONTAINER=1`` and a container engine (a Docker daemon, or podman; as
root the script installs podman with apt-get). Builds the image (creating the local
``python:3.11-slim`` base with debootstrap where no registry is reachable), runs participant +
group inside it on a simulated cohort with /data read-only, runs the same natively, and requires
the derivatives to agree (stats TSVs within float32 tolerance).
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tests._paths import REPO_ROOT

ROOT = REPO_ROOT


def _skip_reason():
    if os.environ.get("QSMPREP_TEST_CONTAINER") != "1":
        return "set QSMPREP_TEST_CONTAINER=1 to build and run the container image (minutes)"
    has_engine = shutil.which("podman") or shutil.which("docker")
    if not has_engine and not (os.geteuid() == 0 and shutil.which("apt-get")):
        return "no container engine (docker daemon or podman) and cannot install podman"
    if not (Path(sys.executable).parent / "qsmprep").exists() and not shutil.which("qsmprep"):
        return "qsmprep is not installed natively (needed for the comparison)"
    return None


@pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))
def test_container_matches_native(tmp_path):
    env = dict(os.environ, QSMPREP_NATIVE=str(Path(sys.executable).parent / "qsmprep"),
               TEST_SUBJECTS=os.environ.get("TEST_SUBJECTS", "1"))
    res = subprocess.run(["bash", str(ROOT / "scripts/ci_container_test.sh"), str(tmp_path)],
                         env=env, capture_output=True, text=True)
    print(res.stdout[-6000:])
    print(res.stderr[-6000:])
    assert res.returncode == 0
    assert "compared" in res.stdout and " 0 differ" in res.stdout
