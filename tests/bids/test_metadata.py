"""qsmprep.bids.metadata: echo times, field strength, phase units and grid checks."""

import pytest

from qsmprep import bids as qb
from qsmprep.errors import DataError
from tests._bids_helpers import AFFINE, nii, write_json, make_dataset, layout_of


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
    write_json(sidecar, {"MagneticFieldStrength": 3, "Units": "rad"})
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


def test_shape_and_affine_mismatch(tmp_path):
    root = make_dataset(tmp_path / "ds")
    bad = root / "sub-01/ses-baseline/anat/sub-01_ses-baseline_echo-2_part-phase_MEGRE.nii.gz"
    nii(bad, shape=(4, 4, 5))
    with pytest.raises(DataError) as exc:
        qb.collect_data(layout_of(root), "01", "baseline")
    assert exc.value.exit_code == 65 and "Shape mismatch" in str(exc.value) and bad.name in str(exc.value)
    aff = AFFINE.copy()
    aff[0, 3] = 5.0
    nii(bad, affine=aff)
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
