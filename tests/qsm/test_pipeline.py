"""One chain: the Nipype interfaces and the pure ``reconstruct`` call the same step functions."""

import logging

import nibabel as nb
import numpy as np
import pytest

from qsmprep.qsm import methods, pipeline
from qsmprep.qsm.pipeline import QSMOptions, reconstruct
from tests._qsm_helpers import make_head

#: the default chain, and one through the other masking/combination/unwrapping methods with CSF
#: referencing from R2* (the method whose record ``needs`` a reference mask)
CHAINS = {
    "default": QSMOptions(),
    "other": QSMOptions(masking="magnitude", combination="linear", unwrapping="laplacian",
                        bf_removal="pdf", inversion="tkd", reference="csf",
                        method_options={"relaxometry": {"field_correction": "sinc"}}),
}


@pytest.fixture(scope="module")
def head():
    h = make_head(shape=(44, 48, 40), seed=1)
    h["affine"] = np.diag(list(h["voxel_size"]) + [1.0])
    return h


@pytest.fixture(scope="module")
def session():
    """The simulator's small head (3 mm, 6 echoes; it has ventricles for CSF referencing)."""
    from qsmprep.simulate import simulate_session

    d = simulate_session(preset="small", seed=3)
    return {"mag": d.mag.astype(np.float32), "phase": d.phase.astype(np.float32), "tes": d.tes,
            "affine": d.affine, "b0": float(d.b0)}


def _interface_chain(h, options, tmp_path):
    """Run the step interfaces one after the other, as init_qsm_wf wires them."""
    from qsmprep.interfaces.qsm import (
        BackgroundRemoval,
        BrainMask,
        DipoleInversion,
        R2StarMap,
        ReferenceChi,
        TotalField,
    )

    mag_file, phase_file = str(tmp_path / "mag4d.nii"), str(tmp_path / "phase4d.nii")
    nb.Nifti1Image(h["mag"], h["affine"]).to_filename(mag_file)
    nb.Nifti1Image(h["phase"], h["affine"]).to_filename(phase_file)
    tes = [float(t) for t in h["tes"]]

    def run(iface, name):
        cwd = tmp_path / name
        cwd.mkdir()
        return iface.run(cwd=str(cwd)).outputs

    mask = run(BrainMask(mag_file=mag_file, phase_file=phase_file, echo_times=tes,
                         method=options.masking), "mask")
    field = run(TotalField(mag_file=mag_file, phase_file=phase_file, mask_file=mask.mask_file,
                           echo_times=tes, b0=h["b0"], combination=options.combination,
                           unwrapping=options.unwrapping), "field")
    bfr = run(BackgroundRemoval(field_file=field.field_file, mask_file=mask.mask_file,
                                reliability_file=field.reliability_file,
                                method=options.bf_removal), "bfr")
    inv = run(DipoleInversion(local_file=bfr.local_file, mask_file=bfr.mask_file,
                              reliability_file=field.reliability_file, mag_file=mag_file,
                              noise_file=field.noise_file, method=options.inversion), "inv")
    ref = run(ReferenceChi(chi_file=inv.chi_file, mask_file=bfr.mask_file, mag_file=mag_file,
                           echo_times=tes, method=options.reference), "ref")

    r2s = run(R2StarMap(mag_file=mag_file, mask_file=mask.mask_file, echo_times=tes,
                        field_file=field.field_file, b0=h["b0"],
                        method_options=options.method_options.get("relaxometry", {})), "r2s")

    def arr(f):
        return np.asarray(nb.load(f).dataobj)

    prov = pipeline.merge_provenance([mask.provenance, field.provenance, bfr.provenance,
                                      inv.provenance, ref.provenance])
    return {"mask": arr(mask.mask_file) > 0, "field_ppm": arr(field.field_file),
            "reliability": arr(field.reliability_file), "local_ppm": arr(bfr.local_file),
            "eroded_mask": arr(bfr.mask_file) > 0, "chi_unreferenced": arr(inv.chi_file),
            "chi": arr(ref.chi_file), "provenance": prov, "r2star": arr(r2s.r2star_file),
            "t2star": arr(r2s.t2star_file), "r2star_provenance": r2s.provenance}


@pytest.mark.parametrize("chain", list(CHAINS))
def test_interfaces_and_reconstruct_give_identical_maps(session, tmp_path, chain):
    """Same data through ``reconstruct`` and through the interfaces (files between steps):
    every intermediate array and the sidecar provenance are identical. Fails when the glue of
    one path changes without the other (before the step functions were shared, the interfaces
    alone dropped non-finite voxels, replaced a missing reliability by the mask and built the
    provenance)."""
    options = CHAINS[chain]
    pure = reconstruct(session["mag"], session["phase"], session["tes"], session["b0"],
                       session["affine"], options)
    files = _interface_chain(session, options, tmp_path)
    for key in ("mask", "field_ppm", "reliability", "local_ppm", "eroded_mask",
                "chi_unreferenced", "chi", "r2star", "t2star"):
        assert files[key].shape == pure[key].shape, key
        assert np.array_equal(files[key], pure[key]), key
    assert files["provenance"] == pure["provenance"]
    assert files["r2star_provenance"] == pure["r2star_provenance"]
    fc = pure["r2star_provenance"]["Parameters"]["field_correction"]
    assert fc == options.method_options.get("relaxometry", {}).get("field_correction", "none")
    assert pure["provenance"]["BrainMask"]["Method"] == options.masking
    # the map explains its field to within a few noise SDs (default 3.2; Laplacian unwrapping
    # and TKD 8.9): recorded, not flagged
    residual = pure["provenance"]["DipoleInversion"]["FieldResidual"]["RMSOverNoise"]
    assert 0.3 < residual < (5.0 if chain == "default" else 10.0)
    assert not any(f["step"] == "dipole_inversion"
                   for f in pure["provenance"].get("QualityFlags", []))


def test_masking_provenance_lists_the_real_parameters(head):
    """The Chimap sidecar's BrainMask Parameters name the options that ran with their values
    (fails on the former code: the registry held ``**opts`` adapters, so introspection gave
    ``{}``); a given option overrides its default."""
    vs = head["voxel_size"]
    _, prov = pipeline.run_masking(head["mag"], head["phase"], head["tes"], vs, "magnitude",
                                   erode_radius_mm=6.0)
    params = prov["BrainMask"]["Parameters"]
    assert params == {**methods.get("masking", "magnitude").parameters, "erode_radius_mm": 6.0}
    assert params["threshold_factor"] == 1.0 and params["fill"] is True


def test_user_mask_and_excluded_voxels(head):
    """A supplied mask replaces the method (``Method: user``) and excluded voxels leave it,
    counted in the provenance (fails if either path ignores ``user_mask`` or ``exclude``)."""
    user = head["brain"].astype(np.uint8)
    exclude = np.zeros_like(head["brain"])
    idx = tuple(np.argwhere(head["brain"])[0])
    exclude[idx] = True
    mask, prov = pipeline.run_masking(head["mag"], None, head["tes"], head["voxel_size"],
                                      "phase-quality", user_mask=user, exclude=exclude)
    assert prov["BrainMask"]["Method"] == "user" and prov["BrainMask"]["Parameters"] == {}
    assert prov["BrainMask"]["NonFiniteVoxelsExcluded"] == 1
    assert mask.dtype == bool and not mask[idx] and mask.sum() == head["brain"].sum() - 1


def test_unknown_method_names_the_step_and_choices():
    """The error a bad name gives (reconstruct and interfaces alike) lists the choices."""
    with pytest.raises(ValueError, match=r"Unknown dipole inversion method 'nope'; choose one of"):
        pipeline.call_method("inversion", "nope")


def test_unknown_method_option_is_an_error_not_dropped():
    """A misspelt method option must not run the default silently (while the sidecar records
    the option): the error names the option, the method and its options. Inputs of the
    step's calling convention that a method does not use are still dropped."""
    field = np.zeros((8, 8, 8), np.float32)
    mask = np.zeros((8, 8, 8), bool)
    mask[2:6, 2:6, 2:6] = True
    with pytest.raises(ValueError, match=r"Unknown option\(s\) 'n_iters' for the dipole inversion "
                                         r"method 'medi'; its options are .*n_iter"):
        pipeline.run_inversion(field, mask, (1, 1, 1), (0, 0, 1), "medi", n_iters=5)
    with pytest.raises(ValueError, match=r"'max_iters' for the background field removal method "
                                         r"'pdf'"):
        pipeline.run_background_removal(field, mask, (1, 1, 1), (0, 0, 1), "pdf", max_iters=3)
    # tkd takes neither the magnitude nor the convergence record: dropped, not an error
    chi, prov = pipeline.run_inversion(field, mask, (1, 1, 1), (0, 0, 1), "tkd",
                                       mag=np.ones((8, 8, 8, 2), np.float32), threshold=0.2)
    assert prov["DipoleInversion"]["Parameters"]["threshold"] == 0.2 and not chi.any()


def test_csf_reference_needs_a_mask_or_multi_echo_magnitude():
    """CSF referencing without a CSF mask or >= 2 echoes is refused (one place decides)."""
    chi = np.zeros((4, 4, 4), np.float32)
    mask = np.ones((4, 4, 4), bool)
    with pytest.raises(ValueError, match="CSF referencing needs"):
        pipeline.run_referencing(chi, mask, "csf")
    # a lazily loaded magnitude is not loaded for a method that does not need it
    def boom():
        raise AssertionError("magnitude loaded for 'mean' referencing")

    out, prov = pipeline.run_referencing(chi + 1, mask, "mean", mag=boom)
    assert np.allclose(out, 0) and prov["Reference"]["reference"] == "whole_brain_mean"


def test_convergence_warning_logged_once_with_label(head, caplog):
    """A solver stopped at its cap logs one WARNING carrying the session label (interfaces pass
    it; reconstruct logs without)."""
    local = np.zeros(head["brain"].shape, np.float32)
    local[head["brain"]] = 0.01
    with caplog.at_level(logging.WARNING, logger="qsmprep.qsm.pipeline"):
        _, prov = pipeline.run_inversion(local, head["brain"], head["voxel_size"], (0, 0, 1), "cg",
                                         log_label="sub-01", max_iter=1, tol=0.0)
    assert prov["DipoleInversion"]["Converged"] is False and prov["QualityFlags"]
    assert [r.getMessage()[:32] for r in caplog.records] == ["sub-01 dipole inversion (cg): cg"]


def test_medi_budget_logged_at_info_not_flagged(head, caplog):
    """MEDI stopping at its iteration budget with the map settled (how every default run ends):
    recorded in the provenance, logged at INFO, no QualityFlags and no WARNING."""
    local = np.zeros(head["brain"].shape, np.float32)
    local[head["brain"]] = 0.01
    local[tuple(s // 2 for s in local.shape)] = 0.05
    with caplog.at_level(logging.INFO, logger="qsmprep.qsm.pipeline"):
        _, prov = pipeline.run_inversion(local, head["brain"], head["voxel_size"], (0, 0, 1),
                                         "medi", mag=np.ones_like(local), log_label="sub-01",
                                         n_iter=20, tol=1e-9)
    rec = prov["DipoleInversion"]
    assert rec["Converged"] is False and rec["StoppedBy"] == "iteration cap"
    assert rec["FinalRelativeChange"] <= 0.05 and "QualityFlags" not in prov
    assert [r.levelname for r in caplog.records] == ["INFO"]
    assert "sub-01 dipole inversion (medi): stopped at its iteration budget" in caplog.text
