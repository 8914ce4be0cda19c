"""antspyx registration helpers on a 3 mm MNI152NLin2009cAsym template with known transforms."""

import json
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest
from tests._reg_helpers import make_labels, rotation, template_file, world
from scipy import ndimage

ants = pytest.importorskip("ants")

from qsmprep import registration as R  # noqa: E402

VOX = 3.0


def resample_world_map(data, affine, src_xyz, order):
    """Sample ``data`` at world points ``src_xyz`` (3, N) -> array of ``data.shape``."""
    inv = np.linalg.inv(affine)
    vox = inv[:3, :3] @ src_xyz + inv[:3, 3:4]
    return ndimage.map_coordinates(data, vox, order=order, mode="constant").reshape(data.shape)


def dice(a, b, k):
    x, y = a == k, b == k
    return 2 * np.sum(x & y) / max(1, x.sum() + y.sum())


@pytest.fixture(scope="module")
def tpl(tmp_path_factory):
    d = tmp_path_factory.mktemp("tpl")
    img = nb.load(template_file())
    data = ndimage.zoom(np.asarray(img.dataobj, dtype=np.float32), 1 / VOX, order=1)
    aff = img.affine.copy()
    aff[:3, :3] *= VOX
    f = d / "tpl.nii.gz"
    nb.Nifti1Image(data, aff).to_filename(f)
    lab = make_labels(data, aff)
    lf = d / "dseg.nii.gz"
    nb.Nifti1Image(lab, aff).to_filename(lf)
    return {"dir": d, "file": f, "data": data, "affine": aff, "labels": lab, "labels_file": lf}


def add_scalp(data, vox=VOX):
    """Put a bright 'scalp' shell around the brain (a crude head) so extraction has work."""
    brain = data > 0
    inner = ndimage.binary_dilation(brain, iterations=int(round(6 / vox)))
    outer = ndimage.binary_dilation(brain, iterations=int(round(12 / vox)))
    head = data.copy()
    head[outer & ~inner] = np.percentile(data[brain], 90)
    return head


def test_rigid_recovers_known_transform(tpl, tmp_path):
    data, aff = tpl["data"], tpl["affine"]
    rm, t = rotation([6, -4, 8]), np.array([5.0, -7.0, 4.0])
    xyz = world(data.shape, aff)
    # moved content: moving(y) = fixed(R^-1 (y - t))
    moved = resample_world_map(data, aff, np.linalg.inv(rm) @ (xyz - t[:, None]), order=1)
    mf = tmp_path / "moved.nii.gz"
    nb.Nifti1Image(moved.astype(np.float32), aff).to_filename(mf)
    xfm, warped = R.register_rigid(tpl["file"], mf, out_dir=tmp_path, src="moved", dst="tpl")
    assert Path(xfm).name == "from-moved_to-tpl_mode-image_xfm.mat"
    tx = ants.read_transform(xfm)
    pts = xyz[:, data.ravel() > 0][:, ::50]
    lps = np.array([-1.0, -1.0, 1.0])[:, None]
    mapped = np.array([tx.apply_to_point(tuple(p)) for p in (pts * lps).T]).T * lps
    err = np.linalg.norm(mapped - (rm @ pts + t[:, None]), axis=0)
    print(f"rigid recovery error: mean {err.mean():.3f} mm, max {err.max():.3f} mm")
    assert err.max() < VOX  # < 1 voxel everywhere in the brain
    assert err.mean() < 0.3 * VOX


def test_masked_rigid_ignores_the_empty_field_of_view(tpl, tmp_path):
    """Masked rigid registrations estimate on the masked images cropped to the mask's box
    (RIGID_CROP_MARGIN_MM): padding the fixed image with empty field of view changes nothing
    (without the crop the metric samples a different grid, and the transform moves), and a
    mask on another grid is resampled onto the image's (`_mask_on`)."""
    data, aff = tpl["data"], tpl["affine"]
    rm, t = rotation([4, -3, 5]), np.array([4.0, -5.0, 3.0])
    xyz = world(data.shape, aff)
    moved = resample_world_map(data, aff, np.linalg.inv(rm) @ (xyz - t[:, None]), order=1)
    mf, mmf = tmp_path / "moved.nii.gz", tmp_path / "moved_mask.nii.gz"
    nb.Nifti1Image(moved.astype(np.float32), aff).to_filename(mf)
    nb.Nifti1Image((moved > 0).astype(np.uint8), aff).to_filename(mmf)
    brain_mask = tmp_path / "mask_native.nii.gz"
    nb.Nifti1Image((data > 0).astype(np.uint8), aff).to_filename(brain_mask)
    mats = {}
    for pad in (10, 20):  # voxels of empty field of view on every side
        big = np.pad(data, pad)
        a = aff.copy()
        a[:3, 3] -= aff[:3, :3] @ np.full(3, pad)
        ff = tmp_path / f"fixed_pad{pad}.nii.gz"
        nb.Nifti1Image(big.astype(np.float32), a).to_filename(ff)
        if pad == 10:  # the mask on the image's own grid: used as is
            fm = tmp_path / f"mask_pad{pad}.nii.gz"
            nb.Nifti1Image((big > 0).astype(np.uint8), a).to_filename(fm)
            mask = R._mask_on(fm, R._read(ff))
            assert np.array_equal(mask.numpy() > 0.5, big > 0)
        else:  # the mask on another grid: resampled onto the image's
            fm = brain_mask
            mask = R._mask_on(fm, R._read(ff))
            assert mask.shape == big.shape
            assert np.array_equal(mask.numpy() > 0.5, big > 0)
        xfm, _ = R.register_rigid(ff, mf, out_dir=tmp_path / f"r{pad}", src="moved", dst="tpl",
                                  fixed_mask=fm, moving_mask=mmf)
        mats[pad] = R._affine_matrix(ants.read_transform(xfm))
    pts = xyz[:, data.ravel() > 0][:, ::50]
    lps = np.array([-1.0, -1.0, 1.0])[:, None]
    p = pts * lps
    moved_by = np.linalg.norm((mats[10] - mats[20])[:3, :3] @ p + (mats[10] - mats[20])[:3, 3:4],
                              axis=0)
    print(f"pad 10 vs 20 voxels: transforms differ by {moved_by.mean():.4f} mm mean, "
          f"{moved_by.max():.4f} mm max")
    assert moved_by.max() < 0.02
    mapped = (mats[10][:3, :3] @ (pts * lps) + mats[10][:3, 3:4]) * lps
    err = np.linalg.norm(mapped - (rm @ pts + t[:, None]), axis=0)
    print(f"masked rigid recovery error: mean {err.mean():.3f} mm, max {err.max():.3f} mm")
    assert err.mean() < 0.3 * VOX and err.max() < VOX


def test_gre_to_t1w_different_fov_and_resolution(tpl, tmp_path):
    """A cropped, 2x3x2 mm 'magnitude' with inverted-ish contrast, rotated: rigid MI recovers."""
    data, aff = tpl["data"], tpl["affine"]
    rm, t = rotation([-5, 3, 4]), np.array([-4.0, 6.0, 8.0])
    # GRE grid: different resolution, smaller FOV (cut superior/inferior slab)
    g_aff = np.diag([2.0, 3.0, 2.0, 1.0])
    g_shape = (70, 60, 50)
    centre = aff[:3, :3] @ (np.array(data.shape) / 2) + aff[:3, 3]
    g_aff[:3, 3] = centre - g_aff[:3, :3] @ (np.array(g_shape) / 2) + np.array([0, 0, 8])
    gxyz = world(g_shape, g_aff)
    src = np.linalg.inv(rm) @ (gxyz - t[:, None])
    inv = np.linalg.inv(aff)
    vox = inv[:3, :3] @ src + inv[:3, 3:4]
    g = ndimage.map_coordinates(data, vox, order=1).reshape(g_shape)
    brain = g > 0
    # T2*-like contrast: GM brighter than WM
    mag = np.where(brain, 1.6 * g.max() - g, 0).astype(np.float32)
    gf = tmp_path / "mag.nii.gz"
    nb.Nifti1Image(mag, g_aff).to_filename(gf)
    mf = tmp_path / "gre_mask.nii.gz"
    nb.Nifti1Image(brain.astype(np.uint8), g_aff).to_filename(mf)
    # the call of the workflow's gre_to_t1w node (RigidRegistration: src MEGRE, dst T1w)
    xfm, _ = R.register_rigid(tpl["file"], gf, out_dir=tmp_path, src="MEGRE", dst="T1w",
                              moving_mask=mf, qc_name="gre_to_t1w")
    tx = ants.read_transform(xfm)
    pts = world(data.shape, aff)[:, data.ravel() > 0][:, ::50]
    lps = np.array([-1.0, -1.0, 1.0])[:, None]
    mapped = np.array([tx.apply_to_point(tuple(p)) for p in (pts * lps).T]).T * lps
    err = np.linalg.norm(mapped - (rm @ pts + t[:, None]), axis=0)
    print(f"GRE->T1w recovery error: mean {err.mean():.3f} mm, max {err.max():.3f} mm")
    assert err.mean() < 0.5 * VOX
    assert err.max() < 1.5 * VOX


@pytest.fixture(scope="module")
def warped_subject(tpl):
    """Template and labels pushed through a known smooth warp + small rotation."""
    data, aff, lab = tpl["data"], tpl["affine"], tpl["labels"]
    rng = np.random.default_rng(7)
    xyz = world(data.shape, aff)
    disp = np.stack(
        [ndimage.gaussian_filter(rng.standard_normal(data.shape), 4) for _ in range(3)]
    )
    disp *= 4.0 / np.abs(disp).max()  # up to 4 mm
    src = rotation([4, 0, -3]) @ xyz + disp.reshape(3, -1)
    subj = resample_world_map(data, aff, src, order=1).astype(np.float32)
    sub_lab = resample_world_map(lab.astype(float), aff, src, order=0).astype(np.int16)
    d = tpl["dir"]
    nb.Nifti1Image(subj, aff).to_filename(d / "subj.nii.gz")
    nb.Nifti1Image(add_scalp(subj), aff).to_filename(d / "subj_head.nii.gz")
    nb.Nifti1Image(sub_lab, aff).to_filename(d / "subj_dseg.nii.gz")
    return {"brain": d / "subj.nii.gz", "head": d / "subj_head.nii.gz", "labels": sub_lab}


def test_brain_extraction(tpl, warped_subject, tmp_path):
    brain_f, mask_f = R.brain_extract_t1w(
        warped_subject["head"], tpl["file"], out_prefix=str(tmp_path / "sub_"), resolution_mm=VOX
    )
    est = np.asarray(nb.load(mask_f).dataobj) > 0
    truth = np.asarray(nb.load(warped_subject["brain"]).dataobj) > 0
    d = 2 * np.sum(est & truth) / (est.sum() + truth.sum())
    print(f"brain mask Dice {d:.3f}")
    assert d > 0.9
    # the bright scalp shell is removed
    head = np.asarray(nb.load(warped_subject["head"]).dataobj)
    shell = (head > 0) & ~truth
    assert np.mean(est[shell]) < 0.05


def test_syn_label_propagation(tpl, warped_subject, tmp_path):
    fwd, inv, warped = R.register_atlas_to_t1w(
        warped_subject["brain"], tpl["file"], out_dir=tmp_path, resolution_mm=VOX
    )
    assert Path(fwd).name == "from-MNI152NLin2009cAsym_to-T1w_mode-image_xfm.h5"
    assert Path(inv).name == "from-T1w_to-MNI152NLin2009cAsym_mode-image_xfm.h5"
    out = R.compose_and_apply(
        tpl["labels_file"], warped_subject["brain"], [fwd], out_file=tmp_path / "lab.nii.gz"
    )
    est = np.asarray(nb.load(out).dataobj)
    truth = warped_subject["labels"]
    assert est.dtype == np.int16
    assert set(np.unique(est)) <= set(np.unique(tpl["labels"]))
    dices = {k: dice(est, truth, k) for k in range(1, 7)}
    # identity (no registration) as the baseline the registration must beat
    base = {k: dice(tpl["labels"], truth, k) for k in range(1, 7)}
    print("Dice registered", {k: round(v, 3) for k, v in dices.items()})
    print("Dice unregistered", {k: round(v, 3) for k, v in base.items()})
    assert min(dices.values()) > 0.7
    assert np.mean(list(dices.values())) > np.mean(list(base.values())) + 0.05


def test_syn_metrics(tpl, warped_subject, tmp_path):
    """Both SyN metrics propagate labels; an unknown metric is refused before any work."""
    fwd, _, _ = R.register_atlas_to_t1w(
        warped_subject["brain"], tpl["file"], out_dir=tmp_path, resolution_mm=VOX,
        syn_metric="mattes",
    )
    out = R.compose_and_apply(
        tpl["labels_file"], warped_subject["brain"], [fwd], out_file=tmp_path / "lab.nii.gz"
    )
    est = np.asarray(nb.load(out).dataobj)
    assert min(dice(est, warped_subject["labels"], k) for k in range(1, 7)) > 0.6
    with pytest.raises(ValueError, match="syn_metric"):
        R.register_atlas_to_t1w(warped_subject["brain"], tpl["file"], out_dir=tmp_path / "x",
                                syn_metric="demons")


def test_crop_to_content_keeps_physical_space():
    arr = np.zeros((40, 50, 60), dtype="float32")
    arr[10:20, 15:30, 20:41] = np.arange(10 * 15 * 21, dtype="float32").reshape(10, 15, 21) + 1
    img = ants.from_numpy(arr, origin=(1.0, -2.0, 3.0), spacing=(2.0, 2.0, 2.0))
    out = R._crop_to_content(img, margin_mm=4.0)
    # bounding box 10..19 x 15..29 x 20..40 plus 2 voxels each side
    assert out.shape == (14, 19, 25)
    assert np.array_equal(out.numpy()[2:-2, 2:-2, 2:-2], arr[10:20, 15:30, 20:41])
    for ijk_full, ijk_crop in [((10, 15, 20), (2, 2, 2)), ((19, 29, 40), (11, 16, 22))]:
        assert np.allclose(ants.transform_index_to_physical_point(img, ijk_full),
                           ants.transform_index_to_physical_point(out, ijk_crop))
    # an image without background is returned as is; an empty one too
    full = ants.from_numpy(np.ones((5, 6, 7), dtype="float32"))
    assert R._crop_to_content(full).shape == (5, 6, 7)
    empty = ants.from_numpy(np.zeros((5, 6, 7), dtype="float32"))
    assert R._crop_to_content(empty).shape == (5, 6, 7)


def _small_rigid(img, path, angles, shift):
    """Write a small rotation (radians) about the image's centre of mass plus a shift (mm)."""
    tx = ants.create_ants_transform(transform_type="Euler3DTransform", dimension=3,
                                    center=list(ants.get_center_of_mass(img)),
                                    translation=list(shift))
    tx.set_parameters(list(tx.parameters[:3] + np.asarray(angles)) + list(shift))
    ants.write_transform(tx, str(path))
    return path


def test_content_bounds_masked_crop_and_warp_inside_match_the_whole_grid(tpl, tmp_path):
    """The projection bounds equal np.argwhere's; cropping before masking gives the voxels and
    space of masking first; the warp computed inside the mask's box equals the whole-grid warp
    there (zero outside), so registration_quality reads the same values."""
    rng = np.random.default_rng(5)
    for shape in [(7, 9, 11), (30, 20, 25)]:
        m = rng.random(shape) > 0.97
        nz = np.argwhere(m)
        assert R.mask_bounds(m) == ([int(v) for v in nz.min(0)], [int(v) for v in nz.max(0)])
    assert R.mask_bounds(np.zeros((4, 5, 6), bool)) is None

    img = ants.image_read(str(tpl["file"]))
    arr = img.numpy()
    mask = np.zeros(arr.shape, "float32")
    mask[10:40, 12:50, 8:35] = (arr[10:40, 12:50, 8:35] > np.percentile(arr, 60))
    mimg = img.new_image_like(mask)
    old = R._crop_to_content(img * mimg, 6.0, mask=mask > 0.5)
    new, mcrop = R._masked_crop(img, mimg, 6.0)
    assert new.shape == old.shape and np.array_equal(new.numpy(), old.numpy())
    assert np.allclose(new.origin, old.origin) and np.allclose(new.direction, old.direction)
    assert mcrop.shape == new.shape and np.array_equal(mcrop.origin, new.origin)

    xfm = _small_rigid(img, tmp_path / "rot.mat", (0.05, -0.03, 0.02), (2.0, -1.5, 3.0))
    full = ants.apply_transforms(img, img, [str(xfm)], interpolator="linear").numpy()
    inside = R._warp_inside(img, img, str(xfm), mask > 0.5)
    box = R._bbox(mask > 0.5)
    assert np.allclose(inside[box], full[box], rtol=0, atol=1e-5 * np.abs(full).max())
    outside = np.ones(arr.shape, bool)
    outside[box] = False
    assert not inside[outside].any()
    assert np.array_equal(R._warp_inside(img, img, str(xfm)), full)
    # the cropped mask carried by a label interpolator: the whole mask's warp, voxel for voxel
    # (register_rigid's QC overlap); the same with a 0-voxel crop differs (mask cut)
    whole = ants.apply_transforms(img, mimg, [str(xfm)], interpolator="genericLabel").numpy()
    crop = ants.apply_transforms(img, mcrop, [str(xfm)], interpolator="genericLabel").numpy()
    assert whole.any() and np.array_equal(crop, whole)
    _, tight = R._masked_crop(img, mimg, 0.0)
    tight_cut = ants.crop_indices(tight, [1, 1, 1], [n - 1 for n in tight.shape])
    cut = ants.apply_transforms(img, tight_cut, [str(xfm)], interpolator="genericLabel").numpy()
    assert not np.array_equal(cut, whole)


def test_compose_chain_equals_sequential(tpl, tmp_path):
    """Two rigid transforms composed in one call map labels like the product transform."""
    data, aff = tpl["data"], tpl["affine"]
    r1, t1 = rotation([20, 0, 0]), np.array([9.0, 0, 0])
    r2, t2 = rotation([0, 0, -20]), np.array([0, -8.0, 6.0])
    lps = np.diag([-1.0, -1.0, 1.0])
    files = []
    for k, (r, t) in enumerate([(r1, t1), (r2, t2)]):
        tx = ants.create_ants_transform(
            transform_type="AffineTransform",
            dimension=3,
            matrix=lps @ r @ lps,
            translation=lps @ t,
        )
        fn = str(tmp_path / f"x{k}.mat")
        ants.write_transform(tx, fn)
        files.append(fn)
    mask = tmp_path / "mask.nii.gz"
    m = np.zeros(data.shape, np.uint8)
    m[:, :, : data.shape[2] // 2] = 1
    nb.Nifti1Image(m, aff).to_filename(mask)
    out = R.compose_and_apply(
        tpl["labels_file"], tpl["file"], files, out_file=tmp_path / "c.nii.gz", mask=mask
    )
    est = np.asarray(nb.load(out).dataobj)
    # antsApplyTransforms order: a reference-grid point goes through the FIRST listed
    # transform first (fMRIPrep lists [T1w->MNI, bold->T1w] to resample bold into MNI)
    xyz = world(data.shape, aff)
    src = r2 @ (r1 @ xyz + t1[:, None]) + t2[:, None]
    wrong = r1 @ (r2 @ xyz + t2[:, None]) + t1[:, None]
    truth = resample_world_map(tpl["labels"].astype(float), aff, src, order=0).astype(int)
    truth[m == 0] = 0
    assert np.all(est[m == 0] == 0)
    agree = np.mean(est[truth > 0] == truth[truth > 0])
    wrong_lab = resample_world_map(tpl["labels"].astype(float), aff, wrong, order=0)
    wrong_lab[m == 0] = 0
    agree_wrong = np.mean(est[wrong_lab > 0] == wrong_lab[wrong_lab > 0])
    print(f"label agreement: composed order {agree:.3f}, reversed order {agree_wrong:.3f}")
    assert agree > 0.9  # genericLabel vs nearest-neighbour ties at 3 mm
    assert agree_wrong < agree - 0.05
    # inversion flag: applying x0 then its inverse gives back the labels
    out2 = R.compose_and_apply(
        tpl["labels_file"],
        tpl["file"],
        [files[0], files[0]],
        invert=[True, False],
        out_file=tmp_path / "id.nii.gz",
    )
    back = np.asarray(nb.load(out2).dataobj)
    assert np.mean(back == tpl["labels"]) > 0.99


@pytest.mark.parametrize("coarse", [False, True], ids=["native", "coarse-averages"])
def test_subject_template_unbiased(tpl, tmp_path, monkeypatch, coarse):
    """Two sessions moved by +/- the same rigid motion: template lands midway (at the origin).

    ``coarse``: the registrations run at 6 mm, so the intermediate averages are taken on a
    6 mm copy of the grid and only the last one at the images' 3 mm (the path of 1 mm data).
    """
    data, aff = tpl["data"], tpl["affine"]
    xyz = world(data.shape, aff)
    files = []
    for k, sign in enumerate([1, -1]):
        r, t = rotation([sign * 4, 0, sign * 3]), sign * np.array([4.0, -3.0, 0.0])
        img = resample_world_map(data, aff, np.linalg.inv(r) @ (xyz - t[:, None]), order=1)
        img = add_scalp(img) * (1.0 + 0.3 * k)  # different intensity scaling per session
        fn = tmp_path / f"ses{k}.nii.gz"
        nb.Nifti1Image(img.astype(np.float32), aff).to_filename(fn)
        files.append(fn)
    with monkeypatch.context() as m:
        if coarse:
            m.setattr(R, "RIGID_RESOLUTION_MM", 2 * VOX)
        out = R.build_subject_template(files, out_dir=tmp_path / "tpl", iterations=2)
    assert np.allclose(nb.load(out).header.get_zooms()[:3], VOX)  # the last average: full grid
    # the template must align with the *unmoved* head (the midpoint), not with either session
    ref = tmp_path / "ref.nii.gz"
    nb.Nifti1Image(add_scalp(data).astype(np.float32), aff).to_filename(ref)
    xfm, _ = R.register_rigid(ref, out, out_dir=tmp_path / "chk", src="tpl", dst="ref")
    tx = ants.read_transform(xfm)
    pts = xyz[:, data.ravel() > 0][:, ::50]
    lpsv = np.array([-1.0, -1.0, 1.0])[:, None]
    mapped = np.array([tx.apply_to_point(tuple(p)) for p in (pts * lpsv).T]).T * lpsv
    err = np.linalg.norm(mapped - pts, axis=0)
    print(f"template offset from midpoint: mean {err.mean():.2f} mm, max {err.max():.2f} mm")
    assert err.mean() < 0.5 * VOX
    # sharper than the unaligned average: correlation with the midpoint head is high
    t_img = nb.load(out)
    assert np.all(np.isfinite(np.asarray(t_img.dataobj)))


def test_subject_template_transforms(tpl, tmp_path):
    """The returned session -> template transforms are the maps the template was built with.

    Each session resampled through its transform matches the template (it is one of the two
    images the template averages), and a fresh registration of the session to the finished
    template estimates the same map within a small fraction of a voxel.
    """
    data, aff = tpl["data"], tpl["affine"]
    xyz = world(data.shape, aff)
    files, truth = [], []
    for k, sign in enumerate([1, -1]):
        r, t = rotation([sign * 4, 0, sign * 3]), sign * np.array([4.0, -3.0, 0.0])
        img = resample_world_map(data, aff, np.linalg.inv(r) @ (xyz - t[:, None]), order=1)
        fn = tmp_path / f"ses{k}.nii.gz"
        nb.Nifti1Image(add_scalp(img).astype(np.float32), aff).to_filename(fn)
        files.append(fn)
    out, xfms = R.build_subject_template(files, out_dir=tmp_path / "tpl", iterations=2,
                                         return_transforms=True)
    assert len(xfms) == 2
    assert R.build_subject_template(files, out_dir=tmp_path / "tpl2", iterations=2) == str(
        (tmp_path / "tpl2" / "desc-template_T1w.nii.gz").resolve())
    tpl_arr = np.asarray(nb.load(out).dataobj)
    body = tpl_arr > 0.2 * tpl_arr.max()
    lpsv = np.array([-1.0, -1.0, 1.0])[:, None]
    pts = (xyz[:, data.ravel() > 0][:, ::50] * lpsv).T
    for k, (fn, xfm) in enumerate(zip(files, xfms)):
        pub, warped = R.template_session_transform(out, fn, xfm, out_dir=tmp_path / f"pub{k}",
                                                   qc_file=tmp_path / f"qc{k}.json")
        assert Path(pub).name == "from-T1w_to-individual_mode-image_xfm.mat"
        w = np.asarray(nb.load(warped).dataobj)
        r = np.corrcoef(w[body], tpl_arr[body])[0, 1]
        ncc = json.loads((tmp_path / f"qc{k}.json").read_text())
        ncc = ncc["RegistrationQuality"]["Metrics"]["t1w_to_template_ncc"]
        # against a second registration to the finished template (what the workflow did before)
        again, w2 = R.register_rigid(out, fn, out_dir=tmp_path / f"re{k}", src="T1w",
                                     dst="individual")
        w2 = np.asarray(nb.load(w2).dataobj)
        r2 = np.corrcoef(w2[body], tpl_arr[body])[0, 1]
        a, b = ants.read_transform(pub), ants.read_transform(again)
        d = np.linalg.norm([np.subtract(a.apply_to_point(tuple(p)), b.apply_to_point(tuple(p)))
                            for p in pts], axis=1)
        print(f"session {k}: r {r:.4f} (re-registered {r2:.4f}), ncc {ncc:.3f}, vs "
              f"re-registration mean {d.mean():.3f} max {d.max():.3f} mm")
        assert r > r2 - 0.005 and ncc > 0.9
        assert d.mean() < 0.1 * VOX and d.max() < 0.25 * VOX
    # a transform that is not the session's own misaligns it (the test can fail)
    _, wrong = R.template_session_transform(out, files[0], xfms[1], out_dir=tmp_path / "wrong")
    w = np.asarray(nb.load(wrong).dataobj)
    assert np.corrcoef(w[body], tpl_arr[body])[0, 1] < r - 0.02


def test_label_crop_changes_nothing(tpl, tmp_path):
    """compose_and_apply crops a label image to its labels: voxel-identical to no crop."""
    tx = ants.create_ants_transform(transform_type="Euler3DTransform", dimension=3,
                                    center=[0.0, 0.0, 0.0], translation=[2.3, -1.7, 0.9])
    tx.set_parameters([0.06, -0.04, 0.05, 2.3, -1.7, 0.9])
    xfm = str(tmp_path / "rot.mat")
    ants.write_transform(tx, xfm)
    lab = nb.load(tpl["labels_file"])
    small = np.zeros(lab.shape, np.int16)  # labels far from the image edges: the crop is real
    core = tuple(slice(n // 3, 2 * n // 3) for n in lab.shape)
    small[core] = np.asarray(lab.dataobj)[core]
    assert len(np.unique(small)) > 2
    lab_file = tmp_path / "labels.nii.gz"
    nb.Nifti1Image(small, lab.affine).to_filename(lab_file)
    img = ants.image_read(str(lab_file), pixeltype="float")
    assert np.prod(R._crop_to_labels(img).shape) < 0.2 * np.prod(img.shape)
    for interp in ("genericLabel", "nearestNeighbor"):
        out = R.compose_and_apply(lab_file, tpl["file"], [xfm], out_file=tmp_path / "c.nii.gz",
                                  interpolator=interp)
        ref = ants.apply_transforms(ants.image_read(str(tpl["file"])), img, [xfm],
                                    interpolator=interp)
        got = np.asarray(nb.load(out).dataobj)
        assert np.array_equal(got, np.rint(ref.numpy()).astype(np.int16)), interp
        assert len(np.unique(got)) > 2
    # with a mask on the reference grid only the mask's box is resampled: the whole grid's
    # labels, masked (labels also land outside the mask, so the masking is real)
    whole = np.rint(ants.apply_transforms(ants.image_read(str(tpl["file"])), img, [xfm],
                                          interpolator="genericLabel").numpy()).astype(np.int16)
    msk = np.zeros(lab.shape, np.uint8)
    msk[tuple(slice(n // 3 + 2, 2 * n // 3 - 1) for n in lab.shape)] = 1
    msk[lab.shape[0] // 2, lab.shape[1] // 2, lab.shape[2] // 2] = 0
    mask_file = tmp_path / "mask.nii.gz"
    nb.Nifti1Image(msk, lab.affine).to_filename(mask_file)
    out = R.compose_and_apply(lab_file, tpl["file"], [xfm], out_file=tmp_path / "m.nii.gz",
                              mask=mask_file)
    got = np.asarray(nb.load(out).dataobj)
    assert (whole * (msk == 0)).any() and np.array_equal(got, np.where(msk > 0, whole, 0))


def test_rigid_is_deterministic(tpl, tmp_path):
    """Same seed and thread count: bit-identical transforms (random MI sampling is seeded)."""
    data, aff = tpl["data"], tpl["affine"]
    xyz = world(data.shape, aff)
    moved = resample_world_map(data, aff, rotation([0, 5, 0]) @ xyz + 3.0, order=1)
    mf = tmp_path / "m.nii.gz"
    nb.Nifti1Image(moved.astype(np.float32), aff).to_filename(mf)
    params = []
    for k in range(2):
        xfm, _ = R.register_rigid(tpl["file"], mf, out_dir=tmp_path / f"r{k}", seed=42)
        params.append(np.asarray(ants.read_transform(xfm).parameters))
    assert np.array_equal(params[0], params[1])


def test_estimation_schedule():
    """Levels finer than SYN_RESOLUTION_MM with 0 iterations are dropped (same optimised levels)."""
    assert R._estimation_schedule(1.0, (40, 20, 0)) == (2.0, (40, 20))
    assert R._estimation_schedule(2.0, (40, 20, 0)) == (2.0, (40, 20, 0))  # nothing to drop
    assert R._estimation_schedule(1.0, (40, 20, 10)) == (None, (40, 20, 10))  # work at 1 mm
    assert R._estimation_schedule(1.0, (40, 20, 0), resolution_mm=3.0) == (3.0, (40, 20, 0))


def test_syn_on_coarsened_grid(tpl, warped_subject, tmp_path, monkeypatch):
    """The coarse-grid path (affine, then SyNOnly from it) keeps the initial/affine transforms in
    the composite and propagates labels; here 3 mm images are estimated at 6 mm."""
    monkeypatch.setattr(R, "SYN_RESOLUTION_MM", 2 * VOX)
    fwd, inv, warped = R.register_atlas_to_t1w(
        warped_subject["brain"], tpl["file"], out_dir=tmp_path, qc_file=tmp_path / "qc.json",
        qc_name="atlas_to_t1w")
    assert (tmp_path / "MNI152NLin2009cAsym_to_T1w_affine_0GenericAffine.mat").exists()
    out = R.compose_and_apply(
        tpl["labels_file"], warped_subject["brain"], [fwd], out_file=tmp_path / "lab.nii.gz"
    )
    est = np.asarray(nb.load(out).dataobj)
    truth = warped_subject["labels"]
    dices = {k: dice(est, truth, k) for k in range(1, 7)}
    base = {k: dice(tpl["labels"], truth, k) for k in range(1, 7)}
    print("Dice coarse-grid SyN", {k: round(v, 3) for k, v in dices.items()})
    assert min(dices.values()) > 0.6
    assert np.mean(list(dices.values())) > np.mean(list(base.values())) + 0.05
    import json

    q = json.loads((tmp_path / "qc.json").read_text())["RegistrationQuality"]
    assert q["Metrics"]["atlas_to_t1w_ncc"] > 0.7 and q["Flagged"] == 0


def test_atlas_syn_from_brain_extraction_affine(tpl, warped_subject, tmp_path, monkeypatch):
    """The brain extraction's affine starts the atlas SyN (no second affine stage): labels as
    good as with the separately estimated affine, on the coarse-grid path (3 mm at 6 mm)."""
    monkeypatch.setattr(R, "SYN_RESOLUTION_MM", 2 * VOX)
    brain_f, mask_f, aff = R.brain_extract_t1w(
        warped_subject["head"], tpl["file"], out_prefix=str(tmp_path / "sub_"), resolution_mm=VOX,
        return_affine=True)
    assert Path(aff).name == "sub_bexaffine.mat" and Path(aff).is_absolute()
    truth = warped_subject["labels"]
    dices = {}
    for name, init in (("own", None), ("brain extraction's", aff)):
        out_dir = tmp_path / ("a" if init is None else "b")
        fwd, inv, _ = R.register_atlas_to_t1w(brain_f, tpl["file"], out_dir=out_dir,
                                              initial_affine=init)
        # the affine stage ran only without an initial affine
        assert (out_dir / "MNI152NLin2009cAsym_to_T1w_affine_0GenericAffine.mat").exists() == (
            init is None)
        out = R.compose_and_apply(tpl["labels_file"], brain_f, [fwd], out_file=out_dir / "l.nii.gz")
        est = np.asarray(nb.load(out).dataobj)
        dices[name] = {k: dice(est, truth, k) for k in range(1, 7)}
        print(f"Dice, SyN from the {name} affine", {k: round(v, 3) for k, v in dices[name].items()})
        # the inverse composite exists and maps the fixed image back
        assert Path(inv).exists()
    base = {k: dice(tpl["labels"], truth, k) for k in range(1, 7)}
    mean = {k: np.mean(list(v.values())) for k, v in dices.items()}
    assert min(dices["brain extraction's"].values()) > 0.6
    assert mean["brain extraction's"] > np.mean(list(base.values())) + 0.05
    assert mean["brain extraction's"] > mean["own"] - 0.02


def test_atlas_syn_on_the_label_region(tpl, warped_subject, tmp_path, monkeypatch):
    """``region_labels``: the coarse SyN levels run on the whole brain, the finest optimised
    level on the fixed image cropped to the atlas labels as the affine places them plus the
    margin. That refinement is confined to the box (outside it the transform is the coarse
    levels' one), the composites map both ways, and the propagated labels are about as good as
    with the whole-brain SyN."""
    import ants
    import pandas as pd

    monkeypatch.setattr(R, "SYN_RESOLUTION_MM", 2 * VOX)
    brain_f, _, aff = R.brain_extract_t1w(
        warped_subject["head"], tpl["file"], out_prefix=str(tmp_path / "sub_"), resolution_mm=VOX,
        return_affine=True)
    truth = warped_subject["labels"]
    fixed = ants.image_read(brain_f)
    pts = np.argwhere(np.ones(fixed.shape, bool))[::5].astype(float)
    phys = (np.asarray(fixed.direction) @ (pts * np.asarray(fixed.spacing)).T).T \
        + np.asarray(fixed.origin)
    df = pd.DataFrame(phys, columns=["x", "y", "z"])
    dices = {}
    for name, region in (("brain", None), ("labels", tpl["labels_file"])):
        out_dir = tmp_path / name
        fwd, inv, _ = R.register_atlas_to_t1w(brain_f, tpl["file"], out_dir=out_dir,
                                              initial_affine=aff, region_labels=region,
                                              qc_file=out_dir / "qc.json")
        out = R.compose_and_apply(tpl["labels_file"], brain_f, [fwd], out_file=out_dir / "l.nii.gz")
        est = np.asarray(nb.load(out).dataobj)
        dices[name] = {k: dice(est, truth, k) for k in range(1, 7)}
        print(f"Dice, SyN on the {name}", {k: round(v, 3) for k, v in dices[name].items()})
        q = json.loads((out_dir / "qc.json").read_text())["RegistrationQuality"]
        assert q["Flagged"] == 0
        # the inverse composite undoes the forward one (points: fixed -> template -> fixed)
        there = ants.apply_transforms_to_points(3, df, [fwd])
        back = ants.apply_transforms_to_points(3, there, [inv]).to_numpy()
        inside = est[tuple(pts.astype(int).T)] > 0
        assert np.median(np.linalg.norm(back - phys, axis=1)[inside]) < 0.2 * VOX
    mean = {k: np.mean(list(v.values())) for k, v in dices.items()}
    assert min(dices["labels"].values()) > 0.7
    assert mean["labels"] > mean["brain"] - 0.03
    # outside the cropped box the transform is the coarse levels' (whole-brain) one
    coarse = [str(tmp_path / "labels" / f"coarse{R.TEMPLATE_SPACE}_to_T1w_{f}")
              for f in ("1Warp.nii.gz", "0GenericAffine.mat")]
    d = np.linalg.norm(ants.apply_transforms_to_points(3, df, [fwd]).to_numpy()
                       - ants.apply_transforms_to_points(3, df, coarse).to_numpy(), axis=1)
    box = np.argwhere(est > 0)
    pad = int(np.ceil(R.SYN_REGION_MARGIN_MM / VOX)) + 4  # margin + affine misplacement (voxels)
    outside = np.any((pts < box.min(0) - pad) | (pts > box.max(0) + pad), axis=1)
    assert outside.sum() > 100
    assert d[outside].max() < 1e-3  # mm
    assert d[~outside].max() > 0.1 * VOX  # the fine level refined the labels' region


def test_normalise_and_mask_on_equal_the_array_formulas(tmp_path):
    """_normalise divides in a clone and _mask_on thresholds in place, without the array copies
    of numpy()/new_image_like: the same float32 values and space as the array formulas, and the
    input image is left as it was."""
    rng = np.random.default_rng(7)
    a = (rng.random((20, 25, 30)) * 3).astype("float32")
    a[a < 0.6] = 0
    img = ants.from_numpy(a, origin=(1.0, -2.0, 3.5), spacing=(1.0, 1.0, 1.5))
    p99 = float(np.percentile(a[a > 0], 99))
    for src in (img, img.clone("double")):
        out = R._normalise(src)
        # the former formula: new_image_like(numpy() / p99), cast to float32 by from_numpy
        old = np.asarray(src.numpy() / p99, dtype="float32")
        assert out.pixeltype == "float" and np.array_equal(out.numpy(), old)
        assert out.origin == src.origin and out.spacing == src.spacing
    assert np.array_equal(img.numpy(), a)  # the input is not divided in place
    mask = rng.random(a.shape).astype("float32")
    mfile = tmp_path / "mask.nii.gz"
    ants.image_write(img.new_image_like(mask), str(mfile))
    m = R._mask_on(mfile, img)
    assert m.pixeltype == "float" and np.array_equal(m.numpy(), (mask > 0.5).astype("float32"))
    assert m.origin == img.origin


def test_warp_in_domain_equals_the_whole_grid_warp(tpl, tmp_path):
    """Labels resampled over the domain's box only: the whole-grid warp there, voxel for voxel,
    and zero outside (the whole-grid warp too, when the labels land inside the domain)."""
    img = ants.image_read(str(tpl["file"]))
    arr = img.numpy()
    lab = np.zeros(arr.shape, "float32")
    lab[20:35, 22:40, 15:30] = 1
    lab[25:30, 28:33, 18:24] = 2
    labels = img.new_image_like(lab)
    xfm = _small_rigid(img, tmp_path / "shift.mat", (0.04, -0.02, 0.03), (1.7, -2.2, 0.9))
    whole = ants.apply_transforms(img, labels, [str(xfm)], interpolator="genericLabel").numpy()
    # a domain on a grid twice as coarse (as the SyN's), around where the labels land
    coarse = ants.resample_image(img, tuple(2 * v for v in img.spacing), False, 0)
    lo, hi = R.mask_bounds(whole > 0)
    domain = ants.crop_indices(coarse, [max(0, a // 2 - 1) for a in lo],
                               [min(n, b // 2 + 2) for b, n in zip(hi, coarse.shape)])
    part = R._warp_in_domain(img, labels, [str(xfm)], domain)
    assert whole.any() and np.array_equal(part, whole)
    small = ants.crop_indices(img, [24, 26, 19], [31, 34, 26])
    inner = R._warp_in_domain(img, labels, [str(xfm)], small)
    inside = np.zeros(arr.shape, bool)
    inside[22:33, 24:36, 17:28] = True  # the small domain's box plus the 2-voxel margin
    assert np.array_equal(inner[inside], whole[inside]) and not inner[~inside].any()
    assert inner.any() and not np.array_equal(inner, whole)


def test_b0_angle_between_sessions_is_the_head_turn(tpl, tmp_path):
    """The follow-up is the same head turned in the scanner (its affine rotated about a point
    off-centre, rotation about z included, which leaves B0's angle alone): the measured angle
    between the sessions' B0 directions is that of the turn's B0 component."""
    import json

    data, aff = tpl["data"], tpl["affine"]
    rm = rotation([5, -3, 10])
    turned = aff.copy()
    turned[:3, :3] = rm @ aff[:3, :3]
    turned[:3, 3] = rm @ aff[:3, 3] + [4.0, -6.0, 3.0]
    mask = (data > 0).astype(np.uint8)
    for name, a in (("b", aff), ("f", turned)):
        nb.Nifti1Image(data, a).to_filename(tmp_path / f"{name}_mag.nii.gz")
        nb.Nifti1Image(mask, a).to_filename(tmp_path / f"{name}_mask.nii.gz")
    out = R.b0_angle_between_sessions(tmp_path / "b_mag.nii.gz", tmp_path / "f_mag.nii.gz",
                                      tmp_path / "b_mask.nii.gz", tmp_path / "f_mask.nii.gz",
                                      out_dir=tmp_path)
    doc = json.loads(open(out).read())
    true = np.degrees(np.arccos(rm[2, 2]))  # angle between z and R^T z
    print(f"B0 angle between sessions: {doc['B0AngleDeg']:.3f} (true {true:.3f}) degrees")
    assert abs(doc["B0AngleDeg"] - true) < 0.2
    np.testing.assert_allclose(doc["FollowupB0InBaselineFrame"], rm.T @ [0, 0, 1], atol=0.005)
