"""Input layer: validation, layout, participant selection, per-session collection, derivatives."""

import json
import os
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest

from qsmprep import bids as qb
from qsmprep.errors import (
    BIDSValidationError,
    DataError,
    MissingInputError,
    NoMatchingData,
    UsageError,
)

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def _nii(path: Path, shape=(4, 4, 4), affine=AFFINE, dtype=np.float32):
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(0).random(shape).astype(dtype)
    nb.Nifti1Image(data, affine).to_filename(str(path))


def _json(path: Path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def make_dataset(root: Path, subjects=("01",), sessions=("baseline",), echoes=(1, 2, 3),
                 tes=None, b0=3.0, t1w=True, parts=("mag", "phase"), inherit=False,
                 units="rad", string_numbers=False):
    """Tiny BIDS MEGRE dataset (4x4x4 voxels). Returns the root."""
    _json(root / "dataset_description.json", {"Name": "tiny", "BIDSVersion": "1.10.0"})
    (root / "participants.tsv").write_text(
        "participant_id\tgroup\n" + "".join(f"sub-{s}\tHC\n" for s in subjects))
    tes = tes or {e: 0.004 * e for e in echoes}
    if inherit:
        _json(root / "MEGRE.json", {"MagneticFieldStrength": b0})
    for sub in subjects:
        for ses in sessions:
            sdir = f"sub-{sub}" + (f"/ses-{ses}" if ses else "")
            stem = f"sub-{sub}" + (f"_ses-{ses}" if ses else "")
            anat = root / sdir / "anat"
            if t1w:
                _nii(anat / f"{stem}_T1w.nii.gz")
            for e in echoes:
                for part in parts:
                    base = anat / f"{stem}_echo-{e}_part-{part}_MEGRE"
                    _nii(base.with_name(base.name + ".nii.gz"))
                    te = str(tes[e]) if string_numbers else tes[e]
                    meta = {"EchoTime": te}
                    if not inherit and b0 is not None:
                        meta["MagneticFieldStrength"] = str(b0) if string_numbers else b0
                    if part == "phase" and units is not None:
                        meta["Units"] = units
                    _json(base.with_name(base.name + ".json"), meta)
    return root


def layout_of(root, **kw):
    kw.setdefault("validate", False)
    return qb.build_layout(root, **kw)


# ------------------------------------------------------------------------------------------
def test_collect_basic_and_sources(tmp_path):
    root = make_dataset(tmp_path / "ds")
    lay = layout_of(root)
    d = qb.collect_data(lay, "01", "baseline")
    assert d["subject"] == "01" and d["session"] == "baseline"
    assert [Path(p).name for p in d["phase"]] == [
        f"sub-01_ses-baseline_echo-{e}_part-phase_MEGRE.nii.gz" for e in (1, 2, 3)]
    assert all("part-mag" in p for p in d["mag"])
    assert d["echo_times"] == pytest.approx([0.004, 0.008, 0.012])
    assert d["b0"] == 3.0 and d["phase_units"] == "rad"
    assert d["t1w"].endswith("sub-01_ses-baseline_T1w.nii.gz")
    assert d["shape"] == (4, 4, 4)
    assert d["sources"][0] == "bids:raw:sub-01/ses-baseline/anat/sub-01_ses-baseline_echo-1_part-mag_MEGRE.nii.gz"
    assert d["metadata"]["EchoTime"] == d["echo_times"]
    # nothing written into the input dataset
    assert not list(root.rglob("*.sqlite")) and not list(root.rglob("*.db"))


def test_echo_sorted_numerically(tmp_path):
    echoes = (1, 2, 10)
    root = make_dataset(tmp_path / "ds", echoes=echoes, tes={1: 0.003, 2: 0.006, 10: 0.030})
    d = qb.collect_data(layout_of(root), "01", "baseline")
    assert d["echo_numbers"] == [1, 2, 10]
    assert "echo-10" in Path(d["phase"][-1]).name and "echo-10" in Path(d["mag"][-1]).name
    assert d["echo_times"] == pytest.approx([0.003, 0.006, 0.030])


def test_echo_times_must_increase_with_echo_number(tmp_path):
    root = make_dataset(tmp_path / "ds", tes={1: 0.004, 2: 0.012, 3: 0.008})
    with pytest.raises(DataError) as exc:
        qb.collect_data(layout_of(root), "01", "baseline")
    assert exc.value.exit_code == 65 and "do not increase" in str(exc.value)


def test_metadata_inherited_and_strings_coerced(tmp_path):
    root = make_dataset(tmp_path / "ds", inherit=True, string_numbers=True)
    d = qb.collect_data(layout_of(root), "01", "baseline")
    assert d["b0"] == 3.0 and isinstance(d["b0"], float)
    assert all(isinstance(t, float) for t in d["echo_times"])
    assert d["echo_times"] == pytest.approx([0.004, 0.008, 0.012])


def test_missing_b0_and_override(tmp_path):
    root = make_dataset(tmp_path / "ds", b0=None)
    lay = layout_of(root)
    with pytest.raises(DataError) as exc:
        qb.collect_data(lay, "01", "baseline")
    assert exc.value.exit_code == 65
    assert "MagneticFieldStrength" in str(exc.value) and "--b0-strength" in str(exc.value)
    assert "echo-1_part-phase_MEGRE" in str(exc.value)
    assert qb.collect_data(lay, "01", "baseline", b0_strength=7)["b0"] == 7.0


def test_missing_echo_time(tmp_path):
    root = make_dataset(tmp_path / "ds")
    sidecar = root / "sub-01/ses-baseline/anat/sub-01_ses-baseline_echo-2_part-phase_MEGRE.json"
    _json(sidecar, {"MagneticFieldStrength": 3, "Units": "rad"})
    with pytest.raises(DataError) as exc:
        qb.collect_data(layout_of(root), "01", "baseline")
    assert exc.value.exit_code == 65
    assert "EchoTime" in str(exc.value) and sidecar.name in str(exc.value)


def test_echo_time_in_ms_rejected(tmp_path):
    root = make_dataset(tmp_path / "ds", tes={1: 4.0, 2: 8.0, 3: 12.0})
    with pytest.raises(DataError, match="seconds"):
        qb.collect_data(layout_of(root), "01", "baseline")


def test_non_numeric_echo_time(tmp_path):
    root = make_dataset(tmp_path / "ds", tes={1: "4 ms", 2: 0.008, 3: 0.012})
    with pytest.raises(DataError, match="not a number"):
        qb.collect_data(layout_of(root), "01", "baseline")


def test_no_megre_data(tmp_path):
    root = make_dataset(tmp_path / "ds", parts=())
    with pytest.raises(MissingInputError) as exc:
        qb.collect_data(layout_of(root), "01", "baseline")
    assert exc.value.exit_code == 66 and "--bids-filter-file" in str(exc.value)


def test_magnitude_only(tmp_path):
    root = make_dataset(tmp_path / "ds", parts=("mag",))
    with pytest.raises(MissingInputError) as exc:
        qb.collect_data(layout_of(root), "01", "baseline")
    assert exc.value.exit_code == 66 and "magnitude-only" in str(exc.value)


def test_real_imag_accepted_for_conversion(tmp_path):
    """part-real/part-imag runs are collected (the loader converts them); Units are not needed."""
    root = make_dataset(tmp_path / "ds", parts=("real", "imag"), units=None)
    d = qb.collect_data(layout_of(root), "01", "baseline")
    assert d["parts"] == "real-imag" and d["phase_units"] is None
    assert all("part-real" in p for p in d["mag"]) and all("part-imag" in p for p in d["phase"])
    assert d["echo_times"] == pytest.approx([0.004, 0.008, 0.012])
    assert not any("Units" in w for w in d["warnings"])


def test_real_imag_echo_mismatch(tmp_path):
    root = make_dataset(tmp_path / "ds", parts=("real", "imag"))
    anat = root / "sub-01/ses-baseline/anat"
    for ext in (".nii.gz", ".json"):
        (anat / f"sub-01_ses-baseline_echo-2_part-imag_MEGRE{ext}").unlink()
    with pytest.raises(DataError, match="part-imag echoes"):
        qb.collect_data(layout_of(root), "01", "baseline")


def test_echo_count_mismatch(tmp_path):
    root = make_dataset(tmp_path / "ds")
    anat = root / "sub-01/ses-baseline/anat"
    for ext in (".nii.gz", ".json"):
        (anat / f"sub-01_ses-baseline_echo-3_part-mag_MEGRE{ext}").unlink()
    with pytest.raises(DataError) as exc:
        qb.collect_data(layout_of(root), "01", "baseline")
    assert exc.value.exit_code == 65
    assert "magnitude echoes [1, 2]" in str(exc.value) and "phase echoes [1, 2, 3]" in str(exc.value)


def test_shape_and_affine_mismatch(tmp_path):
    root = make_dataset(tmp_path / "ds")
    bad = root / "sub-01/ses-baseline/anat/sub-01_ses-baseline_echo-2_part-phase_MEGRE.nii.gz"
    _nii(bad, shape=(4, 4, 5))
    with pytest.raises(DataError) as exc:
        qb.collect_data(layout_of(root), "01", "baseline")
    assert exc.value.exit_code == 65 and "Shape mismatch" in str(exc.value) and bad.name in str(exc.value)
    aff = AFFINE.copy()
    aff[0, 3] = 5.0
    _nii(bad, affine=aff)
    with pytest.raises(DataError, match="Affine mismatch"):
        qb.collect_data(layout_of(root), "01", "baseline")


def test_phase_units(tmp_path, caplog):
    root = make_dataset(tmp_path / "ds", units="arbitrary")
    assert qb.collect_data(layout_of(root), "01", "baseline")["phase_units"] == "arbitrary"
    root = make_dataset(tmp_path / "ds2", units=None)
    with caplog.at_level("WARNING", logger="qsmprep.bids"):
        d = qb.collect_data(layout_of(root), "01", "baseline")
    assert d["phase_units"] is None and "Units" in caplog.text
    root = make_dataset(tmp_path / "ds3", units="Hz")
    with pytest.raises(DataError, match="'rad' or 'arbitrary'"):
        qb.collect_data(layout_of(root), "01", "baseline")


def test_missing_t1w_warns(tmp_path, caplog):
    root = make_dataset(tmp_path / "ds", t1w=False)
    with caplog.at_level("WARNING", logger="qsmprep.bids"):
        d = qb.collect_data(layout_of(root), "01", "baseline")
    assert d["t1w"] is None and "no T1w" in caplog.text


def test_sessionless_t1w_used_for_session(tmp_path):
    root = make_dataset(tmp_path / "ds", t1w=False)
    _nii(root / "sub-01/anat/sub-01_T1w.nii.gz")
    d = qb.collect_data(layout_of(root), "01", "baseline")
    assert d["t1w"].endswith("sub-01/anat/sub-01_T1w.nii.gz")


def test_dataset_without_sessions(tmp_path):
    root = make_dataset(tmp_path / "ds", sessions=(None,))
    lay = layout_of(root)
    assert qb.collect_participants(lay) == {"01": [None]}
    d = qb.collect_data(lay, "sub-01")
    assert d["session"] is None and len(d["phase"]) == 3


# ------------------------------------------------------------------------------------------
def test_collect_participants_and_filters(tmp_path):
    root = make_dataset(tmp_path / "ds", subjects=("01", "02", "03"), sessions=("baseline", "followup"))
    lay = layout_of(root)
    assert qb.collect_participants(lay) == {s: ["baseline", "followup"] for s in ("01", "02", "03")}
    assert qb.collect_participants(lay, ["sub-02"], ["ses-followup"]) == {"02": ["followup"]}
    with pytest.raises(NoMatchingData) as exc:
        qb.collect_participants(lay, ["99"])
    assert exc.value.exit_code == 18 and "99" in str(exc.value)
    with pytest.raises(NoMatchingData) as exc:
        qb.collect_participants(lay, None, ["week5"])
    assert exc.value.exit_code == 18 and "week5" in str(exc.value)
    # a filter file selecting nothing
    with pytest.raises(NoMatchingData):
        qb.collect_participants(lay, None, None, {"megre": {"acquisition": "nonexistent"}})


def test_layout_indexes_only_requested_subjects(tmp_path):
    root = make_dataset(tmp_path / "ds", subjects=("01", "02", "10"))
    lay = qb.build_layout(root, participant_labels=["01"], validate=False)
    assert lay.get_subjects() == ["01"]
    # "1" must not select "10" or "01"
    lay = qb.build_layout(root, participant_labels=["10"], validate=False)
    assert lay.get_subjects() == ["10"]


def test_database_dir_reused_and_outside_bids(tmp_path):
    root = make_dataset(tmp_path / "ds", subjects=("01", "02"))
    db = tmp_path / "work" / "bidsdb"
    lay = qb.build_layout(root, database_dir=db, participant_labels=["01"], validate=False)
    assert (db / "layout_index.sqlite").exists()
    assert lay.get_subjects() == ["01", "02"]  # shared database indexes every subject
    lay2 = qb.build_layout(root, database_dir=db, participant_labels=["02"], validate=False)
    assert qb.collect_data(lay2, "02", "baseline")["b0"] == 3.0
    with pytest.raises(UsageError):
        qb.build_layout(root, database_dir=root / "db", validate=False)


def test_bids_filter_file_selects_run(tmp_path):
    root = make_dataset(tmp_path / "ds")
    anat = root / "sub-01/ses-baseline/anat"
    # add a second acquisition with 2 echoes
    for e in (1, 2):
        for part in ("mag", "phase"):
            _nii(anat / f"sub-01_ses-baseline_acq-fast_echo-{e}_part-{part}_MEGRE.nii.gz")
            _json(anat / f"sub-01_ses-baseline_acq-fast_echo-{e}_part-{part}_MEGRE.json",
                  {"EchoTime": 0.005 * e, "MagneticFieldStrength": 3, "Units": "rad"})
    ffile = tmp_path / "filters.json"
    ffile.write_text(json.dumps({"megre": {"acquisition": "fast"}}))
    filters = qb.load_bids_filters(ffile)
    d = qb.collect_data(layout_of(root), "01", "baseline", bids_filters=filters)
    assert len(d["phase"]) == 2 and all("acq-fast" in p for p in d["phase"])
    assert d["entities"] == {"acquisition": "fast"}
    # without the filter both runs are seen, the first is used and a warning recorded
    d = qb.collect_data(layout_of(root), "01", "baseline")
    assert len(d["runs"]) == 2 and any("GRE runs found" in w for w in d["warnings"])
    # null = entity absent (fMRIPrep convention)
    d = qb.collect_data(layout_of(root), "01", "baseline",
                        bids_filters=qb.load_bids_filters({"megre": {"acquisition": None}}))
    assert len(d["phase"]) == 3 and d["runs"] == [{}]


def test_bad_filter_files(tmp_path):
    f = tmp_path / "f.json"
    f.write_text("{not json")
    with pytest.raises(UsageError) as exc:
        qb.load_bids_filters(f)
    assert exc.value.exit_code == 64
    with pytest.raises(UsageError, match="unknown key"):
        qb.load_bids_filters({"bold": {}})
    with pytest.raises(MissingInputError):
        qb.load_bids_filters(tmp_path / "absent.json")


def make_ds000221_like(root: Path, subject="010002", session="01"):
    """Single-echo GRE named like OpenNeuro ds000221 (acq-mag_GRE / acq-phase_GRE)."""
    _json(root / "dataset_description.json", {"Name": "LEMON-like", "BIDSVersion": "1.0.2"})
    anat = root / f"sub-{subject}/ses-{session}/anat"
    stem = f"sub-{subject}_ses-{session}"
    for acq in ("mag", "phase"):
        _nii(anat / f"{stem}_acq-{acq}_GRE.nii.gz", dtype=np.int16 if acq == "phase" else np.float32)
        _json(anat / f"{stem}_acq-{acq}_GRE.json",
              {"EchoTime": 0.0249, "MagneticFieldStrength": 3, "RepetitionTime": 0.0345,
               "Manufacturer": "Siemens", "FlipAngle": 12})
    _nii(anat / f"{stem}_acq-mp2rage_T1w.nii.gz")
    return root


DS221_FILTERS = {"megre": {"suffix": "GRE", "mag": {"acquisition": "mag"},
                           "phase": {"acquisition": "phase"}}}


def test_ds000221_naming_mapping(tmp_path):
    root = make_ds000221_like(tmp_path / "ds")
    # Without a mapping: no MEGRE data, and the error points at --bids-filter-file
    with pytest.raises(MissingInputError, match="--bids-filter-file"):
        qb.collect_data(layout_of(root), "010002", "01")
    # GRE is not a BIDS suffix: the validator flags it ...
    with pytest.raises(BIDSValidationError) as exc:
        qb.validate_bids(root)
    assert "acq-phase_GRE.nii.gz" in str(exc.value) and exc.value.exit_code == 16
    # ... unless the input mapping declares those files as intended input
    filters = qb.load_bids_filters(DS221_FILTERS)
    lay = qb.build_layout(root, validate=True, bids_filters=filters)
    assert qb.collect_participants(lay, bids_filters=filters) == {"010002": ["01"]}
    d = qb.collect_data(lay, "010002", "01", bids_filters=filters)
    assert [Path(p).name for p in d["mag"]] == ["sub-010002_ses-01_acq-mag_GRE.nii.gz"]
    assert [Path(p).name for p in d["phase"]] == ["sub-010002_ses-01_acq-phase_GRE.nii.gz"]
    assert d["echo_times"] == [0.0249] and d["b0"] == 3.0
    assert d["phase_units"] is None  # no Units in ds000221 sidecars: decided from the data range
    assert d["t1w"].endswith("acq-mp2rage_T1w.nii.gz")
    assert d["entities"] == {}


def test_single_echo_t2starw_part(tmp_path):
    root = tmp_path / "ds"
    _json(root / "dataset_description.json", {"Name": "t2s", "BIDSVersion": "1.10.0"})
    anat = root / "sub-01/anat"
    for part in ("mag", "phase"):
        _nii(anat / f"sub-01_part-{part}_T2starw.nii.gz")
        _json(anat / f"sub-01_part-{part}_T2starw.json",
              {"EchoTime": 0.02, "MagneticFieldStrength": 3, "Units": "rad"})
    qb.validate_bids(root)
    lay = layout_of(root)
    assert qb.collect_participants(lay) == {"01": [None]}
    d = qb.collect_data(lay, "01")
    assert len(d["phase"]) == 1 and "part-phase_T2starw" in d["phase"][0]
    assert any("T2starw" in w for w in d["warnings"])
    # explicit mapping works too
    d = qb.collect_data(lay, "01", bids_filters={"megre": {"suffix": "T2starw"}})
    assert d["echo_times"] == [0.02]


# ------------------------------------------------------------------------------------------
def test_validator_flags_bad_name_and_respects_bidsignore(tmp_path):
    root = make_dataset(tmp_path / "ds")
    assert qb.validate_bids(root) > 0
    bad = root / "sub-01/ses-baseline/anat/sub-01_ses-baseline_echo-1_phase_GRE_notbids.nii.gz"
    _nii(bad)
    with pytest.raises(BIDSValidationError) as exc:
        qb.validate_bids(root)
    assert exc.value.exit_code == 16 and bad.name in str(exc.value)
    assert "--skip-bids-validation" in str(exc.value)
    with pytest.raises(BIDSValidationError):
        qb.build_layout(root, validate=True)
    # skipping validation (what --skip-bids-validation does) indexes fine
    assert qb.build_layout(root, validate=False).get_subjects() == ["01"]
    (root / ".bidsignore").write_text("*_notbids.nii.gz\n")
    qb.validate_bids(root)


def test_validator_requires_dataset_description(tmp_path):
    root = make_dataset(tmp_path / "ds")
    (root / "dataset_description.json").unlink()
    with pytest.raises(BIDSValidationError, match="dataset_description.json"):
        qb.validate_bids(root)


def test_derivatives_description_and_bidsignore(tmp_path, monkeypatch):
    root = make_dataset(tmp_path / "ds")
    out = tmp_path / "out"
    monkeypatch.setenv("QSMPREP_CONTAINER", "qsmprep:0.1.0")
    monkeypatch.setenv("QSMPREP_CONTAINER_TYPE", "docker")
    monkeypatch.delenv("APPTAINER_CONTAINER", raising=False)
    monkeypatch.delenv("SINGULARITY_CONTAINER", raising=False)
    qb.write_derivatives_description(out, root)
    text = (out / "dataset_description.json").read_text()
    desc = json.loads(text)
    assert desc["DatasetType"] == "derivative"
    gen = desc["GeneratedBy"][0]
    assert gen["Name"] == "qsmprep" and gen["CodeURL"].startswith("https://")
    assert gen["Container"] == {"Type": "docker", "Tag": "qsmprep:0.1.0"}
    assert desc["SourceDatasets"] == [{"URL": "bids:raw:"}]
    # the raw dataset is linked by a relative path that resolves from the output folder,
    # and no absolute path of this machine is recorded anywhere in the description
    assert desc["DatasetLinks"]["raw"] == "../ds"
    assert (out / desc["DatasetLinks"]["raw"]).resolve() == root.resolve()
    assert str(tmp_path) not in text and "file:" not in text
    # the same image run under Apptainer is recorded as such
    # a README is written once; one the user edited is kept on the next run
    assert "qsmprep" in (out / "README.md").read_text()
    (out / "README.md").write_text("my notes")
    qb.write_derivatives_description(out, root)
    assert (out / "README.md").read_text() == "my notes"
    monkeypatch.setenv("APPTAINER_CONTAINER", "/images/qsmprep.sif")
    assert qb.container_info()["Type"] == "singularity"
    monkeypatch.delenv("QSMPREP_CONTAINER")
    assert qb.container_info() is None
    qb.write_bidsignore(out, extra=["*_custom.nii.gz"])
    qb.write_bidsignore(out)
    lines = (out / ".bidsignore").read_text().splitlines()
    for patt in ("*_stats.tsv", "figures", "*.html", "/logs", "/group", "*_xfm.*", "*_custom.nii.gz"):
        assert lines.count(patt) == 1
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]


def test_atlas_description_from_atlas_sources(tmp_path):
    """atlas-<Name>_description.json carries the atlas's name, licence and every source's
    citation (the BIDS validator requires AtlasName and License)."""
    from types import SimpleNamespace

    adir = tmp_path / "atlas"
    adir.mkdir()
    (adir / "dataset_description.json").write_text(json.dumps({
        "Name": "test atlas", "License": "CC BY 4.0",
        "Sources": [{"Name": "A", "License": "CC0", "Citation": "Author A. J 2020."},
                    {"Name": "B", "Citation": "Author B. J 2021.", "File": "/abs/b.nii.gz"}]}))
    atlas = SimpleNamespace(directory=adir, name="Foo", space="MNI152NLin2009cAsym")
    (tmp_path / "out").mkdir()
    path = qb.write_atlas_description(tmp_path / "out", atlas)
    desc = json.loads(path.read_text())
    assert path.name == "atlas-Foo_description.json"
    assert desc["AtlasName"] == "Foo" and desc["License"] == "CC BY 4.0"
    assert desc["ReferencesAndLinks"] == ["Author A. J 2020.", "Author B. J 2021."]
    assert "/abs/" not in path.read_text()  # file paths of the atlas sources are not copied
