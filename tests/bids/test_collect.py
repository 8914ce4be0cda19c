"""qsmprep.bids.collect: participant selection and the checked inputs of one session."""

import json
from pathlib import Path

import pytest

from qsmprep import bids as qb
from qsmprep.errors import BIDSValidationError, DataError, MissingInputError, NoMatchingData
from tests._bids_helpers import nii, write_json, make_dataset, layout_of, make_ds000221_like, DS221_FILTERS


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
    # nothing written into the input dataset
    assert not list(root.rglob("*.sqlite")) and not list(root.rglob("*.db"))


def test_echo_sorted_numerically(tmp_path):
    echoes = (1, 2, 10)
    root = make_dataset(tmp_path / "ds", echoes=echoes, tes={1: 0.003, 2: 0.006, 10: 0.030})
    d = qb.collect_data(layout_of(root), "01", "baseline")
    assert "echo-10" in Path(d["phase"][-1]).name and "echo-10" in Path(d["mag"][-1]).name
    assert d["echo_times"] == pytest.approx([0.003, 0.006, 0.030])


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


def test_missing_t1w_warns(tmp_path, caplog):
    root = make_dataset(tmp_path / "ds", t1w=False)
    with caplog.at_level("WARNING", logger="qsmprep.bids"):
        d = qb.collect_data(layout_of(root), "01", "baseline")
    assert d["t1w"] is None and "no T1w" in caplog.text


def test_sessionless_t1w_used_for_session(tmp_path):
    root = make_dataset(tmp_path / "ds", t1w=False)
    nii(root / "sub-01/anat/sub-01_T1w.nii.gz")
    d = qb.collect_data(layout_of(root), "01", "baseline")
    assert d["t1w"].endswith("sub-01/anat/sub-01_T1w.nii.gz")


def test_dataset_without_sessions(tmp_path):
    root = make_dataset(tmp_path / "ds", sessions=(None,))
    lay = layout_of(root)
    assert qb.collect_participants(lay) == {"01": [None]}
    d = qb.collect_data(lay, "sub-01")
    assert d["session"] is None and len(d["phase"]) == 3


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


def test_bids_filter_file_selects_run(tmp_path):
    root = make_dataset(tmp_path / "ds")
    anat = root / "sub-01/ses-baseline/anat"
    # add a second acquisition with 2 echoes
    for e in (1, 2):
        for part in ("mag", "phase"):
            nii(anat / f"sub-01_ses-baseline_acq-fast_echo-{e}_part-{part}_MEGRE.nii.gz")
            write_json(anat / f"sub-01_ses-baseline_acq-fast_echo-{e}_part-{part}_MEGRE.json",
                  {"EchoTime": 0.005 * e, "MagneticFieldStrength": 3, "Units": "rad"})
    ffile = tmp_path / "filters.json"
    ffile.write_text(json.dumps({"megre": {"acquisition": "fast"}}))
    filters = qb.load_bids_filters(ffile)
    d = qb.collect_data(layout_of(root), "01", "baseline", bids_filters=filters)
    assert len(d["phase"]) == 2 and all("acq-fast" in p for p in d["phase"])
    assert not any("GRE runs found" in w for w in d["warnings"])
    # without the filter both runs are seen, the first is used and a warning recorded
    d = qb.collect_data(layout_of(root), "01", "baseline")
    assert any("2 GRE runs found" in w for w in d["warnings"])
    assert len(d["phase"]) == 3 and not any("acq-fast" in p for p in d["phase"])  # the first run
    # null = entity absent (fMRIPrep convention)
    d = qb.collect_data(layout_of(root), "01", "baseline",
                        bids_filters=qb.load_bids_filters({"megre": {"acquisition": None}}))
    assert len(d["phase"]) == 3 and not any("GRE runs found" in w for w in d["warnings"])


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


def test_single_echo_t2starw_part(tmp_path):
    root = tmp_path / "ds"
    write_json(root / "dataset_description.json", {"Name": "t2s", "BIDSVersion": "1.10.0"})
    anat = root / "sub-01/anat"
    for part in ("mag", "phase"):
        nii(anat / f"sub-01_part-{part}_T2starw.nii.gz")
        write_json(anat / f"sub-01_part-{part}_T2starw.json",
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
