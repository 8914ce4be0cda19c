"""qsmprep.bids.layout: schema validation and the pybids layout."""

import pytest

from qsmprep import bids as qb
from qsmprep.errors import BIDSValidationError, UsageError
from tests._bids_helpers import nii, make_dataset


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


def test_validator_flags_bad_name_and_respects_bidsignore(tmp_path):
    root = make_dataset(tmp_path / "ds")
    assert qb.validate_bids(root) > 0
    bad = root / "sub-01/ses-baseline/anat/sub-01_ses-baseline_echo-1_phase_GRE_notbids.nii.gz"
    nii(bad)
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
