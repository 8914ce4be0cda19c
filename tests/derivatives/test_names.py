"""qsmprep.derivatives.names: the entity parser, the name builder and the output folders.

``TODAY`` pins every derivative name of a two-subject example (three sessions of sub-01 on the
longitudinal path, one without a T1w; sub-02 without sessions but with an ``acq-`` entity; two
output spaces), as qsmprep wrote them before the derivatives package existed. A change to the
builder, the entity order or the output specification that renames any output fails here.
"""

import pytest

from qsmprep.derivatives import spec
from qsmprep.derivatives.names import (
    build_name,
    derivative_path,
    entities_dir,
    parse_entities,
    relative_dir,
)
from qsmprep.spaces import parse_output_spaces

SRC = "/data/sub-01/ses-baseline/anat/sub-01_ses-baseline_acq-qsm_run-2_echo-10_part-phase_MEGRE.nii.gz"

#: Names written by qsmprep b289368 (workflows/outputs.py + interfaces/derivatives.build_name)
#: for the example of :func:`example_names`.
TODAY = sorted([
    "sub-01_atlas-DGM_desc-dgmchange_stats.tsv",
    "sub-01_from-MNI152NLin2009cAsym_to-individual_mode-image_xfm.h5",
    "sub-01_from-individual_to-MNI152NLin2009cAsym_mode-image_xfm.h5",
    "sub-01_ses-baseline_atlas-DGM_desc-dgm_stats.tsv",
    "sub-01_ses-baseline_atlas-DGM_dseg.nii.gz",
    "sub-01_ses-baseline_desc-brain_mask.nii.gz",
    "sub-01_ses-baseline_desc-local_field.nii.gz",
    "sub-01_ses-baseline_desc-loglinear_R2starmap.nii.gz",
    "sub-01_ses-baseline_desc-loglinear_T2starmap.nii.gz",
    "sub-01_ses-baseline_desc-tvadmm_Chimap.nii.gz",
    "sub-01_ses-baseline_from-MEGRE_to-T1w_mode-image_xfm.mat",
    "sub-01_ses-baseline_from-T1w_to-individual_mode-image_xfm.mat",
    "sub-01_ses-baseline_space-MNI152NLin2009cAsym_desc-brain_mask.nii.gz",
    "sub-01_ses-baseline_space-MNI152NLin2009cAsym_desc-tvadmm_Chimap.nii.gz",
    "sub-01_ses-baseline_space-MNI152NLin2009cAsym_res-2_desc-brain_mask.nii.gz",
    "sub-01_ses-baseline_space-MNI152NLin2009cAsym_res-2_desc-tvadmm_Chimap.nii.gz",
    "sub-01_ses-followup_atlas-DGM_desc-dgm_stats.tsv",
    "sub-01_ses-followup_atlas-DGM_dseg.nii.gz",
    "sub-01_ses-followup_desc-brain_mask.nii.gz",
    "sub-01_ses-followup_desc-local_field.nii.gz",
    "sub-01_ses-followup_desc-loglinear_R2starmap.nii.gz",
    "sub-01_ses-followup_desc-loglinear_T2starmap.nii.gz",
    "sub-01_ses-followup_desc-tvadmm_Chimap.nii.gz",
    "sub-01_ses-followup_from-MEGRE_to-T1w_mode-image_xfm.mat",
    "sub-01_ses-followup_from-T1w_to-individual_mode-image_xfm.mat",
    "sub-01_ses-followup_space-MNI152NLin2009cAsym_desc-brain_mask.nii.gz",
    "sub-01_ses-followup_space-MNI152NLin2009cAsym_desc-tvadmm_Chimap.nii.gz",
    "sub-01_ses-followup_space-MNI152NLin2009cAsym_res-2_desc-brain_mask.nii.gz",
    "sub-01_ses-followup_space-MNI152NLin2009cAsym_res-2_desc-tvadmm_Chimap.nii.gz",
    "sub-01_ses-notone_atlas-DGM_desc-dgm_stats.tsv",
    "sub-01_ses-notone_atlas-DGM_dseg.nii.gz",
    "sub-01_ses-notone_desc-brain_mask.nii.gz",
    "sub-01_ses-notone_desc-local_field.nii.gz",
    "sub-01_ses-notone_desc-loglinear_R2starmap.nii.gz",
    "sub-01_ses-notone_desc-loglinear_T2starmap.nii.gz",
    "sub-01_ses-notone_desc-tvadmm_Chimap.nii.gz",
    "sub-01_ses-notone_from-MNI152NLin2009cAsym_to-MEGRE_mode-image_xfm.h5",
    "sub-01_ses-notone_space-MNI152NLin2009cAsym_desc-brain_mask.nii.gz",
    "sub-01_ses-notone_space-MNI152NLin2009cAsym_desc-tvadmm_Chimap.nii.gz",
    "sub-01_ses-notone_space-MNI152NLin2009cAsym_res-2_desc-brain_mask.nii.gz",
    "sub-01_ses-notone_space-MNI152NLin2009cAsym_res-2_desc-tvadmm_Chimap.nii.gz",
    "sub-01_space-individual_atlas-DGM_dseg.nii.gz",
    "sub-01_space-individual_desc-template_T1w.nii.gz",
    "sub-02_acq-fast_atlas-DGM_desc-dgm_stats.tsv",
    "sub-02_acq-fast_atlas-DGM_dseg.nii.gz",
    "sub-02_acq-fast_desc-brain_mask.nii.gz",
    "sub-02_acq-fast_desc-local_field.nii.gz",
    "sub-02_acq-fast_desc-loglinear_R2starmap.nii.gz",
    "sub-02_acq-fast_desc-loglinear_T2starmap.nii.gz",
    "sub-02_acq-fast_desc-tvadmm_Chimap.nii.gz",
    "sub-02_acq-fast_from-MEGRE_to-T1w_mode-image_xfm.mat",
    "sub-02_acq-fast_from-MNI152NLin2009cAsym_to-T1w_mode-image_xfm.h5",
    "sub-02_acq-fast_space-MNI152NLin2009cAsym_desc-brain_mask.nii.gz",
    "sub-02_acq-fast_space-MNI152NLin2009cAsym_desc-tvadmm_Chimap.nii.gz",
    "sub-02_acq-fast_space-MNI152NLin2009cAsym_res-2_desc-brain_mask.nii.gz",
    "sub-02_acq-fast_space-MNI152NLin2009cAsym_res-2_desc-tvadmm_Chimap.nii.gz",
])


def _session(sub, ses, t1w=True, acq=None):
    stem = f"sub-{sub}" + (f"_ses-{ses}" if ses else "") + (f"_acq-{acq}" if acq else "")
    return f"/bids/sub-{sub}/anat/{stem}_echo-1_part-phase_MEGRE.nii.gz", t1w


def example_names():
    """Every name :func:`qsmprep.derivatives.spec.expected_names` gives for the example."""
    spaces = parse_output_spaces(("MNI152NLin2009cAsym:res-2", "MNI152NLin2009cAsym"))
    common = dict(inversion="tvadmm", atlas="DGM", atlas_space="MNI152NLin2009cAsym",
                  spaces=spaces)
    paths = spec.expected_names("01", [_session("01", "baseline"), _session("01", "followup"),
                                       _session("01", "notone", t1w=False)],
                                longitudinal=True, **common)
    paths += spec.expected_names("02", [_session("02", None, acq="fast")], longitudinal=False,
                                 **common)
    return paths


def test_names_unchanged():
    """Fails when any output name differs from the pinned list (renamed, added or lost)."""
    assert sorted(p.rsplit("/", 1)[-1] for p in example_names()) == TODAY


def test_folders_follow_from_entities():
    """Fails when a path's folder disagrees with the entities of its own name."""
    for path in example_names():
        folder, name = path.rsplit("/", 1)
        assert folder == relative_dir(name)
        ents = parse_entities(name)
        assert folder == (f"sub-{ents['sub']}/ses-{ents['ses']}/anat" if "ses" in ents
                          else f"sub-{ents['sub']}/anat")


def test_parse_entities():
    ents = parse_entities(SRC)
    assert ents == {"sub": "01", "ses": "baseline", "acq": "qsm", "run": "2", "echo": "10",
                    "part": "phase"}
    assert parse_entities("sub-01.html") == {"sub": "01"}


def test_build_name_drops_echo_part_and_orders_entities():
    name = build_name(SRC, "Chimap", ".nii.gz", desc="tvadmm")
    assert name == "sub-01_ses-baseline_acq-qsm_run-2_desc-tvadmm_Chimap.nii.gz"
    name = build_name(SRC, "stats", ".tsv", desc="dgm", atlas="DGM")
    assert name == "sub-01_ses-baseline_acq-qsm_run-2_atlas-DGM_desc-dgm_stats.tsv"
    name = build_name("sub-02_T1w.nii.gz", "xfm", ".h5", **{"from": "MNI152NLin2009cAsym", "to": "T1w", "mode": "image"})
    assert name == "sub-02_from-MNI152NLin2009cAsym_to-T1w_mode-image_xfm.h5"
    assert build_name(SRC, "mask", ".nii.gz", acq=None, run=None, desc="brain") == "sub-01_ses-baseline_desc-brain_mask.nii.gz"


def test_unknown_source_entities_kept_after_known_ones():
    """pybids' build_path would drop (or refuse) ``inv-``; qsmprep keeps it, in source order."""
    src = "sub-01_inv-2_acq-x_echo-1_part-phase_MEGRE.nii.gz"
    assert build_name(src, "Chimap", ".nii.gz", desc="rts") == "sub-01_acq-x_desc-rts_inv-2_Chimap.nii.gz"


def test_relative_dir():
    assert relative_dir("sub-01_ses-b_desc-x_Chimap.nii.gz") == "sub-01/ses-b/anat"
    assert relative_dir("sub-01_desc-template_T1w.nii.gz") == "sub-01/anat"
    assert relative_dir("sub-01_ses-b_desc-qsm_figure.svg") == "sub-01/figures"
    assert relative_dir("sub-01.html") == ""


@pytest.mark.parametrize("ents, ext, folder", [
    ({"sub": "01", "ses": "b"}, ".nii.gz", "sub-01/ses-b/anat"),
    ({"sub": "01"}, ".tsv", "sub-01/anat"),
    ({"sub": "01", "ses": "b"}, ".svg", "sub-01/figures"),
    ({"sub": "01"}, ".html", ""),
])
def test_entities_dir(ents, ext, folder):
    assert entities_dir(ents, ext) == folder


def test_derivative_path_joins_folder_and_name():
    assert derivative_path(SRC, "Chimap", ".nii.gz", desc="rts") == (
        "sub-01/ses-baseline/anat/sub-01_ses-baseline_acq-qsm_run-2_desc-rts_Chimap.nii.gz")
