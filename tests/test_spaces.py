"""--output-spaces: parsing, template grids and the one-step resampling (qsmprep.spaces)."""

import nibabel as nb
import numpy as np
import pytest

from qsmprep.errors import UsageError
from qsmprep.spaces import (
    OutputSpace,
    parse_output_spaces,
    resample_to_space,
    template_grid,
)

ants = pytest.importorskip("ants")

LPS = np.diag([-1.0, -1.0, 1.0])


def test_parse_output_spaces():
    got = parse_output_spaces(["MNI152NLin2009cAsym", "MNI152NLin2009cAsym:res-2",
                               "MNI152NLin2009cAsym:res-2"])
    assert got == (OutputSpace("MNI152NLin2009cAsym"), OutputSpace("MNI152NLin2009cAsym", 2))
    assert got[1].entities == {"space": "MNI152NLin2009cAsym", "res": "2"}
    assert str(got[1]) == "MNI152NLin2009cAsym:res-2"
    for bad, needle in (("MNI152NLin6Asym", "can write"), ("MNI152NLin2009cAsym:res-0", "res-N"),
                        ("MNI152NLin2009cAsym:res-2mm", "modifier"),
                        ("MNI152NLin2009cAsym:den-91k", "modifier")):
        with pytest.raises(UsageError, match=needle) as exc:
            parse_output_spaces([bad])
        assert exc.value.exit_code == 64
    # a custom atlas in another space cannot reach MNI152NLin2009cAsym
    with pytest.raises(UsageError, match="atlas in use"):
        parse_output_spaces(["MNI152NLin2009cAsym"], atlas_space="MyTemplate")


def test_cli_accepts_output_spaces(tmp_path):
    from qsmprep.cli.parser import get_parser

    ns = get_parser().parse_args([str(tmp_path), str(tmp_path / "out"), "participant",
                                  "--output-spaces", "MNI152NLin2009cAsym:res-2"])
    assert ns.output_spaces == ["MNI152NLin2009cAsym:res-2"]


def test_template_grid_matches_templateflow_res2():
    """The built-in template sits on TemplateFlow's res-1 grid of MNI152NLin2009cAsym
    (193 x 229 x 193, 1 mm, first voxel centre at (-96, -132, -78) mm); res-2 must give
    TemplateFlow's res-2 grid (97 x 115 x 97, 2 mm, same first voxel centre)."""
    aff1 = np.array([[1.0, 0, 0, -96], [0, 1, 0, -132], [0, 0, 1, -78], [0, 0, 0, 1]])
    aff2, shape2 = template_grid(aff1, (193, 229, 193), 2)
    assert shape2 == (97, 115, 97)
    assert np.allclose(aff2, [[2, 0, 0, -96], [0, 2, 0, -132], [0, 0, 2, -78], [0, 0, 0, 1]])
    # no resolution: the template grid itself; a flipped axis keeps its direction
    assert template_grid(aff1, (193, 229, 193))[1] == (193, 229, 193)
    flipped = aff1 @ np.diag([-1.0, 1, 1, 1])
    aff3, shape3 = template_grid(flipped, (10, 10, 10), 3)
    assert shape3 == (4, 4, 4) and aff3[0, 0] == -3.0


def _cube_image(path, shape, voxel, origin, centre_mm, half_mm, value):
    aff = np.diag([voxel, voxel, voxel, 1.0])
    aff[:3, 3] = origin
    ijk = np.indices(shape).reshape(3, -1).astype(float)
    xyz = (aff[:3, :3] @ ijk + aff[:3, 3:4]).reshape((3,) + shape)
    inside = np.all(np.abs(xyz - np.reshape(centre_mm, (3, 1, 1, 1))) <= half_mm, axis=0)
    data = np.where(inside, value, 0.0).astype(np.float32)
    nb.Nifti1Image(data, aff).to_filename(path)
    return data, aff


def _translation(path, t_ras):
    tx = ants.create_ants_transform(transform_type="AffineTransform", dimension=3,
                                    matrix=np.eye(3), translation=LPS @ np.asarray(t_ras, float))
    ants.write_transform(tx, str(path))
    return str(path)


def test_resample_to_space_applies_the_chain_in_its_direction(tmp_path):
    """A cube on a 2 mm 'GRE' grid, two translations (template->T1w, T1w->GRE, each mapping
    reference points to moving points, as the registrations write them): in the template the
    cube must sit at centre - t1 - t2 (inverted transforms would put it at centre + t1 + t2),
    keep its value inside, and lie on the requested grid. The order of a chain is checked by
    test_registration.py::test_compose_chain_equals_sequential (same compose_and_apply)."""
    centre, t1, t2 = np.array([4.0, -6.0, 8.0]), np.array([6.0, 0.0, -4.0]), np.array([0.0, 4.0, 2.0])
    _cube_image(tmp_path / "gre.nii.gz", (24, 24, 24), 2.0, [-24, -24, -24], centre, 8.0, 0.1)
    _cube_image(tmp_path / "tpl.nii.gz", (61, 61, 61), 1.0, [-30, -30, -30], [0, 0, 0], 20, 1.0)
    x1 = _translation(tmp_path / "tpl_to_t1w.mat", t1)
    x2 = _translation(tmp_path / "t1w_to_gre.mat", t2)
    out = resample_to_space(tmp_path / "gre.nii.gz", tmp_path / "tpl.nii.gz", [x1, x2],
                            tmp_path / "out.nii.gz", resolution_mm=2)
    img = nb.load(out)
    aff, shape = template_grid(nb.load(tmp_path / "tpl.nii.gz").affine, (61, 61, 61), 2)
    assert img.shape == shape and np.allclose(img.affine, aff)
    data = np.asarray(img.dataobj)
    ijk = np.argwhere(data > 0.05).T.astype(float)
    xyz = aff[:3, :3] @ ijk + aff[:3, 3:4]
    expected = centre - t1 - t2
    assert np.allclose(xyz.mean(axis=1), expected, atol=0.6), (xyz.mean(axis=1), expected)
    assert not np.allclose(xyz.mean(axis=1), centre + t1 + t2, atol=2.0)
    core = np.linalg.norm(xyz - expected[:, None], ord=np.inf, axis=0) <= 5.0
    assert np.allclose(data[data > 0.05][core], 0.1, atol=1e-4)
    assert not (tmp_path / ".grid_out.nii.gz").exists()
    with pytest.raises(ValueError, match="at least one transform"):
        resample_to_space(tmp_path / "gre.nii.gz", tmp_path / "tpl.nii.gz", ["", ""],
                          tmp_path / "x.nii.gz")


def _subject_wf(tmp_path, t1w_per_session, longitudinal=True):
    """Build (not run) a participant workflow with --output-spaces for a synthetic selection."""
    from types import SimpleNamespace

    from qsmprep.atlas import load_atlas
    from qsmprep.qsm.pipeline import QSMOptions
    from qsmprep.workflows.base import init_single_subject_wf

    def touch(name):
        p = tmp_path / name
        p.write_bytes(b"")
        return str(p)

    sessions = []
    for k, has_t1w in enumerate(t1w_per_session):
        ses = f"s{k}"
        stem = f"sub-01_ses-{ses}_echo-1_part-"
        sessions.append({
            "session": ses, "t1w": touch(f"sub-01_ses-{ses}_T1w.nii.gz") if has_t1w else None,
            "echo_times": [0.005, 0.01], "b0": 3.0, "mag": [touch(stem + "mag_MEGRE.nii.gz")],
            "phase": [touch(stem + "phase_MEGRE.nii.gz")], "sources": [], "warnings": [],
        })
    config = SimpleNamespace(
        longitudinal=longitudinal, registration_resolution=None, syn_metric="CC", omp_nthreads=1,
        random_seed=1, roi_erosion=0, roi_min_reliability=None, output_dir=tmp_path / "out",
        mem_gb=4.0, nprocs=1, output_spaces=("MNI152NLin2009cAsym:res-2",))
    return init_single_subject_wf(subject="01", sessions=sessions, config=config,
                                  atlas=load_atlas(None), options=QSMOptions())


def _chain_sources(wf, tag):
    """Which outputnode fields of the longitudinal workflow feed the session's transform chain."""
    chain = wf.get_node(f"chain_to_atlas_{tag}")
    long_wf = wf.get_node("longitudinal_wf")
    edges = wf._graph.get_edge_data(long_wf, chain)["connect"]
    return sorted(((src if isinstance(src, str) else src[0]), dst) for src, dst in edges)


@pytest.mark.parametrize("case", ["longitudinal", "cross-sectional", "no-t1w"])
def test_output_space_chain_per_registration_path(tmp_path, case):
    """The Chimap goes GRE -> ... -> atlas through the transforms of its session's path,
    nearest the template first (in1), and is published with space/res entities."""
    if case == "longitudinal":
        wf = _subject_wf(tmp_path, [True, True])
        want = [("outputnode.xfm_gre_to_t1w", "in3"), ("outputnode.xfm_t1w_to_template", "in2"),
                ("outputnode.xfm_template_to_atlas", "in1")]
    elif case == "cross-sectional":
        wf = _subject_wf(tmp_path, [True])
        want = [("outputnode.xfm_gre_to_t1w", "in2"), ("outputnode.xfm_session_to_atlas", "in1")]
    else:
        wf = _subject_wf(tmp_path, [True, False], longitudinal=False)
        assert _chain_sources(wf, "s0") == [("outputnode.xfm_gre_to_t1w", "in2"),
                                            ("outputnode.xfm_session_to_atlas", "in1")]
        want = [("outputnode.xfm_session_to_atlas", "in1")]
    tag = "s1" if case == "no-t1w" else "s0"
    assert _chain_sources(wf, tag) == want
    sink = wf.get_node(f"ds_{tag}_wf.ds_chimap_MNI152NLin2009cAsym_res2")
    ents = dict(sink.inputs.entities)
    assert ents.pop("desc") and ents == {"space": "MNI152NLin2009cAsym", "res": "2"}
    assert sink.inputs.suffix == "Chimap"
    assert wf.get_node(f"ds_{tag}_wf.ds_mask_MNI152NLin2009cAsym_res2").inputs.suffix == "mask"


def test_spatial_reference_only_on_templateflow_grids():
    """A TemplateFlow URL is named only where the output grid is TemplateFlow's (res-1/res-2 of
    a template on its 1 mm grid); a shifted template or another resolution gets none."""
    from qsmprep.spaces import spatial_reference

    aff = np.array([[1.0, 0, 0, -96], [0, 1, 0, -132], [0, 0, 1, -78], [0, 0, 0, 1]])
    shape = (193, 229, 193)
    sp = OutputSpace("MNI152NLin2009cAsym", 2)
    assert spatial_reference(sp, aff, shape).endswith(
        "tpl-MNI152NLin2009cAsym/tpl-MNI152NLin2009cAsym_res-02_T1w.nii.gz")
    assert spatial_reference(OutputSpace("MNI152NLin2009cAsym"), aff, shape).endswith("_res-01_T1w.nii.gz")
    assert spatial_reference(OutputSpace("MNI152NLin2009cAsym", 3), aff, shape) is None
    shifted = aff.copy()
    shifted[0, 3] += 1
    assert spatial_reference(sp, shifted, shape) is None
