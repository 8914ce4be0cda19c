"""BIDS-derivatives file names: the one entity parser and the one name builder of qsmprep.

Every derived name is the source file's entities (minus ``echo`` and ``part``), updated with the
output's own entities, in :data:`ENTITY_ORDER`, then ``_<suffix><extension>``; the folder
(``sub-<l>[/ses-<l>]/anat``, ``sub-<l>/figures`` or the top level) follows from the same
entities (:func:`entities_dir`), never from re-reading the name just built.

Why not pybids' ``build_path``: its path patterns name a fixed list of entities and, with
``strict=True``, refuse a source entity that is not in the pattern (with ``strict=False`` they
silently drop it). qsmprep's names keep any further entity of the source (e.g. ``inv-``,
``flip-``, ``mt-``), after the known ones and in the source's order, so that two acquisitions of
one session never collide; a pattern list cannot express that order. The builder here is a few
lines and its output is pinned by ``tests/derivatives/test_names.py``.
"""

from __future__ import annotations

import os

__all__ = ["ENTITY_ORDER", "DROPPED", "parse_entities", "build_name", "entities_dir",
           "relative_dir", "derivative_path"]

#: BIDS entity order used for derived names (the subset relevant to qsmprep).
ENTITY_ORDER = ("sub", "ses", "acq", "rec", "run", "from", "to", "mode", "space", "atlas", "res",
                "desc")
#: Entities of the raw MEGRE name that derived names drop.
DROPPED = ("echo", "part")


def parse_entities(fname) -> dict:
    """Key-value entities of a BIDS file name (suffix and extension excluded).

    Parameters
    ----------
    fname : str or path-like
        A file name or path; only the base name is read.

    Returns
    -------
    dict
        ``{short entity name: label}`` in the order of the name (e.g. ``{"sub": "01"}``).

    Examples
    --------
    >>> parse_entities("sub-01_ses-b_echo-2_part-phase_MEGRE.nii.gz")
    {'sub': '01', 'ses': 'b', 'echo': '2', 'part': 'phase'}
    """
    base = os.path.basename(str(fname))
    stem = base.split(".")[0]
    parts = stem.split("_")
    out = {}
    for p in parts[:-1] if "-" not in parts[-1] else parts:
        if "-" in p:
            k, v = p.split("-", 1)
            out[k] = v
    return out


def _merge(source_file, entities) -> dict:
    ents = {k: v for k, v in parse_entities(source_file).items() if k not in DROPPED}
    for k, v in entities.items():
        if v is None or v == "":
            ents.pop(k, None)
        else:
            ents[k] = str(v)
    return ents


def _name(ents: dict, suffix: str, extension: str) -> str:
    unknown = [k for k in ents if k not in ENTITY_ORDER]
    ordered = [k for k in ENTITY_ORDER if k in ents] + unknown
    stem = "_".join(f"{k}-{ents[k]}" for k in ordered)
    return f"{stem}_{suffix}{extension}"


def build_name(source_file, suffix: str, extension: str, **entities) -> str:
    """Derived file name from the source's entities plus ``entities``.

    Parameters
    ----------
    source_file : str or path-like
        The raw file whose entities name the output (``echo`` and ``part`` are dropped).
    suffix : str
        BIDS suffix of the output (``Chimap``, ``mask``, ``dseg``, ...).
    extension : str
        With the leading dot (``.nii.gz``, ``.tsv``, ``.h5``).
    **entities
        Entities to add or replace (short names: ``desc``, ``atlas``, ``from``, ...); ``None`` or
        ``""`` drops one.

    Returns
    -------
    str
        The base name, entities in :data:`ENTITY_ORDER`, then any other entity of the source.

    Examples
    --------
    >>> build_name("sub-01_ses-b_echo-1_part-phase_MEGRE.nii.gz", "Chimap", ".nii.gz", desc="rts")
    'sub-01_ses-b_desc-rts_Chimap.nii.gz'
    """
    return _name(_merge(source_file, entities), suffix, extension)


def entities_dir(entities, extension: str = "") -> str:
    """Folder under the output directory for a file with these entities and extension.

    Parameters
    ----------
    entities : mapping
        Short entity names; ``sub`` is required except for ``.html`` files.
    extension : str
        ``.html`` files (participant reports) go to the top level, ``.svg``/``.png`` to
        ``sub-<l>/figures``, everything else to ``sub-<l>[/ses-<l>]/anat``.

    Returns
    -------
    str
        POSIX path relative to the output directory (``""`` for the top level).
    """
    if extension.endswith(".html"):
        return ""
    sub = f"sub-{entities['sub']}"
    if extension.endswith((".svg", ".png")):
        return f"{sub}/figures"
    if "ses" in entities:
        return f"{sub}/ses-{entities['ses']}/anat"
    return f"{sub}/anat"


def relative_dir(fname) -> str:
    """Folder under the output directory of an already named file (:func:`entities_dir`).

    Parameters
    ----------
    fname : str or path-like
        A qsmprep derivative name (or path), e.g. a file handed to the publication node.

    Returns
    -------
    str
        ``sub-<l>[/ses-<l>]/anat``, ``sub-<l>/figures`` or ``""``.
    """
    base = os.path.basename(str(fname))
    ext = os.path.splitext(base)[1]
    if base.endswith(".html"):
        return ""
    return entities_dir(parse_entities(base), ext)


def derivative_path(source_file, suffix: str, extension: str, **entities) -> str:
    """Output-relative path (folder and name) of a derivative, from one set of entities.

    Parameters
    ----------
    source_file, suffix, extension, **entities
        As in :func:`build_name`.

    Returns
    -------
    str
        ``<folder>/<name>`` (folder from :func:`entities_dir`), e.g. for ``Sources`` entries.

    Examples
    --------
    >>> derivative_path("sub-01_echo-1_part-phase_MEGRE.nii.gz", "Chimap", ".nii.gz", desc="rts")
    'sub-01/anat/sub-01_desc-rts_Chimap.nii.gz'
    """
    ents = _merge(source_file, entities)
    folder = entities_dir(ents, extension)
    name = _name(ents, suffix, extension)
    return f"{folder}/{name}" if folder else name
