"""Dataset-level files of the derivatives folder (never under ``sub-*``).

* ``dataset_description.json`` (:func:`write_derivatives_description`, with ``GeneratedBy``,
  ``SourceDatasets`` and ``DatasetLinks``) and ``README.md`` (:data:`README_TEXT`);
* ``.bidsignore`` (:func:`write_bidsignore`, :data:`BIDSIGNORE_PATTERNS`);
* ``atlas-<Name>_dseg.tsv`` and ``atlas-<Name>_description.json`` (:func:`copy_atlas_table`,
  :func:`write_atlas_description`);
* ``bids:<dataset>:<path>`` URIs (:func:`bids_uri`) used in ``Sources`` sidecar fields.

:func:`write_dataset_files` writes all of them, once per participant-level run. Every file is
replaced atomically (parallel runs share one output folder).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

__all__ = ["CODE_URL", "README_TEXT", "BIDSIGNORE_PATTERNS", "FIELD_IGNORE_PATTERNS",
           "bids_uri", "container_info", "write_derivatives_description", "write_atlas_description",
           "copy_atlas_table", "write_bidsignore", "write_dataset_files"]

#: Where qsmprep's source code lives (``GeneratedBy[].CodeURL``; also the image's OCI label).
CODE_URL = "https://github.com/qsmprep/qsmprep"

#: Patterns written into the derivatives' ``.bidsignore`` (CONVENTIONS.md). gitignore syntax as
#: the Deno BIDS validator reads it: a folder is ignored by its name *without* a trailing slash
#: (``figures`` at any depth, ``/group`` and ``/logs`` at the top); ``figures/`` is not honoured.
BIDSIGNORE_PATTERNS = [
    "*_stats.tsv",
    "*_stats.json",
    "figures",
    "*.html",
    "/logs",
    "*_xfm.*",
    "*_fieldmap-*",
    "*_desc-*field*",
    "*_reliability.*",
    "/group",
    "atlas-*_dseg.tsv",
]

#: Appended by the participant level: the local field map (``*_desc-local_field``) is not a
#: BIDS suffix.
FIELD_IGNORE_PATTERNS = ("*_field.nii.gz", "*_field.json")

README_TEXT = """# qsmprep derivatives

Quantitative susceptibility maps (`*_Chimap.nii.gz`, ppm), brain masks, atlas labels and
per-structure tables (`*_stats.tsv`, ppb) computed by qsmprep from the multi-echo GRE data of the
dataset named in `dataset_description.json` (`DatasetLinks.raw`). Each image has a JSON sidecar
listing every method and parameter used; `logs/CITATION.md` has the methods text and references.
Participant reports: `sub-<label>.html`; group statistics: `group/`.
"""


def bids_uri(path, root, dataset="raw") -> str:
    """``bids:<dataset>:<relative path>`` URI of a file of the dataset at ``root``.

    Parameters
    ----------
    path : str or path-like
        A file inside ``root``.
    root : str or path-like
        The dataset's root folder.
    dataset : str
        Dataset name as given in ``DatasetLinks`` (``raw`` for the input dataset).

    Returns
    -------
    str

    Raises
    ------
    ValueError
        ``path`` is not inside ``root``.

    Examples
    --------
    >>> bids_uri("/data/ds/sub-01/anat/sub-01_T1w.nii.gz", "/data/ds")
    'bids:raw:sub-01/anat/sub-01_T1w.nii.gz'
    """
    rel = Path(path).absolute().relative_to(Path(root).absolute()).as_posix()
    return f"bids:{dataset}:{rel}"


def container_info(environ=None) -> dict | None:
    """``GeneratedBy[].Container`` of this run, or ``None`` outside a container.

    The Dockerfile sets ``QSMPREP_CONTAINER`` to the image name and tag (``qsmprep:<version>``)
    and ``QSMPREP_CONTAINER_TYPE`` to ``docker``. Apptainer/Singularity keep the image's
    environment and add ``APPTAINER_CONTAINER``/``SINGULARITY_CONTAINER``, so an image run there
    is recorded with that type.

    Parameters
    ----------
    environ : mapping or None
        The environment to read (default: ``os.environ``).

    Returns
    -------
    dict or None
        ``{"Type": "docker" | "singularity" | ..., "Tag": "<image>:<tag>"}``.
    """
    environ = os.environ if environ is None else environ
    tag = environ.get("QSMPREP_CONTAINER")
    if not tag:
        return None
    ctype = environ.get("QSMPREP_CONTAINER_TYPE") or "docker"
    if environ.get("APPTAINER_CONTAINER") or environ.get("SINGULARITY_CONTAINER"):
        ctype = "singularity"
    return {"Type": ctype, "Tag": tag}


def _atomic_text(target: Path, text: str) -> Path:
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, target)
    return target


def _atomic_json(target: Path, obj) -> Path:
    return _atomic_text(target, json.dumps(obj, indent=2) + "\n")


def write_derivatives_description(output_dir, bids_dir, name="qsmprep", version=None) -> Path:
    """Write ``output_dir/dataset_description.json`` (and ``README.md`` when absent).

    * ``GeneratedBy``: ``Name``, ``Version``, ``CodeURL`` and, inside a container,
      ``Container`` (:func:`container_info`).
    * ``DatasetLinks.raw``: the input dataset as a path *relative to* ``output_dir`` (BIDS allows
      relative URI references there), so that the ``bids:raw:...`` URIs in ``Sources`` resolve
      and no absolute path of the processing machine is recorded.
    * ``SourceDatasets``: ``[{"URL": "bids:raw:"}]`` plus the raw dataset's ``DatasetDOI`` and
      ``DatasetVersion`` (as ``DOI``/``Version``) when its description has them.

    Existing descriptions are rewritten atomically (parallel runs); a ``README.md`` the user
    edited is kept.

    Parameters
    ----------
    output_dir : str or path-like
        The derivatives folder (created when missing).
    bids_dir : str or path-like
        The raw dataset.
    name : str
        ``GeneratedBy[0].Name``.
    version : str or None
        ``GeneratedBy[0].Version`` (default: the installed qsmprep version).

    Returns
    -------
    pathlib.Path
        The description file.
    """
    from .. import __version__

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    bids_dir = Path(bids_dir).absolute()
    bids_version = "1.10.0"
    raw_desc = bids_dir / "dataset_description.json"
    raw = {}
    if raw_desc.is_file():
        try:
            raw = json.loads(raw_desc.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raw = {}
    raw_name = raw.get("Name") if isinstance(raw, dict) else None
    generated = {
        "Name": name,
        "Version": version or __version__,
        "CodeURL": CODE_URL,
    }
    container = container_info()
    if container:
        generated["Container"] = container
    source = {"URL": "bids:raw:"}
    if isinstance(raw, dict):
        if raw.get("DatasetDOI"):
            source["DOI"] = str(raw["DatasetDOI"])
        if raw.get("DatasetVersion"):
            source["Version"] = str(raw["DatasetVersion"])
    desc = {
        "Name": f"qsmprep derivatives{f' of {raw_name}' if raw_name else ''}",
        "BIDSVersion": bids_version,
        "DatasetType": "derivative",
        "GeneratedBy": [generated],
        "SourceDatasets": [source],
        "DatasetLinks": {"raw": os.path.relpath(bids_dir, output_dir.absolute())},
        "HowToAcknowledge": "Cite qsmprep and the methods listed in logs/CITATION.md.",
    }
    readme = output_dir / "README.md"
    if not readme.exists():  # a README the user edited is kept
        _atomic_text(readme, README_TEXT)
    return _atomic_json(output_dir / "dataset_description.json", desc)


def write_atlas_description(output_dir, atlas) -> Path:
    """Write ``output_dir/atlas-<Name>_description.json`` (BIDS atlas description).

    ``AtlasName``, ``License``, ``Description``, ``Species`` and ``ReferencesAndLinks`` come from
    the atlas folder's ``dataset_description.json`` (its ``Sources``: name, licence, citation of
    every source map); the BIDS validator asks for this file for every ``atlas-<Name>`` image.

    Parameters
    ----------
    output_dir : str or path-like
        The derivatives folder.
    atlas : qsmprep.atlas.Atlas
        Reads ``name``, ``space`` and ``directory``.

    Returns
    -------
    pathlib.Path
        The description file.
    """
    output_dir = Path(output_dir)
    meta = {}
    src = Path(atlas.directory) / "dataset_description.json"
    if src.is_file():
        try:
            meta = json.loads(src.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            meta = {}
    sources = [x for x in meta.get("Sources", []) if isinstance(x, dict)]
    desc = {
        "AtlasName": atlas.name,
        "Description": meta.get("Name") or f"atlas-{atlas.name} ({atlas.space})",
        "License": meta.get("License") or "See the licences of the atlas sources.",
        "Species": "homo sapiens",
        "ReferencesAndLinks": [x["Citation"] for x in sources if x.get("Citation")],
    }
    if sources:
        desc["Sources"] = [{k: v for k, v in x.items() if k in ("Name", "License", "Used for")}
                           for x in sources]
    return _atomic_json(output_dir / f"atlas-{atlas.name}_description.json", desc)


def copy_atlas_table(output_dir, atlas) -> Path:
    """Copy the atlas label table to ``output_dir/atlas-<Name>_dseg.tsv`` (atomically).

    Parameters
    ----------
    output_dir : str or path-like
        The derivatives folder.
    atlas : qsmprep.atlas.Atlas
        Reads ``name`` and ``tsv``.

    Returns
    -------
    pathlib.Path
        The copied table.
    """
    dest = Path(output_dir) / f"atlas-{atlas.name}_dseg.tsv"
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}")
    shutil.copyfile(atlas.tsv, tmp)
    os.replace(tmp, dest)
    return dest


def write_bidsignore(output_dir, extra=()) -> Path:
    """Write (or extend) ``output_dir/.bidsignore`` with qsmprep's non-standard outputs.

    Parameters
    ----------
    output_dir : str or path-like
        The derivatives folder (created when missing).
    extra : iterable of str
        Further patterns, appended after :data:`BIDSIGNORE_PATTERNS`.

    Returns
    -------
    pathlib.Path
        The ``.bidsignore`` file; lines already there are kept, none is repeated.
    """
    from ..bids.layout import read_bidsignore

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    target = output_dir / ".bidsignore"
    existing = read_bidsignore(output_dir) if target.exists() else []
    lines = list(existing)
    for patt in list(BIDSIGNORE_PATTERNS) + list(extra):
        if patt not in lines:
            lines.append(patt)
    tmp = target.with_name(f".bidsignore.{os.getpid()}.tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, target)
    return target


def write_dataset_files(output_dir, bids_dir, atlas) -> list[Path]:
    """Every dataset-level file of a participant-level run, in the order they were always written.

    Parameters
    ----------
    output_dir : str or path-like
        The derivatives folder.
    bids_dir : str or path-like
        The raw dataset.
    atlas : qsmprep.atlas.Atlas
        The atlas of this run.

    Returns
    -------
    list of pathlib.Path
        ``dataset_description.json``, ``.bidsignore``, ``atlas-<Name>_dseg.tsv`` and
        ``atlas-<Name>_description.json``.
    """
    return [write_derivatives_description(output_dir, bids_dir),
            write_bidsignore(output_dir, extra=list(FIELD_IGNORE_PATTERNS)),
            copy_atlas_table(output_dir, atlas),
            write_atlas_description(output_dir, atlas)]
