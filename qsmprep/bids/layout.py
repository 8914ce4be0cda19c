"""The input dataset as pybids sees it: schema validation, ``.bidsignore`` and the layout.

* :func:`validate_bids` - schema validation of file names (separate, skippable step, exit 16);
* :func:`mapping_ignore_patterns` - files the ``--bids-filter-file`` input mapping declares as
  intended input, which the validator then skips;
* :func:`read_bidsignore` - the dataset's ignore patterns;
* :func:`build_layout` - a pybids ``BIDSLayout`` that never writes into ``bids_dir``.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import re
from pathlib import Path
from typing import Iterable, Mapping

from ..errors import BIDSValidationError, MissingInputError, OutputNotWritableError, UsageError

LOGGER = logging.getLogger("qsmprep.bids")

__all__ = ["VALID_GRE_SUFFIXES", "read_bidsignore", "validate_bids", "mapping_ignore_patterns",
           "build_layout"]

#: Suffixes the BIDS schema accepts for GRE magnitude/phase data.
VALID_GRE_SUFFIXES = {"MEGRE", "T2starw", "T1w", "PDw", "T2w"}

_TOP_IGNORED_DIRS = ("code", "derivatives", "sourcedata", "stimuli", "models")


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------
def read_bidsignore(bids_dir) -> list[str]:
    """The patterns of a dataset's ``.bidsignore`` (blank lines and ``#`` comments dropped).

    Parameters
    ----------
    bids_dir : str or path-like
        Dataset root (raw input or derivatives folder).

    Returns
    -------
    list of str
        The patterns in file order; empty when there is no ``.bidsignore``.
    """
    path = Path(bids_dir) / ".bidsignore"
    if not path.is_file():
        return []
    patterns = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            patterns.append(line)
    return patterns


def _ignored(relpath: str, patterns: Iterable[str]) -> bool:
    """gitignore-like matching of a dataset-relative POSIX path (no leading slash)."""
    name = relpath.rsplit("/", 1)[-1]
    for patt in patterns:
        anchored = patt.startswith("/")
        patt = patt.lstrip("/")
        if patt.endswith("/"):  # a directory: match any path below it
            d = patt.rstrip("/")
            parts = relpath.split("/")[:-1]
            prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
            if any(fnmatch.fnmatch(p, d) or (not anchored and fnmatch.fnmatch(p.rsplit("/", 1)[-1], d))
                   for p in prefixes):
                return True
            continue
        if fnmatch.fnmatch(relpath, patt):
            return True
        if not anchored and "/" not in patt and fnmatch.fnmatch(name, patt):
            return True
        if not anchored and fnmatch.fnmatch(relpath, "*/" + patt):
            return True
    return False


def validate_bids(bids_dir, participant_labels=None, extra_ignore=(), max_listed=20) -> int:
    """Validate every file name of ``bids_dir`` against the BIDS schema (offline).

    Uses ``bids_validator.BIDSValidator().is_bids`` on each dataset-relative path. Files under
    ``code/``, ``derivatives/``, ``sourcedata/``, ``stimuli/``, hidden files and those matched by
    the dataset's ``.bidsignore`` or by ``extra_ignore`` (glob patterns, see
    :func:`mapping_ignore_patterns`) are skipped. With ``participant_labels`` only those
    subjects' folders are checked (plus the top level).

    Parameters
    ----------
    bids_dir : str or path-like
        The raw dataset.
    participant_labels : list of str or None
        Labels without ``sub-``; other subjects' folders are not checked.
    extra_ignore : iterable of str
        Further gitignore-style patterns to skip.
    max_listed : int
        How many offending files the error message lists.

    Returns
    -------
    int
        The number of files checked.

    Raises
    ------
    BIDSValidationError
        Exit 16: ``dataset_description.json`` missing or incomplete, or files not named after
        the BIDS schema (listed).
    """
    from bids_validator import BIDSValidator

    bids_dir = Path(bids_dir)
    desc = bids_dir / "dataset_description.json"
    if not desc.is_file():
        raise BIDSValidationError(
            f"{desc} is missing: a BIDS dataset needs a dataset_description.json with 'Name' and "
            "'BIDSVersion'. Add it, or run with --skip-bids-validation."
        )
    try:
        description = json.loads(desc.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BIDSValidationError(f"{desc} is not valid JSON ({exc}). Fix the file.") from exc
    missing = [k for k in ("Name", "BIDSVersion") if k not in description]
    if missing:
        raise BIDSValidationError(
            f"{desc} lacks the required key(s) {missing}. Add them, or run with "
            "--skip-bids-validation."
        )

    patterns = read_bidsignore(bids_dir) + list(extra_ignore)
    wanted = {f"sub-{lab}" for lab in participant_labels} if participant_labels else None
    validator = BIDSValidator()
    bad: list[str] = []
    n_checked = 0
    for root, dirs, files in os.walk(bids_dir):
        rel_root = Path(root).relative_to(bids_dir).as_posix()
        rel_root = "" if rel_root == "." else rel_root
        keep = []
        for d in sorted(dirs):
            if d.startswith("."):
                continue
            if not rel_root and (d in _TOP_IGNORED_DIRS):
                continue
            if not rel_root and wanted is not None and d.startswith("sub-") and d not in wanted:
                continue
            keep.append(d)
        dirs[:] = keep
        for f in sorted(files):
            if f.startswith("."):
                continue
            rel = f"{rel_root}/{f}" if rel_root else f
            if _ignored(rel, patterns):
                continue
            n_checked += 1
            if not validator.is_bids("/" + rel):
                bad.append(rel)
    if bad:
        listed = "\n  ".join(bad[:max_listed])
        more = f"\n  ... and {len(bad) - max_listed} more" if len(bad) > max_listed else ""
        raise BIDSValidationError(
            f"{len(bad)} file(s) in {bids_dir} do not follow the BIDS naming scheme:\n  {listed}{more}\n"
            "Rename them (e.g. multi-echo GRE as sub-<label>[_ses-<label>]_echo-<n>_part-<mag|phase>"
            "_MEGRE.nii.gz), list them in the dataset's .bidsignore, map non-standard GRE names "
            "with --bids-filter-file (see docs/usage.md), or run with --skip-bids-validation."
        )
    LOGGER.info("BIDS validation passed (%d files checked).", n_checked)
    return n_checked


def mapping_ignore_patterns(bids_filters: Mapping | None) -> list[str]:
    """Glob patterns for files that the input mapping selects but BIDS does not know.

    A filter file mapping ``{"megre": {"suffix": "GRE", ...}}`` states that ``*_GRE.*`` files
    are intended input; they are then not reported by :func:`validate_bids`.

    Parameters
    ----------
    bids_filters : mapping or None
        A parsed filter file (:func:`qsmprep.bids.filters.load_bids_filters`).

    Returns
    -------
    list of str
        Glob patterns (``*_GRE.nii.gz``, ...); empty unless ``megre.suffix`` is non-standard.

    Examples
    --------
    >>> mapping_ignore_patterns({"megre": {"suffix": "GRE"}})
    ['*_GRE.nii', '*_GRE.nii.gz', '*_GRE.json', 'GRE.json']
    """
    megre = (bids_filters or {}).get("megre", {})
    suffixes = megre.get("suffix")
    if suffixes is None:
        return []
    out = []
    for s in suffixes if isinstance(suffixes, list) else [suffixes]:
        if isinstance(s, str) and s not in VALID_GRE_SUFFIXES:
            out += [f"*_{s}.nii", f"*_{s}.nii.gz", f"*_{s}.json", f"{s}.json"]
    return out



def _is_within(path: Path, parent: Path) -> bool:
    try:
        path.resolve().relative_to(parent.resolve())
        return True
    except ValueError:
        return False


def _ignore_patterns(participant_labels=None) -> list:
    patterns: list = [
        re.compile(r"^/(code|models|sourcedata|stimuli|derivatives)(/|$)"),
        re.compile(r"/\."),
        # only anatomical folders are needed: skip func/, dwi/, fmap/, perf/, ... (speed)
        re.compile(r"^/sub-[^/]+/(ses-[^/]+/)?(?!anat$|ses-)[^/]+$"),
    ]
    if participant_labels:
        labels = "|".join(re.escape(lab) for lab in participant_labels)
        patterns.append(re.compile(rf"^/sub-(?!(?:{labels})(/|$))[^/]+"))
    return patterns


def build_layout(bids_dir, database_dir=None, participant_labels=None, validate=True,
                 bids_filters=None):
    """Index ``bids_dir`` with pybids, without writing anything into it.

    Parameters
    ----------
    bids_dir : path
        The raw BIDS dataset (may be read-only).
    database_dir : path or None
        ``--bids-database-dir``. When given, the pybids SQLite database lives there and is
        reused by later calls (e.g. one per SLURM array task): an existing database is loaded
        as is, a new one indexes *all* subjects so that it serves any participant. When
        ``None``, an in-memory database indexes only ``participant_labels``.
    participant_labels : list of str or None
        Labels without ``sub-``; other subjects are not indexed.
    validate : bool
        Run :func:`validate_bids` first (``--skip-bids-validation`` turns it off).
    bids_filters : dict or None
        Parsed filter file; its input mapping tells the validator which non-standard files
        are intended input.

    Returns
    -------
    bids.BIDSLayout

    Raises
    ------
    MissingInputError
        Exit 66: ``bids_dir`` is not a folder, or pybids cannot index it.
    UsageError
        Exit 64: the database folder is inside the input dataset, or indexes another dataset.
    OutputNotWritableError
        Exit 73: the database folder cannot be created.
    BIDSValidationError
        Exit 16, from :func:`validate_bids`.
    """
    from bids import BIDSLayout
    from bids.layout import BIDSLayoutIndexer

    bids_dir = Path(bids_dir).absolute()
    if not bids_dir.is_dir():
        raise MissingInputError(f"BIDS directory {bids_dir} does not exist. Check the first argument.")
    if validate:
        validate_bids(bids_dir, participant_labels,
                      extra_ignore=mapping_ignore_patterns(bids_filters))

    database_path = None
    if database_dir is not None:
        database_path = Path(database_dir).absolute()
        if _is_within(database_path, bids_dir) and not _is_within(database_path, bids_dir / "derivatives"):
            raise UsageError(
                f"--bids-database-dir {database_path} is inside the input dataset {bids_dir}; "
                "qsmprep never writes into the input. Choose a folder elsewhere (e.g. in the work dir)."
            )
        try:
            database_path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputNotWritableError(
                f"Cannot create the pybids database folder {database_path} ({exc}). "
                "Choose a writable --bids-database-dir."
            ) from exc
        if (database_path / "layout_index.sqlite").exists():
            LOGGER.info("Reusing the pybids database in %s", database_path)
        ignore = _ignore_patterns(None)
    else:
        ignore = _ignore_patterns(participant_labels)

    indexer = BIDSLayoutIndexer(validate=False, ignore=ignore, index_metadata=True)
    try:
        layout = BIDSLayout(str(bids_dir), validate=False, database_path=database_path,
                            indexer=indexer)
    except (ValueError, OSError) as exc:
        raise MissingInputError(f"pybids could not index {bids_dir}: {exc}") from exc
    if database_path is not None and Path(layout.root).resolve() != bids_dir.resolve():
        raise UsageError(
            f"The pybids database in {database_path} indexes {layout.root}, not {bids_dir}. "
            "Delete it or point --bids-database-dir elsewhere."
        )
    return layout
