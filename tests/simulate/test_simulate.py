"""Simulator: determinism, physics consistency, planted effects, BIDS output and truth files."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from qsmprep.qsm import kernels
from qsmprep.simulate import (SimulationConfig, assign_groups, make_subject, roi_table,
                              simulate_session, wrap_phase)
from qsmprep.simulate.cli import main as simulate_main
from qsmprep.simulate.phantom import build_head_model

NOISE_FREE = SimulationConfig(snr=np.inf)


@pytest.fixture(scope="module")
def model():
    return build_head_model(2.0)


@pytest.fixture(scope="module")
def session_hc(model):
    return simulate_session(1, 0, preset="small", seed=3, config=NOISE_FREE, group="HC",
                            model=model)


def test_same_seed_gives_identical_arrays(model, session_hc):
    again = simulate_session(1, 0, preset="small", seed=3, config=NOISE_FREE, group="HC",
                             model=model)
    for name in ("chi_head", "labels", "mag", "phase", "t1w", "t1w_labels", "phase0"):
        np.testing.assert_array_equal(getattr(again, name), getattr(session_hc, name), name)
    # another seed gives another anatomy warp
    other = make_subject(1, "HC", 4, NOISE_FREE, model)
    assert not np.allclose(other.warp.disp, session_hc.subject.warp.disp)


def test_forward_field_of_truth_matches_noise_free_phase(session_hc):
    d = session_hc
    cfg = NOISE_FREE
    field = kernels.forward_field(d.chi_head.astype(np.float64) - cfg.chi_ppm["air"],
                                  d.voxel_size, d.b0_dir, pad=d.pad_vox)
    f_hz = kernels.ppm_to_hz(field, d.b0)
    brain = d.brain_mask
    for e, te in enumerate(d.tes):
        resid = wrap_phase(d.phase[..., e] - d.phase0 - 2 * np.pi * f_hz * te)
        assert np.abs(resid[brain]).max() < 1e-3, e
    # a real background field exists: the field of the brain alone is much smaller than the
    # total field inside the brain (skull, scalp and air sinus dominate)
    assert np.ptp(f_hz[brain]) > 50.0
    local = kernels.forward_field(d.chi.astype(np.float64), d.voxel_size, d.b0_dir,
                                  pad=d.pad_vox)
    assert np.std(field[brain]) > 10 * np.std(local[brain])


def test_signal_model(session_hc):
    d = session_hc
    assert d.mag.shape == d.phase.shape == d.labels.shape + (6,)
    assert d.tes[0] == pytest.approx(0.004) and np.all(np.diff(d.tes) > 0)
    assert d.phase.min() >= -np.pi and d.phase.max() < np.pi
    brain = d.brain_mask
    # T2* decay: magnitude decreases with echo time in tissue; pallidum decays faster than WM
    assert np.all(d.mag[brain].mean(0)[1:] < d.mag[brain].mean(0)[:-1])
    gp, wm = d.labels == 5, (d.chi_head == d.chi_head) & brain & (d.labels == 0)
    ratio_gp = d.mag[..., -1][gp].mean() / d.mag[..., 0][gp].mean()
    ratio_wm = d.mag[..., -1][wm].mean() / d.mag[..., 0][wm].mean()
    assert ratio_gp < ratio_wm
    # GRE and T1w grids differ (voxel size and orientation)
    assert not np.allclose(d.affine, d.t1w_affine)
    assert d.t1w.shape != d.mag.shape[:3]


def test_planted_effects_repeat_mode_and_noise(model):
    """Group effects (same anatomy, other group), repeat mode with a planted change, SNR."""
    cfg = SimulationConfig(snr=50.0)
    rep = cfg.with_(repeat=True, changes_ppb={"thalamus": 10.0})
    hc = make_subject(5, "HC", 0, rep, model)
    ms = make_subject(5, "MS", 0, rep, model)  # same anatomy and random effects, other group
    d_hc0 = simulate_session(hc, 0, preset="small", seed=0, config=rep, model=model)
    d_hc1 = simulate_session(hc, 1, preset="small", seed=0, config=rep, model=model)
    d_ms0 = simulate_session(ms, 0, preset="small", seed=0, config=rep, model=model)

    def means(d):
        t = roi_table(d.chi, d.labels, d.label_table, d.voxel_size)
        return t.groupby("structure")["mean_ppb"].mean()

    diff = means(d_ms0) - means(d_hc0)
    for st, eff in cfg.group_effects_ppb.items():
        assert diff[st] == pytest.approx(eff, abs=1e-3), st
    assert diff["putamen"] == pytest.approx(0.0, abs=1e-3)  # the null structure
    # repeat sessions: same susceptibility except the planted change; other motion and noise
    assert not np.allclose(d_hc0.motion.matrix(), d_hc1.motion.matrix())
    change = means(d_hc1) - means(d_hc0)
    assert change["thalamus"] == pytest.approx(10.0, abs=2.0)
    for st in ("caudate", "putamen", "pallidum"):
        assert abs(change[st]) < 2.0, st
    # Rayleigh background: mean = sigma * sqrt(pi / 2)
    air = d_hc0.mag_clean[..., 0] == 0
    sigma_est = d_hc0.mag[..., 0][air].mean() / np.sqrt(np.pi / 2)
    assert sigma_est == pytest.approx(d_hc0.noise_sigma, rel=0.05)
    wm = d_hc0.mag_clean[..., 0][d_hc0.brain_mask & (d_hc0.labels == 0)]
    assert np.median(wm) / d_hc0.noise_sigma > 30


def test_time_effects_in_planted_values():
    from qsmprep.simulate.core import Subject, structure_values_ppm

    cfg = SimulationConfig()
    sts = ["caudate", "putamen", "pallidum", "thalamus"]
    changes = {st: [] for st in sts}
    for i in range(1, 41):
        for grp in ("HC", "MS"):
            subj = Subject(index=i, group=grp, warp=None, texture=None, texture_affine=None,
                           random_effects_ppb={st: 0.0 for st in sts})
            b, f = (structure_values_ppm(subj, s, cfg, sts, 0) for s in (0, 1))
            for st in sts:
                changes[st].append((f[st] - b[st]) * 1e3)
    assert np.mean(changes["caudate"]) == pytest.approx(6.0, abs=1.0)
    assert np.mean(changes["putamen"]) == pytest.approx(0.0, abs=1.0)
    assert np.std(changes["putamen"]) == pytest.approx(cfg.within_subject_sd_ppb, rel=0.3)


def test_assign_groups():
    assert assign_groups(2) == ["HC", "MS"]
    g = assign_groups(18, n_ms=12)
    assert g.count("MS") == 12 and g.count("HC") == 6
    with pytest.raises(ValueError):
        assign_groups(2, n_ms=3)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim") / "bids"
    assert simulate_main([str(root), "--subjects", "2", "--sessions", "2", "--seed", "2"]) == 0
    return root


def test_bids_layout_and_sidecars(cohort):
    root = cohort
    desc = json.loads((root / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "raw" and "BIDSVersion" in desc
    parts = pd.read_csv(root / "participants.tsv", sep="\t")
    assert parts.columns.tolist() == ["participant_id", "group", "age", "sex"]
    assert parts["participant_id"].tolist() == ["sub-01", "sub-02"]
    assert set(parts["group"]) == {"HC", "MS"}
    for sub in ("01", "02"):
        for ses in ("baseline", "followup"):
            anat = root / f"sub-{sub}" / f"ses-{ses}" / "anat"
            base = f"sub-{sub}_ses-{ses}"
            assert (anat / f"{base}_T1w.nii.gz").is_file()
            tes = []
            for e in range(1, 7):
                for part in ("mag", "phase"):
                    f = anat / f"{base}_echo-{e}_part-{part}_MEGRE.nii.gz"
                    assert f.is_file(), f
                    meta = json.loads(f.with_name(f.name.replace(".nii.gz", ".json")).read_text())
                    assert meta["MagneticFieldStrength"] == 3.0
                    if part == "phase":
                        assert meta["Units"] == "rad"
                        tes.append(meta["EchoTime"])
            assert tes == pytest.approx([0.004, 0.008, 0.012, 0.016, 0.02, 0.024])
    ph = nib.load(root / "sub-01/ses-baseline/anat/sub-01_ses-baseline_echo-2_part-phase_MEGRE.nii.gz")
    data = np.asarray(ph.dataobj)
    assert data.dtype == np.float32 and data.min() >= -np.pi and data.max() < np.pi
    try:
        from bids_validator import BIDSValidator
    except ImportError:  # pragma: no cover
        return
    v = BIDSValidator()
    for f in sorted(root.rglob("sub-*/ses-*/anat/*")):
        assert v.is_bids("/" + str(f.relative_to(root))), f


def test_truth_tables_consistent_with_truth_images(cohort):
    troot = cohort / "derivatives" / "qsmprep-truth"
    assert json.loads((troot / "dataset_description.json").read_text())["DatasetType"] == "derivative"
    planted = pd.read_csv(troot / "planted.tsv", sep="\t")
    for ses in ("baseline", "followup"):
        anat = troot / "sub-02" / f"ses-{ses}" / "anat"
        base = f"sub-02_ses-{ses}"
        chi_img = nib.load(anat / f"{base}_desc-truth_Chimap.nii.gz")
        chi = np.asarray(chi_img.dataobj)
        lab = np.asarray(nib.load(anat / f"{base}_desc-truth_dseg.nii.gz").dataobj)
        stats = pd.read_csv(anat / f"{base}_desc-truth_stats.tsv", sep="\t")
        assert stats.columns.tolist() == ["index", "name", "structure", "hemisphere", "mean_ppb",
                                          "median_ppb", "sd_ppb", "n_voxels", "volume_mm3"]
        vox = np.prod(chi_img.header.get_zooms()[:3])
        for row in stats.itertuples():
            sel = lab == row.index
            assert row.n_voxels == sel.sum() > 0
            assert row.mean_ppb == pytest.approx(chi[sel].mean() * 1000, abs=1e-3)
            assert row.volume_mm3 == pytest.approx(sel.sum() * vox)
            # the per-label truth is the planted value plus the small texture average
            p = planted[(planted["participant_id"] == "sub-02")
                        & (planted["session_id"] == f"ses-{ses}")
                        & (planted["structure"] == row.structure)]["chi_ppb"].item()
            assert row.mean_ppb == pytest.approx(p, abs=3.0), row.name
        motion = json.loads((anat / f"{base}_desc-truth_motion.json").read_text())
        assert np.allclose(motion["GREAffine"], chi_img.affine)
    xfm = json.loads((troot / "sub-01" / "sub-01_desc-truth_xfm.json").read_text())
    assert 1.0 < xfm["rms_displacement_mm"] < 5.0
    assert (troot / "sub-01" / "sub-01_desc-truthwarp_xfm.nii.gz").is_file()


def test_cli_integer_phase_oblique(tmp_path):
    out = tmp_path / "sim"
    rc = simulate_main([str(out), "--subjects", "1", "--sessions", "2", "--seed", "5",
                        "--integer-phase", "--oblique", "--repeat", "--no-effects",
                        "--change", "thalamus=10"])
    assert rc == 0
    planted = pd.read_csv(out / "derivatives/qsmprep-truth/planted.tsv", sep="\t")
    wide = planted.pivot(index="structure", columns="session_id", values="chi_ppb")
    change = wide["ses-followup"] - wide["ses-baseline"]
    assert change["thalamus"] == pytest.approx(10.0, abs=1e-3)
    assert change["caudate"] == pytest.approx(0.0, abs=1e-3)
    anat = out / "sub-01" / "ses-baseline" / "anat"
    ph = nib.load(anat / "sub-01_ses-baseline_echo-3_part-phase_MEGRE.nii.gz")
    data = np.asarray(ph.dataobj)
    assert data.dtype == np.int16 and data.min() >= -4096 and data.max() <= 4095
    assert data.max() - data.min() > 7000
    meta = json.loads((anat / "sub-01_ses-baseline_echo-3_part-phase_MEGRE.json").read_text())
    assert meta["Units"] == "arbitrary"
    b0 = kernels.b0_direction_from_affine(ph.affine)
    assert np.degrees(np.arccos(abs(b0[2]))) == pytest.approx(15.0, abs=0.01)
    assert simulate_main([str(out), "--subjects", "1"]) == 73  # refuses a non-empty folder


def test_truth_transform_maps_labels_to_atlas(cohort):
    """Scanner -> template transform from the truth files sends each truth label to the same
    atlas label (up to the 2 mm model resampling and nearest-neighbour edges)."""
    from qsmprep.atlas import load_atlas
    from qsmprep.simulate import load_truth_transform

    troot = cohort / "derivatives" / "qsmprep-truth"
    atlas = load_atlas(None)
    aimg = nib.load(atlas.dseg)
    alab = np.asarray(aimg.dataobj)
    for ses in ("baseline", "followup"):
        f = load_truth_transform(troot, "01", ses)
        limg = nib.load(troot / f"sub-01/ses-{ses}/anat/sub-01_ses-{ses}_desc-truth_dseg.nii.gz")
        lab = np.asarray(limg.dataobj)
        ijk = np.argwhere(lab > 0)
        q = f(nib.affines.apply_affine(limg.affine, ijk))
        a_ijk = np.rint(nib.affines.apply_affine(np.linalg.inv(aimg.affine), q)).astype(int)
        got = alab[tuple(a_ijk.T)]
        agree = np.mean(got == lab[tuple(ijk.T)])
        assert agree > 0.85, (ses, agree)


def test_every_atlas_structure_has_simulated_tissue_properties():
    """A structure added to qsmprep.atlas.DGM_LABELS needs susceptibility, T2* and proton
    density in the simulator (else it would be simulated as 0 ppm with no signal); this fails
    until STRUCTURE_PROPERTIES has its row."""
    from qsmprep import atlas
    from qsmprep.simulate import config as C

    assert list(C.STRUCTURE_PROPERTIES) == atlas.structures()
    cfg = SimulationConfig()
    for st, (chi, t2s, pd_) in C.STRUCTURE_PROPERTIES.items():
        assert (cfg.chi_ppm[st], cfg.t2star_ms[st], cfg.proton_density[st]) == (chi, t2s, pd_)


def test_truth_tables_follow_the_roi_table_contract(model):
    """The truth table and its data dictionary have exactly the columns of qsmprep.roi.COLUMNS,
    in order (fails if the simulator restates the columns and drifts from the contract); the
    truth statistics are those of roi.roi_statistics on the true map, checked by hand here on
    the pallidum: mean over its voxels in ppb."""
    from qsmprep import roi
    from qsmprep.simulate.cohort import truth_stats_sidecar

    d = simulate_session(2, 0, preset="small", seed=0, model=model)
    t = roi_table(d.chi, d.labels, d.label_table, d.voxel_size)
    assert list(t.columns) == roi.COLUMNS == list(truth_stats_sidecar())
    row = t.set_index("index").loc[5]
    sel = d.labels == 5
    assert row["n_voxels"] == int(sel.sum()) > 0
    assert row["mean_ppb"] == pytest.approx(1000.0 * d.chi[sel].astype(float).mean(), rel=1e-9)


def test_anisotropic_preset_grids(model):
    """The ``1mm-aniso`` preset (issue 14's protocol: GRE 1 x 1 x 1.5 mm, T1w 1 mm) gives GRE
    voxels of 1 x 1 x 1.5 mm that cover the same head as the 1 mm GRE grid, and a 1 mm T1w grid.

    Fails if an anisotropic ``gre_mm`` is applied to the wrong axis or not at all, or the grid
    no longer covers the head (too few slices for the thicker voxels).
    """
    from qsmprep.simulate.config import PRESETS
    from qsmprep.simulate.core import make_protocol

    cfg = SimulationConfig()
    iso = make_protocol(model, PRESETS["1mm"], cfg)
    aniso = make_protocol(model, PRESETS["1mm-aniso"], cfg)
    assert np.allclose(nib.affines.voxel_sizes(aniso.gre_affine), (1.0, 1.0, 1.5))
    assert np.allclose(nib.affines.voxel_sizes(aniso.t1w_affine), (1.0, 1.0, 1.0))
    assert aniso.gre_shape[:2] == iso.gre_shape[:2]
    extent_iso = iso.gre_shape[2] * 1.0
    extent_aniso = aniso.gre_shape[2] * 1.5
    assert abs(extent_aniso - extent_iso) <= 1.5
    assert aniso.t1w_shape == iso.t1w_shape
