"""init_longitudinal_wf: graph construction for every path, and one run on 2 tiny sessions.

The run uses a 3 mm copy of the MNI152NLin2009cAsym brain template as the atlas template, six
box-and-tissue labels as the atlas, and two sessions of one "subject" made from the template by
a known smooth warp, per-session head motion, a bright scalp shell (T1w), and a GRE magnitude on
a different grid/FOV with inverted contrast. The true labels on each GRE grid are known.
"""

from pathlib import Path
from types import SimpleNamespace

import nibabel as nb
import numpy as np
import pytest
from tests._reg_helpers import make_labels, rotation, template_file, world
from nipype.utils.filemanip import loadpkl
from scipy import ndimage

pytest.importorskip("ants")

from qsmprep.workflows.longitudinal import OUTPUT_FIELDS, init_longitudinal_wf  # noqa: E402

VOX = 3.0
SESSIONS = ["baseline", "followup"]


def sample(data, affine, xyz, shape, order):
    inv = np.linalg.inv(affine)
    vox = inv[:3, :3] @ xyz + inv[:3, 3:4]
    return ndimage.map_coordinates(data, vox, order=order, mode="constant").reshape(shape)


def add_scalp(data):
    brain = data > 0
    inner = ndimage.binary_dilation(brain, iterations=2)
    outer = ndimage.binary_dilation(brain, iterations=4)
    head = data.copy()
    head[outer & ~inner] = np.percentile(data[brain], 90)
    return head


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    d = tmp_path_factory.mktemp("study")
    img = nb.load(template_file())
    tpl = ndimage.zoom(np.asarray(img.dataobj, dtype=np.float32), 1 / VOX, order=1)
    aff = img.affine.copy()
    aff[:3, :3] *= VOX
    lab = make_labels(tpl, aff)
    nb.Nifti1Image(tpl, aff).to_filename(d / "tpl-Test_T1w.nii.gz")
    nb.Nifti1Image(lab, aff).to_filename(d / "atlas-Test_dseg.nii.gz")
    atlas = SimpleNamespace(
        template=d / "tpl-Test_T1w.nii.gz",
        dseg=d / "atlas-Test_dseg.nii.gz",
        brain_mask=None,
        space="MNI152NLin2009cAsym",
    )
    # subject anatomy: template through a smooth warp (point map subject -> template)
    rng = np.random.default_rng(3)
    disp = np.stack([ndimage.gaussian_filter(rng.standard_normal(tpl.shape), 4) for _ in range(3)])
    disp *= 3.0 / np.abs(disp).max()
    disp_fn = [
        (lambda a: (lambda xyz: sample(a, aff, xyz, (xyz.shape[1],), 1)))(disp[k])
        for k in range(3)
    ]

    def subject_to_template(xyz):
        return xyz + np.stack([f(xyz) for f in disp_fn])

    poses = {"baseline": (rotation([3, -2, 2]), np.array([2.0, -3.0, 1.0])),
             "followup": (rotation([-2, 3, -3]), np.array([-3.0, 2.0, 2.0]))}
    files = {"t1w": [], "gre_mag": [], "qsm_mask": [], "truth": []}
    for ses in SESSIONS:
        r, t = poses[ses]

        def scanner_to_template(xyz, r=r, t=t):
            return subject_to_template(np.linalg.inv(r) @ (xyz - t[:, None]))

        t1 = sample(tpl, aff, scanner_to_template(world(tpl.shape, aff)), tpl.shape, 1)
        f = d / f"{ses}_T1w.nii.gz"
        nb.Nifti1Image(add_scalp(t1).astype(np.float32), aff).to_filename(f)
        files["t1w"].append(str(f))
        # GRE: 3x3x3.5 mm, FOV cut inferiorly, shifted, inverted contrast
        g_shape = (56, 66, 40)
        g_aff = np.diag([VOX, VOX, 3.5, 1.0])
        g_aff[:3, 3] = np.array([-84.0, -110.0, -48.0])
        gxyz = scanner_to_template(world(g_shape, g_aff))
        g = sample(tpl, aff, gxyz, g_shape, 1)
        brain = g > 0.05 * tpl.max()
        mag = np.where(brain, 1.5 * tpl.max() - g, 0).astype(np.float32)
        truth = sample(lab.astype(float), aff, gxyz, g_shape, 0).astype(np.int16)
        for key, arr in (("gre_mag", mag), ("qsm_mask", brain.astype(np.uint8)), ("truth", truth)):
            fn = d / f"{ses}_{key}.nii.gz"
            nb.Nifti1Image(arr, g_aff).to_filename(fn)
            files[key].append(str(fn))
    return SimpleNamespace(dir=d, atlas=atlas, files=files)


def _node_names(wf):
    return {n.name for n in wf._graph.nodes()}


def test_build_paths(study):
    lw = init_longitudinal_wf(session_ids=SESSIONS, atlas=study.atlas)
    names = _node_names(lw)
    assert {"subject_template", "atlas_to_template", "template_brain_extraction"} <= names
    assert {"t1w_to_template_baseline", "gre_to_t1w_followup", "labels_to_gre_followup"} <= names
    assert not any(n.startswith("atlas_to_t1w") for n in names)  # SyN once per subject
    assert lw.get_node("outputnode").inputs.mode == "longitudinal"
    assert set(OUTPUT_FIELDS) == set(lw.get_node("outputnode").inputs.copyable_trait_names())

    cs = init_longitudinal_wf(session_ids=SESSIONS, atlas=study.atlas, longitudinal=False)
    names = _node_names(cs)
    assert "subject_template" not in names
    assert {"atlas_to_t1w_baseline", "atlas_to_t1w_followup"} <= names
    assert cs.get_node("outputnode").inputs.mode == "cross-sectional"

    one = init_longitudinal_wf(session_ids=["baseline"], atlas=study.atlas)
    assert one.get_node("outputnode").inputs.mode == "cross-sectional"

    nt = init_longitudinal_wf(
        session_ids=SESSIONS, atlas=study.atlas, sessions_without_t1w=["followup"]
    )
    names = _node_names(nt)
    # only one session has a T1w: cross-sectional for it, template -> GRE for the other
    assert "atlas_to_gre_followup" in names and "atlas_to_t1w_baseline" in names
    assert "gre_to_t1w_followup" not in names
    with pytest.raises(ValueError):
        init_longitudinal_wf(session_ids=SESSIONS, atlas=study.atlas, sessions_without_t1w=["x"])


def dice(a, b, k):
    x, y = a == k, b == k
    return 2 * np.sum(x & y) / max(1, x.sum() + y.sum())


def test_longitudinal_run(study, tmp_path):
    wf = init_longitudinal_wf(
        session_ids=SESSIONS, atlas=study.atlas, template_iterations=2, name="lwf"
    )
    wf.base_dir = str(tmp_path)
    for key in ("t1w", "gre_mag", "qsm_mask"):
        setattr(wf.inputs.inputnode, key, study.files[key])
    wf.inputs.inputnode.gre_brain_mask = study.files["qsm_mask"]
    wf.run(plugin="Linear")
    root = tmp_path / "lwf"

    def out(node, field="out"):
        return getattr(loadpkl(root / node / f"result_{node}.pklz").outputs, field)

    labels = out("collect_labels_gre")
    assert len(labels) == 2
    for i, ses in enumerate(SESSIONS):
        est = np.asarray(nb.load(labels[i]).dataobj)
        truth = np.asarray(nb.load(study.files["truth"][i]).dataobj)
        mask = np.asarray(nb.load(study.files["qsm_mask"][i]).dataobj) > 0
        assert est.shape == truth.shape and est.dtype == np.int16
        assert np.all(est[~mask] == 0)
        truth = np.where(mask, truth, 0)
        d = {k: round(dice(est, truth, k), 3) for k in range(1, 7)}
        print(f"{ses}: Dice per label {d}")
        assert min(d.values()) > 0.7
    xfms = out("collect_xfm_t1w_to_template")
    assert [Path(x).name for x in xfms] == ["from-T1w_to-individual_mode-image_xfm.mat"] * 2
    assert Path(out("atlas_to_template", "fwd_transform")).name == (
        "from-MNI152NLin2009cAsym_to-individual_mode-image_xfm.h5"
    )
    assert Path(out("collect_xfm_gre_to_t1w")[0]).name == "from-MEGRE_to-T1w_mode-image_xfm.mat"
    tpl_labels = nb.load(out("labels_to_template", "out_file"))
    tpl_img = nb.load(out("subject_template", "out_file"))
    assert tpl_labels.shape == tpl_img.shape
    assert set(np.unique(np.asarray(tpl_labels.dataobj))) == set(range(7))
    assert out("collect_xfm_atlas_to_session") == ["", ""]

