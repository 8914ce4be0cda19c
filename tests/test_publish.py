"""All-or-nothing publication (qsmprep.publish): staging, rollback, completion markers, full disks.

Full disks are tested twice: with a monkeypatched ``OSError(ENOSPC)`` (runs everywhere) and
with a real, tiny tmpfs (needs root to mount; CI runs as root).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest

from qsmprep import publish
from qsmprep.errors import OutputNotWritableError
from qsmprep.interfaces.derivatives import PublishDerivatives
from qsmprep.publish import completed_subjects, marker_path, publish_subject


def _sources(tmp_path, label="01", size=20_000, seed=0, tag="a"):
    """A subject's worth of derivative files (random bytes, distinct per ``seed``)."""
    rng = np.random.default_rng(seed)
    src = tmp_path / f"src-{tag}"
    src.mkdir(exist_ok=True)
    names = [f"sub-{label}/ses-1/anat/sub-{label}_ses-1_desc-tv_Chimap.nii.gz",
             f"sub-{label}/ses-1/anat/sub-{label}_ses-1_desc-tv_Chimap.json",
             f"sub-{label}/ses-1/anat/sub-{label}_ses-1_atlas-DGM_desc-dgm_stats.tsv",
             f"sub-{label}/figures/sub-{label}_ses-1_desc-qsm_figure.svg",
             f"sub-{label}.html"]
    plan = []
    for k, rel in enumerate(names):
        f = src / Path(rel).name
        f.write_bytes(rng.integers(0, 256, size + 100 * k, dtype=np.uint8).tobytes())
        plan.append((str(f), rel))
    return plan


def _tree(out: Path):
    """Every file under ``out`` (relative path -> bytes), markers included."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _failing_copy(fail_at, err=errno.ENOSPC):
    calls = []

    def copy(src, dst):
        calls.append(dst)
        if len(calls) == fail_at:
            Path(dst).write_bytes(b"partial")  # like a copy cut short by a full disk
            raise OSError(err, os.strerror(err), str(dst))
        shutil.copyfile(src, dst)

    return copy


def test_publish_then_complete(tmp_path):
    """Every file lands at its destination with its bytes, the marker lists them all, and no
    staging folder or temporary is left (fails on a lost, altered or extra file)."""
    out = tmp_path / "out"
    plan = _sources(tmp_path)
    written = publish_subject(plan, out, "01")
    assert [Path(w) for w in written] == [out / rel for _, rel in plan]
    for src, rel in plan:
        assert (out / rel).read_bytes() == Path(src).read_bytes()
    assert completed_subjects(out) == {"01"}
    record = json.loads(marker_path(out, "01").read_text())
    assert set(record["Files"]) == {rel for _, rel in plan}
    # nothing but the outputs and the marker: no staging folder, no hidden temporary
    assert not [p for p in out.rglob(".*")]


def test_enospc_first_publication_leaves_nothing(tmp_path):
    """A full disk while staging: exit 73 naming the folder, nothing of the subject visible,
    not complete (fails on a half-published subject)."""
    out = tmp_path / "out"
    plan = _sources(tmp_path)
    with pytest.raises(OutputNotWritableError) as info:
        publish_subject(plan, out, "01", copy=_failing_copy(3))
    err = info.value
    assert err.exit_code == 73
    assert str(out) in str(err) and "free of" in str(err), str(err)
    assert not list(out.glob("sub-*")), "a half-published subject is visible"
    assert not [p for p in out.rglob(".*")], "temporary files left"
    assert completed_subjects(out) == set()


def test_enospc_on_republication_keeps_previous_complete_outputs(tmp_path):
    """A full disk while republishing: the previous complete version stays byte for byte,
    marker included (fails if the old outputs were removed first)."""
    out = tmp_path / "out"
    publish_subject(_sources(tmp_path, seed=0, tag="a"), out, "01")
    before = _tree(out)
    new = _sources(tmp_path, seed=1, tag="b")
    with pytest.raises(OutputNotWritableError):
        publish_subject(new, out, "01", copy=_failing_copy(4))
    assert _tree(out) == before  # marker included: the old complete version is intact
    assert completed_subjects(out) == {"01"}


def test_failure_while_swapping_is_rolled_back(tmp_path, monkeypatch):
    """An error after some files were already replaced restores every one of them."""
    out = tmp_path / "out"
    publish_subject(_sources(tmp_path, seed=0, tag="a"), out, "01")
    before = _tree(out)
    real_replace = os.replace
    swaps = []

    def replace(src, dst):
        if "sub-01" in str(dst) and ".staging" not in str(dst) and "new" in Path(src).parent.name:
            swaps.append(dst)
            if len(swaps) == 3:
                raise OSError(errno.EIO, "I/O error", str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(publish.os, "replace", replace)
    with pytest.raises(OSError) as info:
        publish_subject(_sources(tmp_path, seed=1, tag="b"), out, "01")
    assert info.value.errno == errno.EIO
    assert len(swaps) == 3  # two files had been replaced when the third failed
    monkeypatch.setattr(publish.os, "replace", real_replace)
    assert _tree(out) == before
    assert completed_subjects(out) == {"01"}


def test_subject_is_incomplete_while_republished(tmp_path):
    """During a republication the group level sees the subject as incomplete (fails if the
    marker is retracted only after files change)."""
    out = tmp_path / "out"
    publish_subject(_sources(tmp_path, seed=0, tag="a"), out, "01")
    seen = []

    def copy(src, dst):
        seen.append(completed_subjects(out))
        shutil.copyfile(src, dst)

    publish_subject(_sources(tmp_path, seed=1, tag="b"), out, "01", copy=copy)
    assert seen and all(s == set() for s in seen), seen
    assert completed_subjects(out) == {"01"}


def test_stale_staging_of_killed_publication_is_removed(tmp_path):
    """A staging folder left by a killed process is removed by the next publication (fails if
    it accumulates)."""
    out = tmp_path / "out"
    stale = out / "logs" / ".staging-sub-01-999999"
    (stale / "new").mkdir(parents=True)
    (stale / "new" / "0000_x.nii.gz").write_bytes(b"x" * 100)
    publish_subject(_sources(tmp_path), out, "01")
    assert not stale.exists()
    assert completed_subjects(out) == {"01"}


def test_completed_subjects_checks_listed_files(tmp_path):
    """A missing or truncated published file, or an unreadable marker, makes the subject
    incomplete (fails if the marker alone is trusted)."""
    out = tmp_path / "out"
    for label in ("01", "02", "03"):
        publish_subject(_sources(tmp_path, label=label, tag=label), out, label)
    assert completed_subjects(out) == {"01", "02", "03"}
    (out / "sub-02.html").unlink()
    stats = out / "sub-03/ses-1/anat/sub-03_ses-1_atlas-DGM_desc-dgm_stats.tsv"
    stats.write_bytes(stats.read_bytes()[:10])  # truncated after publication
    assert completed_subjects(out) == {"01"}
    marker_path(out, "01").write_text("{not json")
    assert completed_subjects(out) == set()


def test_insufficient_free_space_fails_before_copying(tmp_path, monkeypatch):
    """Too little free space is found before the first copy, and said with both sizes (fails
    if copying starts and fills the disk)."""
    out = tmp_path / "out"
    plan = _sources(tmp_path)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(publish.shutil, "disk_usage",
                        lambda p: usage._replace(free=999))
    copies = []
    with pytest.raises(OutputNotWritableError) as info:
        publish_subject(plan, out, "01", copy=lambda s, d: copies.append(d))
    assert copies == []
    assert "999 B free" in str(info.value) and "needed" in str(info.value)
    assert not list(out.glob("sub-*"))


def test_publish_interface_infers_subject(tmp_path):
    """The Nipype node gets only the images, tables, figures and report: it finds each file's
    folder from its name, takes the Chimap's JSON sidecar along, and the subject from the names.

    Fails if a file lands in another folder than the one its entities name (figures under
    ``figures/``, the report at the top), if the sidecar is left behind, or if the subject
    is not marked complete.
    """
    plan = _sources(tmp_path, label="07")
    out = tmp_path / "out"
    res = PublishDerivatives(in_files=[s for s, _ in plan if not s.endswith(".json")],
                             output_dir=str(out)).run(cwd=str(tmp_path))
    assert sorted(res.outputs.out_files) == sorted(str(out / rel) for _, rel in plan)
    for src, rel in plan:
        assert (out / rel).read_bytes() == Path(src).read_bytes()
    assert completed_subjects(out) == {"07"}


# ------------------------------------------------------------------------------------------
# a real full file system
@pytest.fixture
def tiny_tmpfs(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mnt = tmp_path / f"tmpfs-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (container without CAP_SYS_ADMIN?): {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_real_full_disk_precheck(tmp_path, tiny_tmpfs):
    """A real 64 kB file system: the free-space check refuses (exit 73), nothing left behind."""
    plan = _sources(tmp_path, size=40_000)  # 5 files, 200 kB > 64 kB
    with pytest.raises(OutputNotWritableError) as info:
        publish_subject(plan, tiny_tmpfs / "out", "01")
    assert info.value.exit_code == 73 and str(tiny_tmpfs / "out") in str(info.value)
    assert not list((tiny_tmpfs / "out").glob("sub-*"))
    assert not [p for p in tiny_tmpfs.rglob(".*")]


def test_real_enospc_while_copying(tmp_path, tiny_tmpfs, monkeypatch):
    """The kernel's ENOSPC mid-copy (the free-space check is told there is room)."""
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(publish.shutil, "disk_usage", lambda p: usage)
    plan = _sources(tmp_path, size=20_000)  # 100 kB > 64 kB
    with pytest.raises(OutputNotWritableError) as info:
        publish_subject(plan, tiny_tmpfs / "out", "01")
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == errno.ENOSPC
    assert not list((tiny_tmpfs / "out").glob("sub-*"))
    assert not [p for p in tiny_tmpfs.rglob(".*")], "temporary files left on the full disk"
    assert completed_subjects(tiny_tmpfs / "out") == set()
