"""Bad input found before any workflow node runs (issue 11 items 1-7) and non-finite voxels.

Each CLI case breaks one thing in a fresh copy of a tiny simulated session and asserts the
BEP027 exit code, that the message names the offending file, that it failed fast and that
nothing was written to the output folder. Times to fail are printed in the pytest summary
(machine shared with other jobs).
"""

from __future__ import annotations

import gzip
import json
import logging
import shutil
import time
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest

from qsmprep import bids as qb
from qsmprep import preflight
from qsmprep.errors import DataError, MissingInputError, UsageError

SES = "sub-01/ses-baseline/anat"
STEM = "sub-01_ses-baseline"
#: Failing must not wait for any node; generous for a machine shared by several jobs.
MAX_FAIL_S = 30.0


def report_line(request, line):
    path = Path(request.config.rootpath) / ".pytest_cache" / "qsmprep-summary.txt"
    path.parent.mkdir(exist_ok=True)
    with path.open("a") as fh:
        fh.write(line + "\n")


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    from qsmprep.simulate.cli import main as simulate

    root = tmp_path_factory.mktemp("sim") / "bids"
    simulate([str(root), "--subjects", "1", "--sessions", "1", "--seed", "3", "--preset", "small"])
    return root


@pytest.fixture
def bids(sim, tmp_path):
    dst = tmp_path / "bids"
    shutil.copytree(sim, dst, ignore=shutil.ignore_patterns("derivatives"))
    return dst


def _anat(bids):
    return bids / SES


def _cwd(path: Path) -> str:
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def _rewrite(path, func, dtype=None):
    img = nb.load(path)
    data = func(np.asarray(img.dataobj))
    hdr = img.header.copy()
    if dtype is not None:
        hdr.set_data_dtype(dtype)
    nb.Nifti1Image(data, img.affine, hdr).to_filename(path)


def _run_cli(bids, tmp_path, *extra):
    from qsmprep.cli.run import main

    out = tmp_path / "out"
    t0 = time.perf_counter()
    with pytest.raises(SystemExit) as exc:
        main([str(bids), str(out), "participant", "--participant-label", "01",
              "-w", str(tmp_path / "work"), "--nprocs", "1", "--omp-nthreads", "1", *extra])
    return exc.value.code, time.perf_counter() - t0, out


def _assert_fails(request, capsys, bids, tmp_path, code, names, needle, *extra):
    got, seconds, out = _run_cli(bids, tmp_path, *extra)
    err = capsys.readouterr().err
    assert got == code, err[-3000:]
    assert needle.lower() in err.lower(), err[-3000:]
    for name in names:
        assert str(name) in err, (name, err[-3000:])
    assert seconds < MAX_FAIL_S
    assert not out.exists() or not any(out.iterdir()), sorted(out.rglob("*"))
    line = f"[preflight] {request.node.name}: exit {got} in {seconds:.1f} s"
    print(line)
    report_line(request, line)
    return err


# ------------------------------------------------------------------------------------------
# Control: the clean session passes the pre-flight pass with nothing to report
# ------------------------------------------------------------------------------------------
def test_clean_session_passes(bids):
    """Control: fails if a check fires on clean simulated input (a false alarm would stop every run)."""
    lay = qb.build_layout(bids, validate=False)
    d = qb.collect_data(lay, "01", "baseline")
    summary = preflight.check_session(d)
    assert summary["n_images"] == 2 * len(d["echo_times"]) + 1  # every GRE echo + T1w
    assert summary["nonfinite"] == {} and summary["warnings"] == []


# ------------------------------------------------------------------------------------------
# Item 1: phase in degrees / x1000 while the sidecar says rad
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("factor,hint", [(180 / np.pi, "degrees"), (1000.0, "x 1000")])
def test_phase_not_radians(request, capsys, bids, tmp_path, factor, hint):
    """Phase in degrees / x1000 with ``Units: rad``: exit 65 naming the file and the likely
    unit (fails if such a phase runs to the end and gives wrong numbers)."""
    f = _anat(bids) / f"{STEM}_echo-2_part-phase_MEGRE.nii.gz"
    _rewrite(f, lambda a: (a * factor).astype(np.float32))
    err = _assert_fails(request, capsys, bids, tmp_path, 65, [f.name], hint)
    assert "Units" in err and "far outside [-pi, pi]" in err


# ------------------------------------------------------------------------------------------
# Item 2a: T1w and GRE do not overlap in world space
# ------------------------------------------------------------------------------------------
def test_t1w_no_overlap(request, capsys, bids, tmp_path):
    """Disjoint T1w and GRE boxes: exit 65 before registration (fails if it is left to SyN)."""
    f = _anat(bids) / f"{STEM}_T1w.nii.gz"
    img = nb.load(f)
    aff = img.affine.copy()
    aff[:3, 3] += [0.0, 400.0, 0.0]  # origin shifted by 40 cm: the boxes are disjoint
    nb.Nifti1Image(np.asarray(img.dataobj), aff, img.header).to_filename(f)
    _assert_fails(request, capsys, bids, tmp_path, 65, [f.name], "do not overlap")


def test_partial_overlap_warns(bids, caplog):
    """A T1w box covering < 50 % of the GRE box is logged and reported, not fatal."""
    f = _anat(bids) / f"{STEM}_T1w.nii.gz"
    img = nb.load(f)
    lay = qb.build_layout(bids, validate=False)
    d = qb.collect_data(lay, "01", "baseline")
    gre = nb.load(d["mag"][0])
    gbox = preflight.world_bbox(gre.affine, gre.shape)
    aff = img.affine.copy()
    tbox = preflight.world_bbox(aff, img.shape)
    aff[1, 3] += (gbox[1][1] - tbox[0][1]) - 0.3 * (gbox[1][1] - gbox[0][1])  # overlap 30 % in y
    nb.Nifti1Image(np.asarray(img.dataobj), aff, img.header).to_filename(f)
    with caplog.at_level(logging.WARNING, logger="qsmprep.preflight"):
        summary = preflight.check_session(d)
    assert any("covers only" in w and f.name in w for w in summary["warnings"])
    assert any("covers only" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------------------------
# Item 3: NaN / Inf voxels leave the mask, are logged and recorded in the sidecar
# ------------------------------------------------------------------------------------------
def test_nonfinite_logged_by_preflight(bids, caplog):
    """NaN voxels in a magnitude: counted per file and logged with the session (fails if the
    count is wrong or the warning does not name the file)."""
    mag = _anat(bids) / f"{STEM}_echo-2_part-mag_MEGRE.nii.gz"
    _rewrite(mag, lambda a: np.where(np.arange(a.size).reshape(a.shape) % 997 == 0, np.nan, a)
             .astype(np.float32))
    n_bad = int(np.count_nonzero(~np.isfinite(np.asarray(nb.load(mag).dataobj))))
    lay = qb.build_layout(bids, validate=False)
    d = qb.collect_data(lay, "01", "baseline")
    with caplog.at_level(logging.WARNING, logger="qsmprep.preflight"):
        summary = preflight.check_session(d)
    assert summary["nonfinite"] == {str(mag): n_bad}
    msgs = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(mag.name in m and f"{n_bad} NaN" in m and STEM in m for m in msgs), msgs


def test_nonfinite_voxels_leave_the_mask(bids, tmp_path, caplog):
    """Inf in a magnitude and NaN in a phase: excluded from the mask, not replaced by 3.4e38."""
    from qsmprep.interfaces.qsm import BrainMask, LoadGRE, MergeProvenance
    from qsmprep.qsm import masking

    lay = qb.build_layout(bids, validate=False)
    d = qb.collect_data(lay, "01", "baseline")
    common = dict(phase_units="rad", label=STEM)
    clean = LoadGRE(mag_files=d["mag"], phase_files=d["phase"], **common).run(cwd=_cwd(tmp_path / "c"))
    mask_clean = BrainMask(mag_file=clean.outputs.mag_file, phase_file=clean.outputs.phase_file,
                           echo_times=d["echo_times"], method=masking.DEFAULT).run(cwd=_cwd(tmp_path / "cm"))
    inside = np.argwhere(nb.load(mask_clean.outputs.mask_file).get_fdata() > 0)
    rng = np.random.default_rng(0)
    pick = inside[rng.choice(len(inside), size=12, replace=False)]
    inf_vox, nan_vox = [tuple(v) for v in pick[:6]], [tuple(v) for v in pick[6:]]

    def put(value, voxels):
        def f(a):
            a = a.astype(np.float32)
            for v in voxels:
                a[v] = value
            return a
        return f

    _rewrite(Path(d["mag"][0]), put(np.inf, inf_vox))
    _rewrite(Path(d["phase"][3]), put(np.nan, nan_vox))
    with caplog.at_level(logging.WARNING, logger="qsmprep.interfaces.qsm"):
        res = LoadGRE(mag_files=d["mag"], phase_files=d["phase"], **common).run(cwd=_cwd(tmp_path / "b"))
    mag4d = nb.load(res.outputs.mag_file).get_fdata()
    assert np.isfinite(mag4d).all()
    assert mag4d.max() <= nb.load(clean.outputs.mag_file).get_fdata().max()  # no 3.4e38 stand-in
    bad = nb.load(res.outputs.nonfinite_file).get_fdata() > 0
    assert bad.sum() == 12 and all(bad[v] for v in inf_vox + nan_vox)
    prov = res.outputs.provenance
    assert prov["NonFiniteVoxels"]["Count"] == 12
    assert prov["NonFiniteVoxels"]["Files"] == {Path(d["mag"][0]).name: 6, Path(d["phase"][3]).name: 6}
    assert prov["QualityFlags"][0]["severity"] == "warning" and STEM in prov["QualityFlags"][0]["message"]
    assert any("12 voxel(s)" in r.getMessage() and STEM in r.getMessage() for r in caplog.records)

    mres = BrainMask(mag_file=res.outputs.mag_file, phase_file=res.outputs.phase_file,
                     echo_times=d["echo_times"], method=masking.DEFAULT,
                     exclude_file=res.outputs.nonfinite_file).run(cwd=_cwd(tmp_path / "bm"))
    mask = nb.load(mres.outputs.mask_file).get_fdata() > 0
    assert not any(mask[v] for v in inf_vox + nan_vox)
    # without the exclusion, the mask method keeps some of these (zeroed) voxels
    kept = BrainMask(mag_file=res.outputs.mag_file, phase_file=res.outputs.phase_file,
                     echo_times=d["echo_times"], method=masking.DEFAULT).run(cwd=_cwd(tmp_path / "nx"))
    mask_kept = nb.load(kept.outputs.mask_file).get_fdata() > 0
    n_kept = sum(bool(mask_kept[v]) for v in inf_vox + nan_vox)
    assert n_kept > 0
    assert mres.outputs.provenance["BrainMask"]["NonFiniteVoxelsExcluded"] == n_kept
    assert (mask_kept & ~mask).sum() == n_kept  # nothing else removed
    side = MergeProvenance(provenance=[prov, mres.outputs.provenance]).run(cwd=_cwd(tmp_path / "p"))
    sidecar = side.outputs.sidecar
    assert sidecar["NonFiniteVoxels"]["Count"] == 12
    assert [f["step"] for f in sidecar["QualityFlags"]] == ["load_gre"]


def test_clean_input_has_no_nonfinite_flag(bids, tmp_path):
    """Control: no NonFiniteVoxels flag on clean input (fails on a spurious quality flag)."""
    from qsmprep.interfaces.qsm import LoadGRE

    lay = qb.build_layout(bids, validate=False)
    d = qb.collect_data(lay, "01", "baseline")
    res = LoadGRE(mag_files=d["mag"], phase_files=d["phase"], phase_units="rad").run(cwd=_cwd(tmp_path))
    assert res.outputs.provenance["NonFiniteVoxels"]["Count"] == 0
    assert "QualityFlags" not in res.outputs.provenance


# ------------------------------------------------------------------------------------------
# Item 4: truncated gzip, all-zero magnitude, header announcing 10000^3 voxels
# ------------------------------------------------------------------------------------------
def test_truncated_gzip(request, capsys, bids, tmp_path):
    """Half a .nii.gz: exit 66 naming the file (fails if a node finds it minutes later)."""
    f = _anat(bids) / f"{STEM}_echo-3_part-phase_MEGRE.nii.gz"
    blob = f.read_bytes()
    f.write_bytes(blob[: len(blob) // 2])
    _assert_fails(request, capsys, bids, tmp_path, 66, [f.name], "truncated")


def test_all_zero_magnitude(request, capsys, bids, tmp_path):
    """An all-zero echo: exit 65 naming the file (fails if masking runs on nothing)."""
    f = _anat(bids) / f"{STEM}_echo-1_part-mag_MEGRE.nii.gz"
    _rewrite(f, lambda a: np.zeros_like(a, dtype=np.float32))
    _assert_fails(request, capsys, bids, tmp_path, 65, [f.name], "no positive value")


def _claim_shape(path: Path, shape):
    """Rewrite only the header's dim field (the data stay as they are)."""
    raw = bytearray(gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes())
    dims = np.array([len(shape), *shape] + [1] * (7 - len(shape)), dtype="<i2")
    raw[40:56] = dims.tobytes()
    path.write_bytes(gzip.compress(bytes(raw)) if path.suffix == ".gz" else bytes(raw))


def test_header_claims_huge_image(request, capsys, bids, tmp_path):
    """10000^3 float32 = 4 TB announced by a small file: fails before any allocation."""
    f = _anat(bids) / f"{STEM}_T1w.nii.gz"
    _claim_shape(f, (10000, 10000, 10000))
    assert nb.load(f).shape == (10000, 10000, 10000)
    _assert_fails(request, capsys, bids, tmp_path, 66, [f.name], "cannot hold")


def test_size_check_uncompressed(tmp_path):
    """A .nii whose header claims more voxels than it holds: 66 at once, before reading
    (fails if the check reads the data or lets the short file through)."""
    f = tmp_path / "x.nii"
    nb.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4)).to_filename(f)
    assert preflight.check_data_size(f, nb.load(f)) == 8 * 8 * 8 * 4
    _claim_shape(f, (16, 8, 8))  # twice the voxels the file holds
    t0 = time.perf_counter()
    with pytest.raises(MissingInputError, match="holds only") as exc:
        preflight.read_image(f)
    assert time.perf_counter() - t0 < 1.0 and str(f) in str(exc.value)


# ------------------------------------------------------------------------------------------
# Item 5: 4-D echoes with an EchoTime list
# ------------------------------------------------------------------------------------------
def test_4d_echoes_with_echo_time_list(request, capsys, bids, tmp_path):
    """Echoes stacked in one 4-D file with an EchoTime list: exit 65 explaining the layout
    (fails on a generic "not a number" error or if it is accepted)."""
    anat = _anat(bids)
    tes = []
    for part in ("mag", "phase"):
        files = sorted(anat.glob(f"{STEM}_echo-*_part-{part}_MEGRE.nii.gz"),
                       key=lambda p: int(p.name.split("echo-")[1].split("_")[0]))
        vols = [np.asarray(nb.load(p).dataobj) for p in files]
        meta = json.loads(files[0].with_name(files[0].name.replace(".nii.gz", ".json")).read_text())
        tes = [json.loads(p.with_name(p.name.replace(".nii.gz", ".json")).read_text())["EchoTime"]
               for p in files]
        ref = nb.load(files[0])
        for p in files:
            p.unlink()
            p.with_name(p.name.replace(".nii.gz", ".json")).unlink()
        out = anat / f"{STEM}_part-{part}_MEGRE.nii.gz"
        nb.Nifti1Image(np.stack(vols, axis=-1), ref.affine).to_filename(out)
        meta["EchoTime"] = tes
        out.with_name(out.name.replace(".nii.gz", ".json")).write_text(json.dumps(meta))
    err = _assert_fails(request, capsys, bids, tmp_path, 65, [f"{STEM}_part-"], "4-D file",
                        "--skip-bids-validation")
    assert "EchoTime" in err and "is not a number" not in err


# ------------------------------------------------------------------------------------------
# Item 6: a filter file that matches nothing, with a participant label
# ------------------------------------------------------------------------------------------
def test_filter_matches_nothing(request, capsys, bids, tmp_path):
    """A filter that selects no GRE: exit 18 naming the subject (fails on a silent empty run)."""
    filt = tmp_path / "filter.json"
    filt.write_text(json.dumps({"megre": {"acquisition": "nonexistent"}}))
    _assert_fails(request, capsys, bids, tmp_path, 18, ["sub-01"], "--bids-filter-file selected no GRE",
                  "--bids-filter-file", str(filt))


# ------------------------------------------------------------------------------------------
# Item 7: output folder of another pipeline
# ------------------------------------------------------------------------------------------
def test_foreign_output_folder_refused(request, capsys, bids, tmp_path):
    """Another pipeline's folder: exit 64 and nothing in it touched (fails if qsmprep writes
    into fMRIPrep's outputs)."""
    out = tmp_path / "out"
    out.mkdir()
    desc = out / "dataset_description.json"
    text = json.dumps({"Name": "other", "BIDSVersion": "1.10.0", "DatasetType": "derivative",
                       "GeneratedBy": [{"Name": "fMRIPrep", "Version": "24.1.0"}]})
    desc.write_text(text)
    got, seconds, _ = _run_cli(bids, tmp_path)
    err = capsys.readouterr().err
    assert got == 64, err[-3000:]
    assert str(desc) in err and "fMRIPrep" in err
    assert desc.read_text() == text and sorted(p.name for p in out.iterdir()) == ["dataset_description.json"]
    assert seconds < MAX_FAIL_S
    line = f"[preflight] {request.node.name}: exit {got} in {seconds:.1f} s"
    print(line)
    report_line(request, line)


@pytest.mark.parametrize("content,ok", [
    ({"Name": "x", "GeneratedBy": [{"Name": "qsmprep", "Version": "0"}]}, True),
    ({"Name": "raw", "BIDSVersion": "1.10.0"}, False),
    ({"Name": "old", "PipelineDescription": {"Name": "qsmprep"}}, True),
    ({"Name": "sim", "GeneratedBy": [{"Name": "qsmprep-simulate"}]}, False),
    (None, True),
])
def test_check_output_dir(tmp_path, content, ok):
    """qsmprep's own folders (current and pre-1.4 descriptions) and new folders are accepted,
    raw data and other pipelines refused with 64 (fails if either side flips)."""
    if content is not None:
        (tmp_path / "dataset_description.json").write_text(json.dumps(content))
    if ok:
        preflight.check_output_dir(tmp_path)
    else:
        with pytest.raises(UsageError) as exc:
            preflight.check_output_dir(tmp_path)
        assert exc.value.exit_code == 64


# ------------------------------------------------------------------------------------------
# geometry helpers
# ------------------------------------------------------------------------------------------
def test_bbox_overlap_fraction():
    """Hand values: voxel-edge boxes, half and no overlap (fails on an off-by-half-voxel box)."""
    box = preflight.world_bbox(np.diag([2.0, 2.0, 2.0, 1.0]), (10, 10, 10))
    np.testing.assert_allclose(box[0], [-1, -1, -1])
    np.testing.assert_allclose(box[1], [19, 19, 19])
    shifted = (box[0] + [10, 0, 0], box[1] + [10, 0, 0])
    assert preflight.bbox_overlap_fraction(box, shifted) == pytest.approx(0.5)
    far = (box[0] + [100, 0, 0], box[1] + [100, 0, 0])
    assert preflight.bbox_overlap_fraction(box, far) == 0.0


def test_user_mask_checks(bids, tmp_path):
    """An empty user mask and one off the GRE grid are refused with 65 (fails if either is used)."""
    lay = qb.build_layout(bids, validate=False)
    d = qb.collect_data(lay, "01", "baseline")
    gre = nb.load(d["mag"][0])
    m = tmp_path / "mask.nii.gz"
    nb.Nifti1Image(np.zeros(gre.shape, np.uint8), gre.affine).to_filename(m)
    d["user_mask"] = str(m)
    with pytest.raises(DataError, match="is empty"):
        preflight.check_session(d)
    aff = gre.affine.copy()
    aff[0, 3] += 5
    nb.Nifti1Image(np.ones(gre.shape, np.uint8), aff).to_filename(m)
    with pytest.raises(DataError, match="not on the GRE grid"):
        preflight.check_session(d)


@pytest.mark.parametrize("ext", [".nii.gz", ".nii"])
def test_read_image_matches_nibabel(tmp_path, ext):
    """The one-pass reader returns the stored values and scaling nibabel would (int16 + slope)."""
    data = np.random.default_rng(2).integers(-4096, 4096, (9, 7, 5), dtype=np.int16)
    img = nb.Nifti1Image(data, np.diag([1.5, 1.5, 2.0, 1.0]))
    img.header.set_data_dtype(np.int16)
    img.header.set_slope_inter(0.5, 1.0)
    f = tmp_path / f"x{ext}"
    img.to_filename(f)
    raw, slope, inter, _ = preflight.read_image(f)
    ref = nb.load(f)
    assert np.array_equal(raw, np.asarray(ref.dataobj.get_unscaled()))
    assert (slope, inter) == (0.5, 1.0)
    np.testing.assert_allclose(preflight._scaled(raw, slope, inter), ref.get_fdata())
