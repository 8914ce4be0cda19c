"""Participant report: self-contained page, legend/units/orientation marks, QC flags, escaping."""

from __future__ import annotations

import re

import nibabel as nb
import numpy as np
import pandas as pd
import pytest

from qsmprep.qsm.pipeline import QSMOptions
from qsmprep.reports import qc
from qsmprep.reports.participant import build_report

AFF = np.diag([2.0, 2.0, 2.0, 1.0])
AFF[:3, 3] = [-20, -24, -18]


def _save(path, data):
    nb.Nifti1Image(np.asarray(data), AFF).to_filename(str(path))
    return str(path)


def _stats(n_voxels, extra=None):
    df = pd.DataFrame({"index": [1, 2], "name": ["Left_Caudate", "Right_<b>Caudate</b>"],
                       "structure": ["caudate", "caudate"], "hemisphere": ["left", "right"],
                       "mean_ppb": [55.0, 57.0], "median_ppb": [54.0, 56.0],
                       "sd_ppb": [9.0, 8.0], "n_voxels": n_voxels,
                       "volume_mm3": [8.0 * n for n in n_voxels]})
    for k, v in (extra or {}).items():
        df[k] = v
    return df


@pytest.fixture()
def session_files(tmp_path):
    rng = np.random.default_rng(3)
    shape = (20, 24, 18)
    mask = np.zeros(shape, np.uint8)
    mask[3:17, 3:21, 3:15] = 1
    chi = (rng.normal(0.0, 0.02, shape) * mask).astype(np.float32)
    lab = np.zeros(shape, np.int16)
    lab[6:9, 10:14, 8:11] = 1
    lab[11:14, 10:14, 8:11] = 2
    mag = np.stack([mask * 100.0 + rng.normal(0, 1, shape) for _ in range(3)], -1)
    stats = _stats([36, 12], {"qc_mi": [0.41, 0.41], "qc_flagged": [1, 1],
                              "qc_reasons": ["MI 0.41 < 0.5", "MI 0.41 < 0.5"]})
    stats.to_csv(tmp_path / "stats.tsv", sep="\t", index=False)
    table = pd.DataFrame({"index": [1, 2], "name": ["Left_Caudate", "Right_Caudate"],
                          "color": ["#7ab8e6", "#4a90c8"]})
    table.to_csv(tmp_path / "atlas-DGM_dseg.tsv", sep="\t", index=False)
    sidecar = {"BrainMask": {"Method": "magnitude"}, "EchoCombination": {"Method": "nonlinear"},
               "PhaseUnwrapping": {"Method": "romeo"},
               "BackgroundFieldRemoval": {"Method": "vsharp"},
               "DipoleInversion": {"Method": "medi"}, "Reference": {"reference": "whole_brain_mean"},
               "QualityFlags": [{"step": "dipole inversion (medi)", "severity": "warning",
                                 "message": "stopped at 50/50 iterations <script>x</script>"},
                                {"step": "dipole inversion", "severity": "error",
                                 "message": "12 non-finite voxels set to 0"}]}
    return {"session": "baseline", "chi": _save(tmp_path / "chi.nii.gz", chi),
            "mask": _save(tmp_path / "mask.nii.gz", mask),
            "brain_mask": _save(tmp_path / "bmask.nii.gz", mask),
            "mag": _save(tmp_path / "mag.nii.gz", mag.astype(np.float32)),
            "labels": _save(tmp_path / "lab.nii.gz", lab), "stats": str(tmp_path / "stats.tsv"),
            "sidecar": sidecar, "table": str(tmp_path / "atlas-DGM_dseg.tsv")}


def test_report_is_self_contained_with_legend_units_marks_and_flags(tmp_path, session_files):
    s = dict(session_files)
    table = s.pop("table")
    out = tmp_path / "out"
    report, figures = build_report("01<i>", [s], out, label_table=table,
                                   warnings=["odd <warning>"])
    page = open(report, encoding="utf-8").read()
    assert figures == [] and sorted(p.name for p in out.iterdir()) == ["sub-01<i>.html"]
    # self-contained: inline SVG, no reference to another file
    assert page.count("<svg") == 2  # mask + QSM figure
    links = re.findall(r"(?:src|href)=[\"']([^\"']*)", page)
    assert links and all(u.startswith(("#", "data:image/png;base64,")) for u in links), links
    assert "<img" not in page
    # legend with structure names in the contour colours, unit on the colour bar, L/R marks
    assert "Left_Caudate" in page and "Right_Caudate" in page
    assert "susceptibility χ (ppm)" in page
    svg = page[page.index("<svg"):page.index("</svg>")]
    for mark in (">L<", ">R<", ">A<", ">P<", ">S<", ">I<"):
        assert mark in svg, mark
    # every flag: registration, small ROI (12 < 20 voxels), solver, non-finite, consensus
    assert "MI 0.41 &lt; 0.5" in page
    assert "12 voxels, below the 20-voxel threshold" in page
    assert "stopped at 50/50 iterations &lt;script&gt;" in page
    assert "12 non-finite voxels" in page
    assert "departs from: Build the brain mask from magnitude and phase quality" in page
    assert "qc_mi" in page
    # user text escaped everywhere
    assert "<script>" not in page and "<i>" not in page
    assert "sub-01&lt;i&gt;" in page and "odd &lt;warning&gt;" in page
    assert "Right_&lt;b&gt;Caudate&lt;/b&gt;" in page and "<b>Caudate" not in page


def test_report_without_flags_says_so(tmp_path, session_files):
    s = dict(session_files)
    table = s.pop("table")
    _stats([40, 40]).to_csv(s["stats"], sep="\t", index=False)
    s["sidecar"] = {"BrainMask": {"Method": "phase-quality"}, "DipoleInversion": {"Method": "medi"},
                    "QualityFlags": []}
    page = open(build_report("01", [s], tmp_path, label_table=table)[0]).read()
    assert "No quality flag." in page and "no flag" in page
    assert "not recorded in the stats table" in page  # no qc_* columns: not assessed
    assert "Dipole inversion:" not in page  # nothing recorded, nothing shown


def test_report_shows_the_inversion_stop_and_field_residual(tmp_path, session_files):
    """The sidecar's StoppedBy and FieldResidual are listed under the session's quality flags."""
    s = dict(session_files)
    table = s.pop("table")
    s["sidecar"] = {"DipoleInversion": {
        "Method": "medi", "Iterations": 50, "MaxIterations": 50, "FinalRelativeChange": 0.0128,
        "Converged": False, "StoppedBy": "iteration cap",
        "FieldResidual": {"RMSOverNoise": 3.114, "WarnAbove": 10.0}}, "QualityFlags": []}
    page = open(build_report("01", [s], tmp_path, label_table=table)[0]).read()
    assert ("Dipole inversion: medi stopped by its iteration cap after 50 iterations (last "
            "relative change 0.0128); field residual 3.11 x the field noise (flagged above 10)."
            in page)


def test_small_roi_threshold_and_empty_label():
    flags = qc.small_roi_flags(_stats([19, 0]))
    assert [f["severity"] for f in flags] == ["warning", "error"]
    assert qc.small_roi_flags(_stats([20, 500])) == []


def test_registration_flags_only_when_flagged():
    flags, metrics = qc.registration_flags(_stats([30, 30], {"qc_dice": [0.8, 0.8],
                                                             "qc_flagged": [0, 0]}))
    assert flags == [] and metrics == {"qc_dice": 0.8}
    assert qc.registration_flags(_stats([30, 30]))[0] == []  # no column: not flagged


def test_consensus_flags_follow_the_sidecar_methods():
    side = {"BrainMask": {"Method": "phase-quality"}, "EchoCombination": {"Method": "nonlinear"},
            "PhaseUnwrapping": {"Method": "laplacian"},
            "BackgroundFieldRemoval": {"Method": "vsharp"}, "DipoleInversion": {"Method": "tkd"},
            "Reference": {"reference": "none"}}
    opts = qc.options_from_sidecar(side)
    assert opts == QSMOptions(masking="phase-quality", combination="nonlinear",
                              unwrapping="laplacian", bf_removal="vsharp", inversion="tkd",
                              reference="none")
    msgs = " ".join(f["message"] for f in qc.consensus_flags(side))
    assert "non-Laplacian" in msgs and "sparsity" in msgs and "reference region" in msgs
    assert "magnitude and phase quality" not in msgs
    assert qc.consensus_flags({}) == []


def test_change_table_is_wrapped_and_compact(tmp_path, session_files):
    s = dict(session_files)
    table = s.pop("table")
    change = pd.DataFrame({"index": [1], "name": ["Left_Caudate"], "structure": ["caudate"],
                           "hemisphere": ["left"], "baseline_session": ["baseline"],
                           "followup_session": ["followup"], "baseline_mean_ppb": [50.0],
                           "followup_mean_ppb": [60.0], "change_mean_ppb": [10.0],
                           "baseline_median_ppb": [50.0], "followup_median_ppb": [60.0],
                           "change_median_ppb": [10.0], "baseline_n_voxels": [30],
                           "followup_n_voxels": [31]})
    change.to_csv(tmp_path / "change.tsv", sep="\t", index=False)
    page = open(build_report("01", [s], tmp_path / "o", label_table=table,
                             change_tsv=str(tmp_path / "change.tsv"))[0]).read()
    part = page[page.index("Longitudinal change"):]
    assert "<div class='tablewrap'>" in part and ".tablewrap{max-width:100%;overflow-x:auto}" in page
    header = part[part.index("<thead>"):part.index("</thead>")]
    assert header.count("<th>") == 7  # compact: 7 of the 14 columns
    assert "baseline_session" not in header and "<td>10.0</td>" in part


def test_figures_drawn_in_threads_give_the_same_page(tmp_path, session_files):
    """Two sessions, a template and a change table (seven figures) drawn in one and in three
    threads: the same bytes (each SVG keeps its own id salt, the order is the page's)."""
    s = dict(session_files)
    table = s.pop("table")
    follow = dict(s, session="followup")
    change = pd.DataFrame({"index": [1, 2], "name": ["Left_Caudate", "Right_Caudate"],
                           "baseline_session": ["baseline"] * 2, "followup_session": ["followup"] * 2,
                           "baseline_mean_ppb": [50.0, 52.0], "followup_mean_ppb": [60.0, 51.0],
                           "change_mean_ppb": [10.0, -1.0], "change_median_ppb": [10.0, -1.0],
                           "baseline_n_voxels": [36, 36], "followup_n_voxels": [36, 36]})
    change.to_csv(tmp_path / "change.tsv", sep="\t", index=False)
    kw = dict(label_table=table, change_tsv=str(tmp_path / "change.tsv"),
              template=s["mag"], labels_template=s["labels"])
    sessions = [dict(s, t1w=s["mag"], labels_t1w=s["labels"]), dict(follow)]
    one = open(build_report("01", sessions, tmp_path / "t1", n_threads=1, **kw)[0], "rb").read()
    three = open(build_report("01", sessions, tmp_path / "t3", n_threads=3, **kw)[0], "rb").read()
    assert one.count(b"<svg") == 7
    assert three == one
    # no id occurs twice on the page (matplotlib's group ids such as figure_1 are prefixed
    # per figure, as are the salted hashes of clip paths and images), and every reference
    # points to an id of the page
    ids = re.findall(rb'\sid="([^"]+)"', one)
    assert len(ids) > 7 * 5 and len(ids) == len(set(ids))
    refs = set(re.findall(rb"url\(#([^)]+)\)", one)) | set(re.findall(rb'href="#([^"]+)"', one))
    assert refs and refs <= set(ids)


def test_display_range_is_the_percentiles_of_the_nonzero_voxels(tmp_path):
    from qsmprep.reports.figures import ortho_figure

    rng = np.random.default_rng(5)
    data = rng.normal(100.0, 30.0, (17, 19, 13)).astype(np.float32)
    data[:3] = 0.0
    data[5, 5, 5] = np.nan
    fig = ortho_figure(_save(tmp_path / "img.nii.gz", data))
    vals = data[np.isfinite(data) & (data != 0)]
    norm = fig.axes[0].images[0].norm
    assert norm.vmin == float(np.percentile(vals, 1))
    assert norm.vmax == float(np.percentile(vals, 99.5))


def test_change_section_and_summary_show_the_orientation_flag(tmp_path, session_files):
    s = dict(session_files)
    table = s.pop("table")
    pages = {}
    for deg, flags in ((6.2, [0, 1]), (1.0, [0, 0])):
        change = pd.DataFrame({"index": [1, 9], "name": ["Left_Caudate", "Left_SubstantiaNigra"],
                               "structure": ["caudate", "substantia_nigra"],
                               "hemisphere": ["left", "left"],
                               "baseline_session": ["baseline"] * 2,
                               "followup_session": ["followup"] * 2,
                               "baseline_mean_ppb": [50.0, 100.0], "followup_mean_ppb": [60.0, 95.0],
                               "change_mean_ppb": [10.0, -5.0], "change_median_ppb": [10.0, -5.0],
                               "baseline_n_voxels": [30, 30], "followup_n_voxels": [31, 30],
                               "b0_angle_deg": [deg, deg], "orientation_flagged": flags})
        change.to_csv(tmp_path / f"change{deg}.tsv", sep="\t", index=False)
        pages[deg] = open(build_report("01", [s], tmp_path / f"o{deg}", label_table=table,
                                       change_tsv=str(tmp_path / f"change{deg}.tsv"))[0]).read()
    flagged = pages[6.2]
    summary = flagged[flagged.index("Quality control summary"):flagged.index("Longitudinal change")]
    assert "head orientation to B0 changed by 6.2°" in summary
    part = flagged[flagged.index("Longitudinal change"):]
    assert "<p class='warn'>" in part and "Left_SubstantiaNigra may carry an orientation bias" in part
    assert "<th>orientation flag</th>" in part
    calm = pages[1.0]
    assert "changed by 1.0°" in calm and "no flag." in calm and "<p class='warn'>" not in calm
