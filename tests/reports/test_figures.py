"""QC figures (qsmprep.reports.figures): cut coordinates, contour colours, legend, marks and
the change plot, read back from the files and figures produced (not by file size)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import matplotlib.image as mpimg
import nibabel as nb
import numpy as np
import pandas as pd
import pytest

from qsmprep import roi
from qsmprep.reports import figures

SVG = "{http://www.w3.org/2000/svg}"
AFF = np.diag([2.0, 2.0, 2.0, 1.0])
AFF[:3, 3] = [-31.0, -31.0, -21.0]  # voxel (15.5, 15.5, 10.5) is the world origin
SHAPE = (32, 32, 22)
TABLE = pd.DataFrame({"index": [1, 2], "name": ["Left_Caudate", "Right_Caudate"],
                      "structure": ["caudate", "caudate"], "hemisphere": ["left", "right"],
                      "color": ["#ff0000", "#00ff00"]})


@pytest.fixture
def images(tmp_path):
    """A bright ellipsoid 'brain' with a left (label 1) and a right (label 2) box."""
    ijk = np.indices(SHAPE).reshape(3, -1).T
    xyz = nb.affines.apply_affine(AFF, ijk).reshape(*SHAPE, 3)
    brain = ((xyz / [28.0, 28.0, 18.0]) ** 2).sum(-1) < 1
    anat = np.where(brain, 100.0 + xyz[..., 2], 0.0).astype(np.float32)  # 82..118 inside
    lab = np.zeros(SHAPE, np.int16)
    lab[6:10, 12:18, 8:12] = 1     # x = -19..-13 mm: left (RAS)
    lab[20:26, 12:18, 8:12] = 2    # x = 9..19 mm: right
    nb.Nifti1Image(anat, AFF).to_filename(tmp_path / "anat.nii.gz")
    nb.Nifti1Image(lab, AFF).to_filename(tmp_path / "lab.nii.gz")
    return tmp_path / "anat.nii.gz", tmp_path / "lab.nii.gz", lab


def test_dgm_cut_coords_hand_values(images, tmp_path):
    """y, z: centre of mass of all labels; x: that of the voxels left of it.

    Fails if the sagittal cut goes through the midline (or the right hemisphere), or if the
    voxel -> world conversion is off.
    """
    _, lab_file, lab = images
    xyz = nb.affines.apply_affine(AFF, np.argwhere(lab > 0))
    centre = xyz.mean(axis=0)
    left_x = xyz[xyz[:, 0] < centre[0], 0].mean()
    assert figures.dgm_cut_coords(lab_file) == pytest.approx((left_x, centre[1], centre[2]))
    # by hand: left box x = -19..-13 mm (96 voxels), right box 9..19 mm (144): centre x = 2 mm,
    # so the sagittal cut is the left box's mean x
    assert left_x == pytest.approx(-16.0) and centre[0] == pytest.approx(2.0)
    # no label: the volume centre
    nb.Nifti1Image(np.zeros(SHAPE, np.int16), AFF).to_filename(tmp_path / "empty.nii.gz")
    assert figures.dgm_cut_coords(tmp_path / "empty.nii.gz") == pytest.approx((0.0, 0.0, 0.0))


def _has_colour(rgb, colour, tol=0.08):
    target = np.array([int(colour[k:k + 2], 16) / 255 for k in (1, 3, 5)])
    return bool((np.abs(rgb - target).max(axis=-1) < tol).any())


def test_contour_png_draws_each_label_in_its_table_colour(images, tmp_path):
    """Both labels' contours appear in the colours of the atlas table, on a black page.

    Fails if a label is not drawn, if colours stop coming from the table's ``color`` column,
    or if the figure is written blank.
    """
    anat, lab_file, _ = images
    png = figures.plot_label_contours(anat, lab_file, tmp_path / "c.png", label_table=TABLE)
    rgb = mpimg.imread(png)[..., :3]
    assert _has_colour(rgb, "#ff0000") and _has_colour(rgb, "#00ff00")
    assert not _has_colour(rgb, "#0000ff")  # control: a colour nobody drew
    black = (rgb.max(axis=-1) < 0.05).mean()
    grey = ((rgb.max(axis=-1) > 0.3) & (np.ptp(rgb, axis=-1) < 0.02)).mean()
    assert 0.2 < black < 0.95 and grey > 0.02  # background and the (grey) anatomy both shown
    # without a colour column the fallback palette is used instead
    png2 = figures.plot_label_contours(anat, lab_file, tmp_path / "d.png",
                                       label_table=TABLE.drop(columns="color"))
    assert not _has_colour(mpimg.imread(png2)[..., :3], "#ff0000")


def _texts(svg):
    root = ET.fromstring(svg)
    return root, ["".join(t.itertext()).strip() for t in root.iter(f"{SVG}text")]


def test_ortho_svg_text_legend_marks_and_salted_ids(images):
    """Inline SVG keeps its text as text: orientation marks on each of the three panels, the
    legend names each label, the colour bar names its unit; referenced ids differ between two
    figures (salt).

    Fails if text is turned into paths (the page could not be searched or read by screen
    readers), a mark or a legend entry is lost, or two figures on one page share ids.
    """
    anat, lab_file, _ = images

    def svg(salt):
        fig = figures.ortho_figure(anat, lab_file, label_table=TABLE,
                                   cbar_label="susceptibility (ppm)")
        return figures.figure_svg(fig, salt=salt)

    root, texts = _texts(svg("a"))
    assert root.tag == f"{SVG}svg"
    for mark, count in (("L", 2), ("R", 2), ("A", 2), ("P", 2), ("S", 2), ("I", 2)):
        assert texts.count(mark) == count, (mark, texts)  # each on two of the three panels
    assert {"Left_Caudate", "Right_Caudate", "susceptibility (ppm)"} <= set(texts)
    # ids that the markup refers to (clip paths, reused glyphs/markers) must not collide
    # between two figures inlined in one page, or one figure would clip/draw with the other's
    refs_a = _referenced_ids(svg("a"))
    refs_b = _referenced_ids(svg("b"))
    assert refs_a and not refs_a & refs_b


def _referenced_ids(svg):
    return set(re.findall(r"url\(#([^)]+)\)", svg)) | set(re.findall(r'href="#([^"]+)"', svg))


def test_change_plot_values(tmp_path):
    """The change plot shows each label's baseline and follow-up means and their difference.

    Fails if a line or bar is drawn from the wrong column or label, or if the sessions are
    swapped on the axis; the SVG written is well-formed.
    """
    lab = np.zeros((10, 10, 10), np.int16)
    lab[1:5, 1:5, 1:5], lab[5:9, 5:9, 5:9] = 1, 2
    chi = {"baseline": np.where(lab == 1, 0.060, 0.040),
           "followup": np.where(lab == 1, 0.070, 0.035)}
    stats = {s: roi.roi_statistics(c, lab, TABLE, (1.0, 1.0, 1.0)) for s, c in chi.items()}
    change = roi.longitudinal_change(stats, "baseline", "followup")
    fig = figures.plot_change(change, None, label_table=TABLE)
    per_label, bars = fig.axes
    lines = {ln.get_label(): list(ln.get_ydata()) for ln in per_label.get_lines()}
    assert lines["Left_Caudate"] == pytest.approx([60.0, 70.0])
    assert lines["Right_Caudate"] == pytest.approx([40.0, 35.0])
    assert [t.get_text() for t in per_label.get_xticklabels()] == ["baseline", "followup"]
    widths = [p.get_width() for p in bars.patches]
    assert widths == pytest.approx([10.0, -5.0])
    assert [t.get_text() for t in bars.get_yticklabels()] == ["Left_Caudate", "Right_Caudate"]
    assert bars.get_xlabel() == "followup - baseline (ppb)"
    svg = figures.plot_change(change, tmp_path / "c.svg", label_table=TABLE)
    assert ET.parse(svg).getroot().tag == f"{SVG}svg"


def test_image_cache_reads_each_file_version_once(tmp_path, monkeypatch):
    from qsmprep.interfaces import _io

    path = tmp_path / "img.nii.gz"
    nb.save(nb.Nifti1Image(np.arange(24, dtype=np.float32).reshape(2, 3, 4), np.eye(4)), path)
    reads = []
    real_open = _io.open_image
    monkeypatch.setattr(_io, "open_image", lambda f: reads.append(f) or real_open(f))

    figures._load_ras(path)
    figures._load_ras(path)
    assert len(reads) == 2  # outside the block: no cache
    with figures.image_cache():
        a, aff, _ = figures._load_ras(path)
        b, _, _ = figures._load_ras(str(path))
        assert len(reads) == 3 and a is b
        assert not a.flags.writeable and not aff.flags.writeable
        # a rewritten file (new size and mtime) is read again
        nb.save(nb.Nifti1Image(np.ones((2, 3, 5), np.float32), np.eye(4)), path)
        c, _, _ = figures._load_ras(path)
        assert len(reads) == 4 and c.shape == (2, 3, 5)
    assert figures._CACHE is None
    np.testing.assert_array_equal(figures._load_ras(path)[0], c)
