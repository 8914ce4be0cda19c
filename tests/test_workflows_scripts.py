"""Sanity checks of the shipping scripts (no SLURM, container engine or network needed).

* every shell script parses (`bash -n`), is executable, uses strict mode, and passes
  shellcheck when shellcheck is installed;
* the SLURM array script and submit helper are exercised with stand-in commands;
* the QSMxT conversion runs on synthetic archives with the layouts README.md describes;
* checksum verification and derivative comparison detect real differences.
"""

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import tarfile
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests._paths import REPO_ROOT, load_script

ROOT = REPO_ROOT
SHELL_SCRIPTS = sorted(
    [p for p in (ROOT / "scripts").glob("*.sh")]
    + [p for p in (ROOT / "workflows").rglob("*.sh")]
    + [p for p in (ROOT / "workflows").rglob("*.sbatch")]
    + [p for p in (ROOT / "workflows").rglob("*.pbs")]
)
PY_SCRIPTS = sorted(list((ROOT / "workflows").rglob("*.py"))
                    + [ROOT / "scripts" / "compare_derivatives.py"])

compare_derivatives = load_script("scripts/compare_derivatives.py")
convert_qsmxt = load_script("workflows/ci/convert_qsmxt.py")
verify_checksums = load_script("workflows/ci/verify_checksums.py")


def test_scripts_found():
    """The globs above find the shipped scripts (fails if one moves or loses its extension,
    which would silently drop it from the parametrized checks below)."""
    names = {p.name for p in SHELL_SCRIPTS}
    assert {"build_image.sh", "slurm_cluster.sh", "ci_container_test.sh", "submit.sh",
            "qsmprep_array.sbatch", "fetch_ds000221.sh"} <= names


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.name)
def test_shell_script_sanity(script):
    """Fails on a bash syntax error, a missing shebang, a script that runs any command before
    strict mode (``set -euo pipefail`` must be its first command), a lost executable bit, a
    machine-specific path, or a shellcheck warning (where shellcheck exists)."""
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert text.startswith("#!"), "missing shebang"
    commands = [ln.strip() for ln in text.splitlines()
                if ln.strip() and not ln.strip().startswith("#")]
    assert commands[0] == "set -euo pipefail", f"first command is {commands[0]!r}"
    if script.suffix != ".pbs":
        assert script.stat().st_mode & stat.S_IXUSR, "not executable"
    machine_dirs = ["/" + d + "/" for d in ("work", "root")]  # spelled so no machine path is committed
    assert not any(d in text for d in machine_dirs), "no machine paths"
    if shutil.which("shellcheck"):
        res = subprocess.run(["shellcheck", "-s", "bash", "-S", "warning", str(script)],
                             capture_output=True, text=True)
        assert res.returncode == 0, res.stdout


@pytest.mark.parametrize("script", PY_SCRIPTS, ids=lambda p: p.name)
def test_python_scripts_compile(script):
    """Fails on a syntax error in a shipped Python script (most are not imported by any test)."""
    compile(script.read_text(), str(script), "exec")


# ---------------------------------------------------------------------------- SLURM scripts
def _fake_bids(root: Path, labels=("01", "02", "03")):
    (root / "sub-01").mkdir(parents=True)
    for lab in labels[1:]:
        (root / f"sub-{lab}").mkdir()
    (root / "participants.tsv").write_text(
        "participant_id\tgroup\n" + "".join(f"sub-{lab}\tHC\n" for lab in labels))


def test_array_task_runs_its_participant(tmp_path):
    """Task i runs line i of the list, in its own work dir, on a private copy of the database."""
    plist = tmp_path / "participants.txt"
    plist.write_text("sub-01\n02\n03\n")
    db = tmp_path / "db"
    db.mkdir()
    (db / "layout_index.sqlite").write_bytes(b"sqlite stand-in")
    env = dict(os.environ, SLURM_ARRAY_TASK_ID="2", SLURM_CPUS_PER_TASK="3",
               SLURM_MEM_PER_NODE="8192", QSMPREP_BIDS="/in", QSMPREP_OUT="/out",
               QSMPREP_WORK=str(tmp_path / "work"), QSMPREP_PARTICIPANTS=str(plist),
               QSMPREP_BIDS_DB=str(db), QSMPREP_CMD="echo", QSMPREP_ARGS="--skip-bids-validation")
    env.pop("LOGNAME", None)
    res = subprocess.run(["bash", str(ROOT / "workflows/slurm/qsmprep_array.sbatch")],
                         env=env, capture_output=True, text=True, check=True)
    argv = res.stdout.strip().splitlines()[-1].split()
    work = str(tmp_path / "work" / "sub-02")
    assert argv == ["/in", "/out", "participant", "--participant-label", "02", "-w", work,
                    "--nprocs", "3", "--mem-gb", "8", "--bids-database-dir",
                    work + "/bids_db", "--skip-bids-validation"]
    assert (Path(work) / "bids_db" / "layout_index.sqlite").read_bytes() == b"sqlite stand-in"

    env["SLURM_ARRAY_TASK_ID"] = "4"  # past the end of the list
    res = subprocess.run(["bash", str(ROOT / "workflows/slurm/qsmprep_array.sbatch")],
                         env=env, capture_output=True, text=True)
    assert res.returncode == 64 and "no participant on line 4" in res.stderr


def _sbatch_options(call):
    """``(options, positionals)`` of one ``sbatch ...`` line as the shell would split it."""
    tokens = shlex.split(call)[1:]
    options, positionals, k = {}, [], 0
    while k < len(tokens):
        if tokens[k] == "--parsable":
            options["--parsable"] = True
            k += 1
        elif tokens[k].startswith("--"):
            options[tokens[k]] = tokens[k + 1]
            k += 2
        else:
            positionals.append(tokens[k])
            k += 1
    return options, positionals


def test_submit_dry_run(tmp_path):
    """--dry-run prints the three sbatch calls: index -> array (one task per participant, at
    most --max-parallel at once) -> group, each waiting for the previous one.

    Fails if a job loses its dependency, the array size or throttle, the resources asked for,
    the array script, or the arguments of the index and group commands.
    """
    bids = tmp_path / "bids"
    _fake_bids(bids)
    res = subprocess.run(
        ["bash", str(ROOT / "workflows/slurm/submit.sh"), "--bids", str(bids),
         "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"), "--cpus", "1",
         "--mem", "3G", "--max-parallel", "2", "--dry-run", "--", "--skip-bids-validation"],
        capture_output=True, text=True, check=True)
    assert (tmp_path / "work" / "participants.txt").read_text().split() == ["01", "02", "03"]
    calls = [line for line in res.stderr.splitlines() if line.startswith("sbatch")]
    assert len(calls) == 3
    (index, _), (array, script), (group, _) = map(_sbatch_options, calls)
    work = tmp_path / "work"
    assert index["--job-name"] == "qsmprep-index" and "--dependency" not in index
    _python, flag, code, *args = shlex.split(index["--wrap"])
    assert flag == "-c" and args == [str(bids), str(work / "bids_db")]
    compile(code, "index", "exec")
    assert "build_layout(sys.argv[1], database_dir=sys.argv[2]" in code
    assert array["--array"] == "1-3%2" and array["--dependency"] == "afterok:DRYRUN"
    assert array["--cpus-per-task"] == "1" and array["--mem"] == "3G"
    assert array["--export"] == "ALL"  # the array script reads QSMPREP_* from the environment
    assert script == [str(ROOT / "workflows/slurm/qsmprep_array.sbatch")]
    assert group["--dependency"] == "afterok:DRYRUN"
    qsmprep = shlex.split(group["--wrap"].split(";", 1)[1])
    assert qsmprep == ["qsmprep", str(bids), str(tmp_path / "out"), "group", "-w",
                       str(work / "group")]
    assert "participants: 3" in res.stdout


def test_submit_requires_arguments(tmp_path):
    res = subprocess.run(["bash", str(ROOT / "workflows/slurm/submit.sh"), "--bids",
                          str(tmp_path / "missing"), "--out", str(tmp_path / "o"),
                          "--work", str(tmp_path / "w")], capture_output=True, text=True)
    assert res.returncode == 66


# ---------------------------------------------------------------------------- QSMxT conversion
TES = (0.004, 0.012, 0.020)


def _nifti(path: Path, data, affine=None):
    nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine), str(path))


def _dcm2niix_tree(root: Path, rng, with_t1=True):
    """What dcm2niix writes for two runs of a 3-echo GRE (separate mag/phase series) + MP2RAGE."""
    root.mkdir(parents=True)
    shape = (6, 5, 4)
    for run, (mag_sn, ph_sn, acq_time) in enumerate(((5, 6, "10:01:00.0"), (7, 8, "10:09:30.0"))):
        for e, te in enumerate(TES, start=1):
            for sn, part in ((mag_sn, "M"), (ph_sn, "P")):
                stem = f"GR_{part}_{sn}_QSM_p2_1mmIso_TE20_e{e}" + ("_ph" if part == "P" else "")
                if part == "M":
                    data = rng.uniform(100, 1000, shape).astype(np.int16)
                else:
                    data = rng.integers(-4096, 4096, shape).astype(np.int16)
                _nifti(root / f"{stem}.nii", data)
                (root / f"{stem}.json").write_text(json.dumps({
                    "EchoTime": te, "EchoNumber": e, "MagneticFieldStrength": 3,
                    "ImageType": ["ORIGINAL", "PRIMARY", part, "ND"], "SeriesNumber": sn,
                    "AcquisitionTime": acq_time, "ProtocolName": "QSM_p2_1mmIso_TE20",
                    "SeriesDescription": "QSM_p2_1mmIso_TE20"}))
    if with_t1:
        for sn, desc in ((10, "mp2rage_INV1"), (11, "mp2rage_UNI_Images")):
            _nifti(root / f"{desc}_{sn}.nii", rng.uniform(0, 500, shape).astype(np.int16))
            (root / f"{desc}_{sn}.json").write_text(json.dumps({
                "ProtocolName": "mp2rage", "SeriesDescription": desc, "SeriesNumber": sn,
                "EchoTime": 0.003, "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"]}))


@pytest.mark.parametrize("archive", ["tar.gz", "zip", "folder"])
def test_convert_dcm2niix_archive(tmp_path, archive):
    rng = np.random.default_rng(3)
    src = tmp_path / "dcm2niix"
    _dcm2niix_tree(src, rng)
    if archive == "tar.gz":
        source = tmp_path / "qsmxt.tar.gz"
        with tarfile.open(source, "w:gz") as tf:
            tf.add(src, arcname="qsm_example")
    elif archive == "zip":
        source = tmp_path / "qsmxt.zip"
        with zipfile.ZipFile(source, "w") as zf:
            for p in src.iterdir():
                zf.write(p, f"qsm_example/{p.name}")
    else:
        source = src
    out = tmp_path / "bids"
    assert convert_qsmxt.main([str(source), str(out)]) == 0

    for ses, (mag_sn, acq) in {"1": (5, "10:01:00.0"), "2": (7, "10:09:30.0")}.items():
        anat = out / "sub-1" / f"ses-{ses}" / "anat"
        names = sorted(p.name for p in anat.glob("*.nii.gz"))
        assert names == sorted([f"sub-1_ses-{ses}_T1w.nii.gz"] + [
            f"sub-1_ses-{ses}_echo-{e}_part-{p}_MEGRE.nii.gz" for e in (1, 2, 3)
            for p in ("mag", "phase")])
        for e, te in enumerate(TES, start=1):
            mag = json.loads((anat / f"sub-1_ses-{ses}_echo-{e}_part-mag_MEGRE.json").read_text())
            ph = json.loads((anat / f"sub-1_ses-{ses}_echo-{e}_part-phase_MEGRE.json").read_text())
            assert mag["EchoTime"] == ph["EchoTime"] == te
            assert mag["SeriesNumber"] == mag_sn and ph["SeriesNumber"] == mag_sn + 1
            assert mag["AcquisitionTime"] == acq
            assert ph["Units"] == "arbitrary" and "Units" not in mag
        t1 = json.loads((anat / f"sub-1_ses-{ses}_T1w.json").read_text())
        assert "UNI" in t1["SeriesDescription"]
        # the data are carried over unchanged
        orig = np.asanyarray(nib.load(str(src / f"GR_P_{mag_sn + 1}_QSM_p2_1mmIso_TE20_e2_ph.nii")).dataobj)
        conv = np.asanyarray(nib.load(str(anat / f"sub-1_ses-{ses}_echo-2_part-phase_MEGRE.nii.gz")).dataobj)
        np.testing.assert_array_equal(orig, conv)
    assert (out / "participants.tsv").read_text().splitlines()[1].startswith("sub-1")
    assert json.loads((out / "dataset_description.json").read_text())["BIDSVersion"]

    from bids import BIDSLayout

    layout = BIDSLayout(str(out), validate=True)
    assert sorted(layout.get_sessions()) == ["1", "2"]
    assert len(layout.get(suffix="MEGRE", extension=".nii.gz")) == 12


def test_convert_bids_layout_runs_to_sessions(tmp_path):
    """QSMxT dicom-convert output (run-1/run-2, phase already in radians) -> ses-1/ses-2."""
    rng = np.random.default_rng(4)
    anat = tmp_path / "src" / "sub-1" / "anat"
    anat.mkdir(parents=True)
    for run in (1, 2):
        for e, te in enumerate(TES, start=1):
            for part in ("mag", "phase"):
                stem = anat / f"sub-1_run-{run}_echo-{e}_part-{part}_MEGRE"
                data = rng.uniform(-np.pi, np.pi, (4, 4, 3)) if part == "phase" else \
                    rng.uniform(0, 1, (4, 4, 3))
                _nifti(Path(str(stem) + ".nii"), data.astype(np.float32))
                Path(str(stem) + ".json").write_text(json.dumps({"EchoTime": te,
                                                                  "MagneticFieldStrength": 3}))
    out = tmp_path / "bids"
    summary = convert_qsmxt.convert(tmp_path / "src", out)
    assert summary["layout"] == "bids" and summary["sessions"] == {"1": 3, "2": 3}
    side = json.loads((out / "sub-1/ses-2/anat/sub-1_ses-2_echo-3_part-phase_MEGRE.json").read_text())
    assert side["Units"] == "rad" and side["EchoTime"] == TES[2]


def test_convert_rejects_incomplete_echo(tmp_path):
    rng = np.random.default_rng(5)
    src = tmp_path / "d"
    _dcm2niix_tree(src, rng, with_t1=False)
    for f in src.glob("GR_P_8_*_e3_ph.*"):
        f.unlink()
    assert convert_qsmxt.main([str(src), str(tmp_path / "bids")]) == 65


# ---------------------------------------------------------------------------- checksums, compare
def test_verify_checksums_record_and_detect(tmp_path):
    data = tmp_path / "data" / "ds"
    data.mkdir(parents=True)
    (data / "a.txt").write_text("alpha")
    sums = tmp_path / "checksums.sha256"
    sums.write_text("# header\n")
    root = str(tmp_path / "data")
    assert verify_checksums.main([root, str(sums), "--prefix", "ds/", "--record"]) == 0
    assert "ds/a.txt" in sums.read_text()
    assert verify_checksums.main([root, str(sums), "--prefix", "ds/"]) == 0
    (data / "a.txt").write_text("tampered")
    assert verify_checksums.main([root, str(sums), "--prefix", "ds/"]) == 1
    (data / "a.txt").unlink()
    assert verify_checksums.main([root, str(sums), "--prefix", "ds/"]) == 1


def _deriv_tree(root: Path, chi, stats):
    anat = root / "sub-01" / "ses-1" / "anat"
    anat.mkdir(parents=True)
    _nifti(anat / "sub-01_ses-1_desc-tkd_Chimap.nii.gz", chi.astype(np.float32))
    _nifti(anat / "sub-01_ses-1_desc-brain_mask.nii.gz", (chi > 0).astype(np.uint8))
    stats.to_csv(anat / "sub-01_ses-1_desc-dgm_stats.tsv", sep="\t", index=False, na_rep="n/a")
    (anat / "sub-01_ses-1_desc-tkd_Chimap.json").write_text(json.dumps(
        {"Units": "ppm", "Sources": ["bids:raw:sub-01/ses-1/anat/x.nii.gz"], "Lambda": 0.1}))
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "qsmprep", "DatasetLinks": {"raw": str(root)}}))
    (root / "logs").mkdir()
    (root / "logs" / "run.log").write_text(str(root))


def test_compare_derivatives(tmp_path):
    import pandas as pd

    rng = np.random.default_rng(0)
    chi = rng.normal(0, 0.05, (5, 5, 4))
    stats = pd.DataFrame({"index": [1, 2], "name": ["Left_Caudate", "Right_Caudate"],
                          "mean_ppb": [41.25, np.nan], "n_voxels": [10, 0]})
    a, b = tmp_path / "a", tmp_path / "b"
    _deriv_tree(a, chi, stats)
    _deriv_tree(b, chi, stats)
    problems, summary = compare_derivatives.compare_trees(a, b)
    assert problems == [] and summary["files"] == 5 and summary["identical"] == 5

    # float32 round-off in a table: within tolerance
    s2 = stats.copy()
    s2.loc[0, "mean_ppb"] = 41.25 * (1 + 2e-7)
    _deriv_tree(c := tmp_path / "c", chi, s2)
    problems, _ = compare_derivatives.compare_trees(a, c)
    assert problems == []

    # a real difference in a table, an image, a sidecar, a missing file: all reported
    s3 = stats.copy()
    s3.loc[0, "mean_ppb"] = 41.5
    chi3 = chi.copy()
    chi3[2, 2, 2] += 0.01
    _deriv_tree(d := tmp_path / "d", chi3, s3)
    side = d / "sub-01/ses-1/anat/sub-01_ses-1_desc-tkd_Chimap.json"
    side.write_text(side.read_text().replace("0.1", "0.2"))
    (d / "sub-01/ses-1/anat/sub-01_ses-1_desc-brain_mask.nii.gz").unlink()
    problems, _ = compare_derivatives.compare_trees(a, d)
    text = "\n".join(problems)
    assert "mean_ppb" in text and "Chimap.nii.gz" in text and "Lambda" in text
    assert "only in" in text and "brain_mask" in text
    assert compare_derivatives.main([str(a), str(d)]) == 1
    assert compare_derivatives.main([str(a), str(b)]) == 0


def test_build_and_cluster_scripts_reject_bad_usage(tmp_path):
    """A bad argument exits 64 (EX_USAGE) and says what is wrong; the cluster script's usage
    lists exactly the subcommands its ``case`` handles (fails if one is added to either side
    only, or if a script starts work on a wrong argument)."""
    res = subprocess.run(["bash", str(ROOT / "scripts/build_image.sh"), "--bogus"],
                         capture_output=True, text=True)
    assert res.returncode == 64 and "unknown argument --bogus" in res.stderr
    cluster = ROOT / "scripts/slurm_cluster.sh"
    res = subprocess.run(["bash", str(cluster)], capture_output=True, text=True)
    assert res.returncode == 64
    usage = set(re.findall(r"scripts/slurm_cluster\.sh (\w+)", res.stdout))
    handled = set(re.findall(r"^\s+(\w+)\)", cluster.read_text(), flags=re.M))
    assert usage == handled == {"install", "start", "stop", "env", "status"}
    res = subprocess.run(["bash", str(cluster), "bogus"], capture_output=True, text=True)
    assert res.returncode == 64
