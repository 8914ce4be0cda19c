"""BIDS input and derivatives bookkeeping.

Everything qsmprep needs to know about the input dataset goes through this module:

* :func:`validate_bids` - schema validation of file names (separate, skippable step, exit 16);
* :func:`build_layout` - a pybids ``BIDSLayout`` that never writes into ``bids_dir``;
* :func:`load_bids_filters` - the ``--bids-filter-file`` (fMRIPrep style, plus the input mapping
  for non-MEGRE data such as OpenNeuro ds000221's ``acq-mag_GRE`` / ``acq-phase_GRE``);
* :func:`collect_participants` - which subjects and sessions to process (exit 18 when a filter
  selects nothing);
* :func:`collect_data` - per session: T1w, magnitude and phase echoes sorted by echo number,
  echo times in seconds, field strength, phase units; every consistency check is done here, on
  headers and sidecars only, before any heavy work;
* :func:`write_derivatives_description` / :func:`write_bidsignore` - derivatives dataset files.

Errors are :mod:`qsmprep.errors` exceptions whose message names the file and the fix.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Mapping

from .errors import (
    BIDSValidationError,
    DataError,
    MissingInputError,
    NoMatchingData,
    UsageError,
)

LOGGER = logging.getLogger("qsmprep.bids")

__all__ = [
    "DEFAULT_QUERIES",
    "build_layout",
    "validate_bids",
    "load_bids_filters",
    "mapping_ignore_patterns",
    "collect_participants",
    "collect_data",
    "bids_uri",
    "write_derivatives_description",
    "write_bidsignore",
    "write_atlas_description",
    "BIDSIGNORE_PATTERNS",
]

NIFTI_EXT = [".nii", ".nii.gz"]

#: Base pybids queries; ``--bids-filter-file`` entries update these (fMRIPrep semantics).
DEFAULT_QUERIES: dict[str, dict[str, Any]] = {
    "megre": {"datatype": "anat", "suffix": "MEGRE", "extension": NIFTI_EXT},
    "t1w": {"datatype": "anat", "suffix": "T1w", "extension": NIFTI_EXT},
}

#: How each image of a GRE run is recognised (``None`` = entity absent; BIDS says a file
#: without ``part`` is a magnitude image). Overridable per role in the filter file's ``megre``.
DEFAULT_ROLES: dict[str, dict[str, Any]] = {
    "mag": {"part": ["mag", None]},
    "phase": {"part": "phase"},
    "real": {"part": "real"},
    "imag": {"part": "imag"},
}
ROLE_KEYS = tuple(DEFAULT_ROLES)

#: Suffixes the BIDS schema accepts for GRE magnitude/phase data.
VALID_GRE_SUFFIXES = {"MEGRE", "T2starw", "T1w", "PDw", "T2w"}

#: Entities never used to split a GRE acquisition into separate runs.
_RUN_IGNORED = {"echo", "part", "extension", "suffix", "datatype", "subject", "session"}

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

_TOP_IGNORED_DIRS = ("code", "derivatives", "sourcedata", "stimuli", "models")


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------
def _read_bidsignore(bids_dir: Path) -> list[str]:
    path = bids_dir / ".bidsignore"
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

    Returns the number of files checked; raises :class:`BIDSValidationError` (exit 16) listing
    the offending files.
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

    patterns = _read_bidsignore(bids_dir) + list(extra_ignore)
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


# --------------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------------
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
            from .errors import OutputNotWritableError

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


# --------------------------------------------------------------------------------------------
# Filters and input mapping
# --------------------------------------------------------------------------------------------
def _convert_query_values(value):
    """fMRIPrep conventions: ``null`` -> entity absent, ``"*"`` -> entity present (any)."""
    from bids.layout import Query

    if value is None:
        return Query.NONE
    if value == "*":
        return Query.ANY
    if isinstance(value, list):
        return [_convert_query_values(v) for v in value]
    return value


def load_bids_filters(path_or_dict) -> dict:
    """Read and check a ``--bids-filter-file``.

    Top-level keys: ``megre`` (the GRE data), ``t1w``. Each value is a dict of pybids entities
    (``session``, ``acquisition``, ``run``, ``suffix``, ...) that update the default query.
    ``megre`` may also carry ``mag``, ``phase``, ``real``, ``imag`` sub-dicts that say how each
    image type is recognised (default: the ``part`` entity). Example for ds000221::

        {"megre": {"suffix": "GRE", "mag": {"acquisition": "mag"},
                   "phase": {"acquisition": "phase"}}}

    Returns a plain dict (JSON values); raises :class:`UsageError` (64) on a bad file.
    """
    if path_or_dict is None:
        return {}
    if isinstance(path_or_dict, Mapping):
        filters = dict(path_or_dict)
        where = "bids_filters"
    else:
        path = Path(path_or_dict)
        where = str(path)
        if not path.is_file():
            from .errors import MissingInputError as _M

            raise _M(f"--bids-filter-file {path} does not exist.")
        try:
            filters = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise UsageError(f"--bids-filter-file {path} is not valid JSON: {exc}") from exc
    if not isinstance(filters, dict):
        raise UsageError(f"{where}: the filter file must hold a JSON object with keys 'megre'/'t1w'.")
    unknown = set(filters) - set(DEFAULT_QUERIES)
    if unknown:
        raise UsageError(
            f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(DEFAULT_QUERIES)} "
            "(see docs/usage.md, 'Input mapping')."
        )
    for key, val in filters.items():
        if not isinstance(val, dict):
            raise UsageError(f"{where}: '{key}' must map to an object of BIDS entities, got {val!r}.")
        for role in ROLE_KEYS:
            if role in val and key != "megre":
                raise UsageError(f"{where}: '{role}' selectors are only allowed under 'megre'.")
            if role in val and not isinstance(val[role], dict):
                raise UsageError(f"{where}: 'megre.{role}' must be an object of entities.")
    return filters


def _split_megre_filters(bids_filters):
    megre = dict((bids_filters or {}).get("megre", {}))
    roles = {k: dict(v) for k, v in DEFAULT_ROLES.items()}
    for role in ROLE_KEYS:
        if role in megre:
            roles[role] = dict(megre.pop(role))
    return megre, roles


def _query(kind, bids_filters, **extra):
    q = dict(DEFAULT_QUERIES[kind])
    f = (bids_filters or {}).get(kind, {})
    if kind == "megre":
        f, _ = _split_megre_filters(bids_filters)
    q.update(f)
    q.update(extra)
    return {k: _convert_query_values(v) for k, v in q.items()}


def _matches(entities: Mapping, selector: Mapping) -> bool:
    for key, want in selector.items():
        have = entities.get(key)
        options = want if isinstance(want, list) else [want]
        ok = False
        for opt in options:
            if opt is None and have is None:
                ok = True
            elif opt == "*" and have is not None:
                ok = True
            elif opt is not None and have is not None and str(have) == str(opt):
                ok = True
        if not ok:
            return False
    return True


def _gre_files(layout, subject, session, bids_filters):
    """GRE files of one subject/session (``session=None``: files without a session entity)."""
    from bids.layout import Query

    extra = {"subject": subject, "session": session if session is not None else Query.NONE}
    files = layout.get(**_query("megre", bids_filters, **extra))
    auto = None
    suffix_set = "suffix" in (bids_filters or {}).get("megre", {})
    if not files and not suffix_set:
        # Single-echo GRE stored as T2starw with part-mag/part-phase (BIDS-valid).
        alt = layout.get(**_query("megre", bids_filters, suffix="T2starw", **extra))
        if any(f.get_entities().get("part") == "phase" for f in alt):
            files, auto = alt, "T2starw"
    return files, auto


_SUB_RE = re.compile(r"(?:^|_)sub-([a-zA-Z0-9]+)")
_SES_RE = re.compile(r"(?:^|_)ses-([a-zA-Z0-9]+)")


def _sessions_with_gre(layout, bids_filters, subjects=None) -> dict:
    """``{subject: set(sessions or None)}`` holding GRE data, from one bulk filename query.

    pybids' ``get_subjects()``/``get_sessions()`` take seconds on large databases; one
    ``return_type='filename'`` query and a regex over the names take well under a second.
    """
    extra = {"subject": list(subjects)} if subjects else {}
    found: dict[str, set] = defaultdict(set)

    def _scan(names, only_missing=False):
        for name in names:
            base = os.path.basename(name)
            m = _SUB_RE.search(base)
            if not m:
                continue
            ses = _SES_RE.search(base)
            key = ses.group(1) if ses else None
            if only_missing and key in found.get(m.group(1), ()):
                continue
            found[m.group(1)].add(key)

    _scan(layout.get(return_type="filename", **_query("megre", bids_filters, **extra)))
    if "suffix" not in (bids_filters or {}).get("megre", {}):
        _scan(layout.get(return_type="filename",
                         **_query("megre", bids_filters, suffix="T2starw", part="phase", **extra)),
              only_missing=True)
    return found


def _dataset_subjects(root: Path) -> list[str]:
    return sorted(p.name[4:] for p in Path(root).glob("sub-*") if p.is_dir())


def _dataset_sessions(root: Path, subjects) -> set:
    out = set()
    for sub in subjects:
        out |= {p.name[4:] for p in (Path(root) / f"sub-{sub}").glob("ses-*") if p.is_dir()}
    return out


def _has_megre_filter(bids_filters) -> bool:
    """True when the filter file restricts or maps the GRE query (so an empty match is its doing)."""
    megre = (bids_filters or {}).get("megre") or {}
    return bool(megre)


# --------------------------------------------------------------------------------------------
# Participants
# --------------------------------------------------------------------------------------------
def _strip(labels, prefix):
    if not labels:
        return None
    out = []
    for lab in labels:
        lab = str(lab).strip()
        if lab.startswith(prefix):
            lab = lab[len(prefix):]
        if lab and lab not in out:
            out.append(lab)
    return out or None


def collect_participants(layout, participant_labels=None, session_labels=None, bids_filters=None):
    """Subjects and sessions to process: ``{subject: [session or None, ...]}`` (sorted).

    Only sessions holding GRE data (as selected by the ``megre`` query) are listed.
    Raises :class:`NoMatchingData` (18) when a requested participant or session label is not
    in the dataset, or when the selection leaves nothing; :class:`MissingInputError` (66) when
    an explicitly requested participant has no GRE data at all. Subjects without GRE data are
    skipped with a warning when no label was requested.
    """
    participant_labels = _strip(participant_labels, "sub-")
    session_labels = _strip(session_labels, "ses-")
    root = Path(layout.root)
    all_subjects = _dataset_subjects(root)
    if not all_subjects:
        raise NoMatchingData(f"No sub-* folders were found in {root}. Is this a BIDS dataset?")
    if participant_labels:
        missing = [lab for lab in participant_labels if lab not in all_subjects]
        if missing:
            raise NoMatchingData(
                f"--participant-label {' '.join(missing)} not found in {root} (found: "
                f"{', '.join(all_subjects[:10])}{', ...' if len(all_subjects) > 10 else ''}). "
                "Give labels without the 'sub-' prefix."
            )
        subjects = list(participant_labels)
    else:
        subjects = all_subjects

    if session_labels:
        all_sessions = _dataset_sessions(root, subjects)
        missing = [s for s in session_labels if s not in all_sessions]
        if missing:
            raise NoMatchingData(
                f"--session-label {' '.join(missing)} not found for the selected participants in "
                f"{root} (found: {', '.join(sorted(all_sessions)) or 'no sessions'})."
            )

    gre = _sessions_with_gre(layout, bids_filters, participant_labels)
    selection: dict[str, list] = {}
    for sub in subjects:
        sessions = gre.get(sub, set())
        if session_labels:
            sessions = {s for s in sessions if s in session_labels}
        with_data = sorted(sessions, key=lambda s: (s is not None, s or ""))
        if not with_data:
            where = f"sub-{sub}" + (f" (sessions {', '.join(session_labels)})" if session_labels else "")
            msg = (
                f"No GRE data for {where} in {root}: expected files like "
                f"sub-{sub}[_ses-<label>]_echo-<n>_part-<mag|phase>_MEGRE.nii.gz in anat/. "
                "Map other names with --bids-filter-file (see docs/usage.md)."
            )
            if participant_labels and _has_megre_filter(bids_filters):
                raise NoMatchingData(
                    f"--bids-filter-file selected no GRE files for {where} in {root} (its 'megre' "
                    f"entities: {json.dumps(_split_megre_filters(bids_filters)[0])}). Check the "
                    "entity names and values against the file names, or drop the filter.")
            if participant_labels:
                raise MissingInputError(msg)
            LOGGER.warning("Skipping sub-%s: %s", sub, msg)
            continue
        selection[sub] = with_data
    if not selection:
        raise NoMatchingData(
            f"The participant/session selection and filters matched no GRE data in {root}. "
            "Check --participant-label, --session-label and --bids-filter-file."
        )
    return selection


# --------------------------------------------------------------------------------------------
# Per-session data
# --------------------------------------------------------------------------------------------
def _coerce_float(value, what, path):
    if isinstance(value, bool):
        raise DataError(f"{what} in the metadata of {path} is a boolean ({value!r}); it must be a number.")
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"{what} = {value!r} in the metadata of {path} is not a number. "
            f"Fix the sidecar {_sidecar(path)}."
        ) from exc


def _sidecar(path) -> str:
    p = str(path)
    for ext in (".nii.gz", ".nii"):
        if p.endswith(ext):
            return p[: -len(ext)] + ".json"
    return p


def bids_uri(path, root, dataset="raw") -> str:
    """``bids:<dataset>:<relative path>`` URI of a file of the dataset at ``root``."""
    rel = Path(path).absolute().relative_to(Path(root).absolute()).as_posix()
    return f"bids:{dataset}:{rel}"


def _normalise_units(units, path):
    if units is None:
        LOGGER.warning(
            "%s: the sidecar has no 'Units' for the phase image; the range of the stored values "
            "will decide whether it is radians or arbitrary integers. Add \"Units\": \"rad\" or "
            "\"arbitrary\" to %s to make it explicit.", path, _sidecar(path))
        return None
    u = str(units).strip().lower()
    if u in ("rad", "radian", "radians"):
        return "rad"
    if u in ("arbitrary", "a.u.", "au", "arb", "arbitrary units"):
        return "arbitrary"
    raise DataError(
        f"Phase image {path} has Units = {units!r}; qsmprep accepts 'rad' or 'arbitrary'. "
        f"Fix the sidecar {_sidecar(path)} (use 'arbitrary' for integer-scaled phase)."
    )


def _header_geometry(path):
    import nibabel as nb
    import numpy as np

    try:
        img = nb.load(str(path))
    except Exception as exc:  # noqa: BLE001 - any reader failure means unreadable input
        raise MissingInputError(f"Cannot read {path} as NIfTI ({exc}). Is the file complete?") from exc
    shape = tuple(int(s) for s in img.shape)
    if len(shape) > 3 and any(s != 1 for s in shape[3:]):
        raise DataError(
            f"{path} has shape {shape}: a 4-D file with {shape[3]} volumes, but each echo must be a "
            "3-D volume with one number as EchoTime. Split it into one file per echo (e.g. "
            "nibabel's four_to_three or fslsplit) named ..._echo-<n>_part-<mag|phase>_MEGRE.nii.gz, "
            "each sidecar giving that echo's EchoTime in seconds."
        )
    return shape[:3], np.asarray(img.affine, dtype=float)


def _check_geometry(files: list[str]):
    import numpy as np

    ref_shape, ref_aff = _header_geometry(files[0])
    for f in files[1:]:
        shape, aff = _header_geometry(f)
        if shape != ref_shape:
            raise DataError(
                f"Shape mismatch between echoes: {f} has {shape}, {files[0]} has {ref_shape}. "
                "All echoes of a GRE run must be on the same grid; reconvert the DICOMs."
            )
        if not np.allclose(aff, ref_aff, atol=1e-4, rtol=1e-5):
            raise DataError(
                f"Affine mismatch between echoes: {f} and {files[0]} have different voxel-to-world "
                "matrices. All echoes of a GRE run must be on the same grid; reconvert the DICOMs."
            )
    return ref_shape, ref_aff


def _group_runs(files, roles, subject, session):
    """Group GRE files into runs keyed by the entities other than echo/part/role selectors."""
    role_keys = set()
    for sel in roles.values():
        role_keys |= set(sel)
    runs: dict[tuple, dict] = defaultdict(lambda: {r: {} for r in ROLE_KEYS})
    for f in sorted(files, key=lambda x: x.path):
        ents = f.get_entities()
        # magnitude last: its default selector (part absent) is the catch-all
        role = next((r for r in ("phase", "real", "imag", "mag") if _matches(ents, roles[r])), None)
        if role is None:
            LOGGER.debug("%s matches no magnitude/phase selector; ignored", f.path)
            continue
        key = tuple(sorted((k, str(v)) for k, v in ents.items()
                           if k not in _RUN_IGNORED and k not in role_keys))
        echo = ents.get("echo", 1)
        try:
            echo = int(echo)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{f.path}: echo entity {echo!r} is not an integer.") from exc
        if echo in runs[key][role]:
            raise DataError(
                f"Two {role} images for echo {echo} of the same run: {runs[key][role][echo]} and "
                f"{f.path}. Remove one or select one with --bids-filter-file (e.g. by 'run' or "
                "'acquisition')."
            )
        runs[key][role][echo] = f.path
    return dict(runs)


def collect_data(layout, subject, session=None, bids_filters=None, b0_strength=None) -> dict:
    """Gather and check one session's inputs (headers and sidecars only; no image data loaded).

    Returns
    -------
    dict with keys ``subject``, ``session``, ``t1w`` (path or None), ``mag`` and ``phase``
    (paths, sorted by echo number; with ``parts == 'real-imag'`` they hold the ``part-real`` and
    ``part-imag`` images, converted by the loader), ``parts`` (``'mag-phase'`` or
    ``'real-imag'``), ``echo_numbers``, ``echo_times`` (s, ascending), ``b0`` (T),
    ``phase_units`` ('rad', 'arbitrary' or None when the sidecar says nothing), ``shape``,
    ``metadata`` (sidecar of the first phase echo, numbers coerced, ``EchoTime`` as a list),
    ``entities`` (entities shared by the run, e.g. ``acquisition``), ``runs`` (entities of every
    run found; the first is used), ``sources`` (``bids:raw:`` URIs) and ``warnings``.

    Raises :class:`MissingInputError` (66), :class:`DataError` (65) with the file named.
    """
    subject = _strip([subject], "sub-")[0]
    if session is not None:
        session = _strip([session], "ses-")[0]
    where = f"sub-{subject}" + (f"_ses-{session}" if session else "")
    warnings: list[str] = []
    root = Path(layout.root)

    files, auto = _gre_files(layout, subject, session, bids_filters)
    if auto:
        msg = f"{where}: no MEGRE files; using the single-echo '{auto}' part-mag/part-phase images."
        LOGGER.info(msg)
        warnings.append(msg)
    if not files:
        q = _query("megre", bids_filters)
        raise MissingInputError(
            f"No GRE data for {where} in {root / ('sub-' + subject)}: searched anat/ for suffix "
            f"{q.get('suffix')!r} (e.g. {where}_echo-1_part-phase_MEGRE.nii.gz). Rename the files "
            "to BIDS MEGRE or map your naming with --bids-filter-file (see docs/usage.md)."
        )

    _, roles = _split_megre_filters(bids_filters)
    runs = _group_runs(files, roles, subject, session)
    run_keys = sorted(runs)
    if len(run_keys) > 1:
        msg = (f"{where}: {len(run_keys)} GRE runs found ({[dict(k) for k in run_keys]}); using "
               f"the first, {dict(run_keys[0])}. Select another with --bids-filter-file "
               "(e.g. {\"megre\": {\"run\": 2}}).")
        LOGGER.warning(msg)
        warnings.append(msg)
    key = run_keys[0]
    run = runs[key]
    mag, phase, real, imag = run["mag"], run["phase"], run["real"], run["imag"]

    parts = "mag-phase"
    if not phase and (real or imag):
        if set(real) != set(imag):
            raise DataError(
                f"{where}: real and imaginary GRE echoes do not match: part-real echoes "
                f"{sorted(real)}, part-imag echoes {sorted(imag)} (in "
                f"{Path(next(iter((real or imag).values()))).parent}). Every echo needs one part-real "
                "and one part-imag image."
            )
        # converted to magnitude/phase when loaded (qsm.phase.complex_to_mag_phase)
        mag, phase, parts = real, imag, "real-imag"
        msg = (f"{where}: real/imaginary GRE input (part-real/part-imag); converted to magnitude "
               "and phase (radians) when loaded.")
        LOGGER.info(msg)
    if not phase:
        example = next(iter(mag.values()))
        raise MissingInputError(
            f"{where}: magnitude-only GRE data (e.g. {example}); QSM needs the phase images "
            "(part-phase). Export phase from the scanner/DICOMs, or map them with "
            "--bids-filter-file if they use another name."
        )
    if not mag:
        example = next(iter(phase.values()))
        raise MissingInputError(
            f"{where}: phase-only GRE data (e.g. {example}); qsmprep also needs the magnitude "
            "images (part-mag) for masking and weighting."
        )
    if set(mag) != set(phase):
        raise DataError(
            f"{where}: magnitude and phase echoes do not match: magnitude echoes {sorted(mag)}, "
            f"phase echoes {sorted(phase)} (in {Path(next(iter(phase.values()))).parent}). Every echo "
            "needs one part-mag and one part-phase image."
        )

    echoes = sorted(phase)  # numeric: echo-10 after echo-2
    mag_files = [mag[e] for e in echoes]
    phase_files = [phase[e] for e in echoes]

    # ---- geometry first (headers only): a 4-D file per run would fail the EchoTime checks ----
    shape, _ = _check_geometry(mag_files + phase_files)

    # ---- metadata (inheritance through pybids) ----
    tes = []
    b0_values = []
    units_seen = []
    first_meta = None
    for e, pf, mf in zip(echoes, phase_files, mag_files):
        pmeta = layout.get_metadata(pf)
        mmeta = layout.get_metadata(mf)
        if first_meta is None:
            first_meta = dict(pmeta)
        if "EchoTime" not in pmeta:
            raise DataError(
                f"{pf} has no EchoTime. Add \"EchoTime\" (seconds) to {_sidecar(pf)} or to a "
                "top-level MEGRE.json-style sidecar."
            )
        te = _coerce_float(pmeta["EchoTime"], "EchoTime", pf)
        if "EchoTime" in mmeta:
            te_m = _coerce_float(mmeta["EchoTime"], "EchoTime", mf)
            if abs(te_m - te) > 1e-6:
                raise DataError(
                    f"Echo {e}: EchoTime differs between {mf} ({te_m}) and {pf} ({te}). Fix the sidecars."
                )
        if not 0 < te < 1:
            raise DataError(
                f"EchoTime = {te} in {_sidecar(pf)} is not in seconds (expected 0 < TE < 1 s, e.g. "
                "0.004 for 4 ms). Convert it to seconds."
            )
        tes.append(te)
        if "MagneticFieldStrength" in pmeta:
            b0_values.append(_coerce_float(pmeta["MagneticFieldStrength"], "MagneticFieldStrength", pf))
        units_seen.append(pmeta.get("Units"))

    if any(t2 <= t1 for t1, t2 in zip(tes, tes[1:])):
        raise DataError(
            f"{where}: echo times {tes} do not increase with the echo number {echoes} (files "
            f"{[Path(p).name for p in phase_files]}). Fix the echo-<n> entities or the EchoTime values."
        )

    if b0_strength is not None:
        b0 = float(b0_strength)
        if b0_values and abs(b0_values[0] - b0) > 1e-3:
            msg = (f"{where}: --b0-strength {b0} T overrides MagneticFieldStrength "
                   f"{b0_values[0]} T from the sidecars.")
            LOGGER.warning(msg)
            warnings.append(msg)
    elif b0_values:
        if len(b0_values) != len(echoes):
            raise DataError(f"{where}: MagneticFieldStrength is present for some echoes only; "
                            "give it for all or pass --b0-strength.")
        if max(b0_values) - min(b0_values) > 1e-3:
            raise DataError(f"{where}: MagneticFieldStrength differs between echoes ({b0_values}).")
        b0 = b0_values[0]
    else:
        raise DataError(
            f"{phase_files[0]} has no MagneticFieldStrength (Tesla), which QSM needs. Add it to "
            f"{_sidecar(phase_files[0])} (or a top-level sidecar), or pass --b0-strength (e.g. 3)."
        )
    if not 0.05 <= b0 <= 25:
        raise DataError(f"{where}: field strength {b0} T is implausible; it must be in Tesla (e.g. 3).")

    if parts == "real-imag":  # phase comes from angle(re + i im): radians, no Units needed
        units_seen = ["rad"] * len(phase_files)
    units_norm = {_normalise_units(u, pf) if u is not None else None
                  for u, pf in zip(units_seen, phase_files)}
    if None in units_norm:
        if len(units_norm) > 1:
            raise DataError(f"{where}: some phase sidecars give Units and others do not; make them agree.")
        # warn once
        _normalise_units(None, phase_files[0])
        warnings.append(f"{where}: phase Units absent in {_sidecar(phase_files[0])}")
    if len(units_norm) > 1:
        raise DataError(f"{where}: phase echoes have different Units {sorted(map(str, units_norm))}.")
    phase_units = next(iter(units_norm))

    # ---- T1w ----
    t1w = _collect_t1w(layout, subject, session, bids_filters, where, warnings)

    metadata = {}
    for k, v in (first_meta or {}).items():
        if isinstance(v, str) and k in ("RepetitionTime", "FlipAngle", "MagneticFieldStrength"):
            try:
                v = float(v)
            except ValueError:
                pass
        metadata[k] = v
    metadata["EchoTime"] = tes
    metadata["MagneticFieldStrength"] = b0

    sources = [bids_uri(p, root) for pair in zip(mag_files, phase_files) for p in pair]
    if t1w:
        sources.append(bids_uri(t1w, root))
    return {
        "subject": subject,
        "session": session,
        "t1w": t1w,
        "mag": mag_files,
        "phase": phase_files,
        "echo_numbers": echoes,
        "echo_times": tes,
        "b0": b0,
        "phase_units": None if parts == "real-imag" else phase_units,
        "parts": parts,
        "shape": shape,
        "metadata": metadata,
        "entities": dict(key),
        "runs": [dict(k) for k in run_keys],
        "sources": sources,
        "warnings": warnings,
    }


def _collect_t1w(layout, subject, session, bids_filters, where, warnings):
    from bids.layout import Query

    base = {"subject": subject}
    candidates = []
    if session is not None:
        candidates = layout.get(**_query("t1w", bids_filters, session=session, **base))
        if not candidates:  # session-less anatomy (sub-X/anat/sub-X_T1w.nii.gz)
            candidates = layout.get(**_query("t1w", bids_filters, session=Query.NONE, **base))
    else:
        candidates = layout.get(**_query("t1w", bids_filters, **base))
    # never use a phase/imaginary part as structural image
    candidates = [c for c in candidates if c.get_entities().get("part") in (None, "mag")]
    if not candidates:
        msg = (f"{where}: no T1w image found; atlas registration falls back to the GRE magnitude "
               "(less accurate). Add a T1w or select one with --bids-filter-file {\"t1w\": {...}}.")
        LOGGER.warning(msg)
        warnings.append(msg)
        return None
    paths = sorted(c.path for c in candidates)
    if len(paths) > 1:
        msg = (f"{where}: {len(paths)} T1w images found; using {Path(paths[0]).name}. Select one "
               "with --bids-filter-file {\"t1w\": {\"acquisition\": ...}}.")
        LOGGER.warning(msg)
        warnings.append(msg)
    return paths[0]


# --------------------------------------------------------------------------------------------
# Derivatives
# --------------------------------------------------------------------------------------------
#: Where qsmprep's source code lives (``GeneratedBy[].CodeURL``; also the image's OCI label).
CODE_URL = "https://github.com/qsmprep/qsmprep"


def container_info(environ=None) -> dict | None:
    """``GeneratedBy[].Container`` of this run, or ``None`` outside a container.

    The Dockerfile sets ``QSMPREP_CONTAINER`` to the image name and tag (``qsmprep:<version>``)
    and ``QSMPREP_CONTAINER_TYPE`` to ``docker``. Apptainer/Singularity keep the image's
    environment and add ``APPTAINER_CONTAINER``/``SINGULARITY_CONTAINER``, so an image run there
    is recorded with that type.
    """
    environ = os.environ if environ is None else environ
    tag = environ.get("QSMPREP_CONTAINER")
    if not tag:
        return None
    ctype = environ.get("QSMPREP_CONTAINER_TYPE") or "docker"
    if environ.get("APPTAINER_CONTAINER") or environ.get("SINGULARITY_CONTAINER"):
        ctype = "singularity"
    return {"Type": ctype, "Tag": tag}


def write_derivatives_description(output_dir, bids_dir, name="qsmprep", version=None) -> Path:
    """Write ``output_dir/dataset_description.json`` (BIDS derivative, GeneratedBy, DatasetLinks).

    * ``GeneratedBy``: ``Name``, ``Version``, ``CodeURL`` and, inside a container,
      ``Container`` (:func:`container_info`).
    * ``DatasetLinks.raw``: the input dataset as a path *relative to* ``output_dir`` (BIDS allows
      relative URI references there), so that the ``bids:raw:...`` URIs in ``Sources`` resolve
      and no absolute path of the processing machine is recorded.
    * ``SourceDatasets``: ``[{"URL": "bids:raw:"}]`` plus the raw dataset's ``DatasetDOI`` and
      ``DatasetVersion`` (as ``DOI``/``Version``) when its description has them.

    Existing descriptions are rewritten atomically (parallel runs).
    """
    from . import __version__

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
        tmp = readme.with_name(f".{readme.name}.{os.getpid()}.tmp")
        tmp.write_text(README_TEXT, encoding="utf-8")
        os.replace(tmp, readme)
    return _atomic_json(output_dir / "dataset_description.json", desc)


def _atomic_json(target: Path, obj) -> Path:
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, target)
    return target


def write_atlas_description(output_dir, atlas) -> Path:
    """Write ``output_dir/atlas-<Name>_description.json`` (BIDS atlas description).

    ``AtlasName``, ``License``, ``Description``, ``Species`` and ``ReferencesAndLinks`` come from
    the atlas folder's ``dataset_description.json`` (its ``Sources``: name, licence, citation of
    every source map); the BIDS validator asks for this file for every ``atlas-<Name>`` image.
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


README_TEXT = """# qsmprep derivatives

Quantitative susceptibility maps (`*_Chimap.nii.gz`, ppm), brain masks, atlas labels and
per-structure tables (`*_stats.tsv`, ppb) computed by qsmprep from the multi-echo GRE data of the
dataset named in `dataset_description.json` (`DatasetLinks.raw`). Each image has a JSON sidecar
listing every method and parameter used; `logs/CITATION.md` has the methods text and references.
Participant reports: `sub-<label>.html`; group statistics: `group/`.
"""


def write_bidsignore(output_dir, extra=()) -> Path:
    """Write (or extend) ``output_dir/.bidsignore`` with qsmprep's non-standard outputs."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    target = output_dir / ".bidsignore"
    existing = _read_bidsignore(output_dir) if target.exists() else []
    lines = list(existing)
    for patt in list(BIDSIGNORE_PATTERNS) + list(extra):
        if patt not in lines:
            lines.append(patt)
    tmp = target.with_name(f".bidsignore.{os.getpid()}.tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, target)
    return target


def find_user_mask(masks_dir, subject, session, shape):
    """The user-supplied brain mask of one session (``--brain-masks``), checked against the GRE grid.

    Looks for ``masks_dir/sub-<l>/[ses-<l>/]anat/sub-<l>[_ses-<l>]*_mask.nii[.gz]`` and raises
    :class:`MissingInputError` (66) when none exists or :class:`DataError` (65) when its shape
    differs from the GRE images (headers only are read).
    """
    import nibabel as nb

    masks_dir = Path(masks_dir)
    prefix = f"sub-{subject}" + (f"_ses-{session}" if session else "")
    folder = masks_dir / f"sub-{subject}" / (f"ses-{session}" if session else "") / "anat"
    found = sorted(folder.glob(f"{prefix}*_mask.nii*")) if folder.is_dir() else []
    if not found:
        raise MissingInputError(
            f"--brain-masks: no mask for {prefix}: expected {folder}/{prefix}_desc-brain_mask.nii.gz "
            "(on the GRE grid). Add it or drop --brain-masks.")
    img = nb.load(str(found[0]))
    if tuple(img.shape[:3]) != tuple(shape[:3]):
        raise DataError(
            f"--brain-masks: {found[0]} has shape {img.shape[:3]}, the GRE images of {prefix} have "
            f"{tuple(shape[:3])}. Resample the mask onto the GRE grid.")
    return str(found[0])
