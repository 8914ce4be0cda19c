"""Real/imaginary MEGRE input (``part-real``/``part-imag``) equals the magnitude/phase path.

Real data: ROMEO.jl's 3-echo brain crop (``shared/data/romeo-small-megre/small``, MIT). Its
header carries ``scl_slope = 1/855``: the header-scaled phase is +-0.0037 while the stored values
are -pi..pi (the "header scaling trap"). The test writes the same echoes twice into tmp BIDS
datasets: once as they are (magnitude + phase, header kept, so the loader must see through the
scaling) and once converted to real/imaginary parts, ``mag * exp(i * phase)`` with the phase
taken from the *stored* values. Both go through ``collect_data`` and the ``LoadGRE`` /
``BrainMask`` / ``TotalField`` interfaces; the results must agree.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest

from qsmprep import bids as qb
from qsmprep import preflight
from qsmprep.qsm.phase import complex_to_mag_phase
from tests._paths import SHARED_DATA

TES = [0.004, 0.008, 0.012]  # test parameters of the upstream data (not stored in the files)


def _data_dir():
    """``../shared/data`` from the repository root (``QSMPREP_SHARED_DATA`` overrides)."""
    return SHARED_DATA / "romeo-small-megre" / "small"


SMALL = _data_dir()


def test_complex_to_mag_phase_round_trip():
    rng = np.random.default_rng(1)
    mag = rng.uniform(0.1, 2.0, (5, 6, 7)).astype(np.float32)
    phase = rng.uniform(-np.pi, np.pi, (5, 6, 7)).astype(np.float32)
    re, im = mag * np.cos(phase), mag * np.sin(phase)
    re[0, 0, 0] = np.nan
    m, p = complex_to_mag_phase(re, im)
    assert m.dtype == np.float32 and p.dtype == np.float32
    assert m[0, 0, 0] == 0 and p[0, 0, 0] == 0
    ok = np.ones(mag.shape, bool)
    ok[0, 0, 0] = False
    np.testing.assert_allclose(m[ok], mag[ok], rtol=1e-5)
    assert np.abs(np.angle(np.exp(1j * (p[ok] - phase[ok])))).max() < 1e-5
    assert p.min() >= -np.pi and p.max() < np.pi
    with pytest.raises(ValueError, match="shape"):
        complex_to_mag_phase(re, im[:-1])


def _write_dataset(root: Path, echoes: dict, units):
    """``echoes``: {part: [(data, scl_slope or None, affine) per echo]}."""
    (root).mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "romeo", "BIDSVersion": "1.10.0"}))
    anat = root / "sub-01" / "anat"
    anat.mkdir(parents=True)
    for part, vols in echoes.items():
        for e, (data, slope, affine) in enumerate(vols, start=1):
            stem = anat / f"sub-01_echo-{e}_part-{part}_MEGRE"
            nb.Nifti1Image(data, affine).to_filename(str(stem) + ".nii")
            if slope is not None:  # keep the stored values and the scl_slope (the trap): nibabel
                with open(str(stem) + ".nii", "r+b") as fh:  # resets it for float data, so patch
                    fh.seek(112)  # scl_slope / scl_inter (header bytes 112-119)
                    fh.write(np.array([slope, 0.0], dtype="<f4").tobytes())
            meta = {"EchoTime": TES[e - 1], "MagneticFieldStrength": 3.0}
            if part == "phase" and units:
                meta["Units"] = units
            Path(str(stem) + ".json").write_text(json.dumps(meta))
    return root


@pytest.mark.realdata
@pytest.mark.skipif(not (SMALL / "Phase.nii").exists(),
                    reason=f"real data not found at {SMALL} (../shared/data from the repo root)")
def test_real_imag_equals_mag_phase_on_romeo(tmp_path):
    from qsmprep.interfaces.qsm import BrainMask, LoadGRE, TotalField
    from qsmprep.qsm import echoes as echo_methods
    from qsmprep.qsm import masking, unwrap

    pimg, mimg = nb.load(SMALL / "Phase.nii"), nb.load(SMALL / "Mag.nii")
    assert abs(pimg.dataobj.slope - 1 / 855) < 1e-6  # the trap is there
    p_stored = np.asarray(pimg.dataobj.get_unscaled(), dtype=np.float32)
    m_stored = np.asarray(mimg.dataobj.get_unscaled(), dtype=np.float32)
    m_scaled = np.asarray(mimg.get_fdata(), dtype=np.float32)  # what the loader reads
    assert np.abs(pimg.get_fdata()).max() < 0.01 < np.abs(p_stored).max()

    magphase = _write_dataset(tmp_path / "magphase", {
        "mag": [(m_stored[..., k], mimg.dataobj.slope, mimg.affine) for k in range(3)],
        "phase": [(p_stored[..., k], pimg.dataobj.slope, pimg.affine) for k in range(3)],
    }, units="rad")
    z = m_scaled * np.exp(1j * p_stored.astype(np.float64))
    realimag = _write_dataset(tmp_path / "realimag", {
        "real": [(z.real[..., k].astype(np.float32), None, pimg.affine) for k in range(3)],
        "imag": [(z.imag[..., k].astype(np.float32), None, pimg.affine) for k in range(3)],
    }, units=None)

    results = {}
    for name, root in (("magphase", magphase), ("realimag", realimag)):
        d = qb.collect_data(qb.build_layout(root, validate=True), "01", None)
        assert d["parts"] == ("real-imag" if name == "realimag" else "mag-phase")
        # the pre-flight pass reads the stored phase as the loader does: no false "not radians"
        assert preflight.check_session(d)["nonfinite"] == {}
        cwd = tmp_path / f"work_{name}"
        cwd.mkdir()
        load = LoadGRE(mag_files=d["mag"], phase_files=d["phase"], phase_units=d["phase_units"] or "",
                       parts=d["parts"]).run(cwd=str(cwd))
        mask = BrainMask(mag_file=load.outputs.mag_file, phase_file=load.outputs.phase_file,
                         echo_times=d["echo_times"], method=masking.DEFAULT).run(cwd=str(cwd))
        field = TotalField(mag_file=load.outputs.mag_file, phase_file=load.outputs.phase_file,
                           mask_file=mask.outputs.mask_file, echo_times=d["echo_times"], b0=d["b0"],
                           combination=echo_methods.DEFAULT, unwrapping=unwrap.DEFAULT).run(cwd=str(cwd))
        results[name] = {
            "mag": nb.load(load.outputs.mag_file).get_fdata(),
            "phase": nb.load(load.outputs.phase_file).get_fdata(),
            "mask": nb.load(mask.outputs.mask_file).get_fdata() > 0,
            "field": nb.load(field.outputs.field_file).get_fdata(),
            "prov": load.outputs.provenance,
        }
    a, b = results["magphase"], results["realimag"]
    # the mag/phase path saw through the header scaling: phase spans ~2 pi
    assert a["phase"].max() - a["phase"].min() > 6.0
    assert "header scaling ignored" in a["prov"]["PhaseScaling"][0]["header_scaling"]
    assert b["prov"]["InputParts"] == "real-imag"
    np.testing.assert_allclose(b["mag"], a["mag"], rtol=1e-5, atol=1e-9)
    assert np.abs(np.angle(np.exp(1j * (b["phase"] - a["phase"])))).max() < 1e-4
    assert a["mask"].sum() > 0.5 * a["mask"].size
    assert np.array_equal(a["mask"], b["mask"])
    diff = np.abs(a["field"] - b["field"])[a["mask"]]
    scale = np.abs(a["field"][a["mask"]]).max()
    print(f"real/imag vs mag/phase: max |field diff| = {diff.max():.3g} ppm (field max {scale:.3g} ppm)")
    assert diff.max() < 1e-3 * scale
