"""Which subjects and sessions to process, and the checked inputs of each session.

* :func:`collect_participants` - ``{subject: [session or None, ...]}`` holding GRE data (exit 18
  when a selection matches nothing);
* :func:`collect_data` - per session: T1w, magnitude and phase echoes sorted by echo number,
  echo times in seconds, field strength, phase units; every consistency check runs here, on
  headers and sidecars only (:mod:`qsmprep.bids.metadata`), before any heavy work.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path

from ..derivatives.dataset import bids_uri
from ..derivatives.names import parse_entities
from ..errors import DataError, MissingInputError, NoMatchingData
from .filters import ROLE_KEYS, has_megre_filter, matches, query, split_megre_filters
from .metadata import (
    check_echo_order,
    check_geometry,
    field_strength,
    phase_units,
    read_echo_metadata,
)

LOGGER = logging.getLogger("qsmprep.bids")

__all__ = ["collect_participants", "collect_data"]

#: Entities never used to split a GRE acquisition into separate runs.
_RUN_IGNORED = {"echo", "part", "extension", "suffix", "datatype", "subject", "session"}


def _gre_files(layout, subject, session, bids_filters):
    """GRE files of one subject/session (``session=None``: files without a session entity)."""
    from bids.layout import Query

    extra = {"subject": subject, "session": session if session is not None else Query.NONE}
    files = layout.get(**query("megre", bids_filters, **extra))
    auto = None
    suffix_set = "suffix" in (bids_filters or {}).get("megre", {})
    if not files and not suffix_set:
        # Single-echo GRE stored as T2starw with part-mag/part-phase (BIDS-valid).
        alt = layout.get(**query("megre", bids_filters, suffix="T2starw", **extra))
        if any(f.get_entities().get("part") == "phase" for f in alt):
            files, auto = alt, "T2starw"
    return files, auto


def _sessions_with_gre(layout, bids_filters, subjects=None) -> dict:
    """``{subject: set(sessions or None)}`` holding GRE data, from one bulk filename query.

    pybids' ``get_subjects()``/``get_sessions()`` take seconds on large databases; one
    ``return_type='filename'`` query and :func:`qsmprep.derivatives.names.parse_entities` over
    the names take well under a second.
    """
    extra = {"subject": list(subjects)} if subjects else {}
    found: dict[str, set] = defaultdict(set)

    def _scan(names, only_missing=False):
        for name in names:
            ents = parse_entities(name)
            if not ents.get("sub"):
                continue
            key = ents.get("ses") or None
            if only_missing and key in found.get(ents["sub"], ()):
                continue
            found[ents["sub"]].add(key)

    _scan(layout.get(return_type="filename", **query("megre", bids_filters, **extra)))
    if "suffix" not in (bids_filters or {}).get("megre", {}):
        _scan(layout.get(return_type="filename",
                         **query("megre", bids_filters, suffix="T2starw", part="phase", **extra)),
              only_missing=True)
    return found


def _dataset_subjects(root: Path) -> list[str]:
    return sorted(p.name[4:] for p in Path(root).glob("sub-*") if p.is_dir())


def _dataset_sessions(root: Path, subjects) -> set:
    out = set()
    for sub in subjects:
        out |= {p.name[4:] for p in (Path(root) / f"sub-{sub}").glob("ses-*") if p.is_dir()}
    return out



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

    Only sessions holding GRE data (as selected by the ``megre`` query) are listed. Subjects
    without GRE data are skipped with a warning when no label was requested.

    Parameters
    ----------
    layout : bids.BIDSLayout
        From :func:`qsmprep.bids.layout.build_layout`.
    participant_labels, session_labels : list of str or None
        ``--participant-label`` / ``--session-label`` (with or without the prefix).
    bids_filters : mapping or None
        A parsed ``--bids-filter-file``.

    Returns
    -------
    dict
        ``{subject: [session or None, ...]}``, sessions sorted (``None`` first).

    Raises
    ------
    NoMatchingData
        Exit 18: a requested label is not in the dataset, the filter file selects nothing for
        a requested participant, or the selection leaves nothing.
    MissingInputError
        Exit 66: an explicitly requested participant has no GRE data at all.
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
            if participant_labels and has_megre_filter(bids_filters):
                raise NoMatchingData(
                    f"--bids-filter-file selected no GRE files for {where} in {root} (its 'megre' "
                    f"entities: {json.dumps(split_megre_filters(bids_filters)[0])}). Check the "
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



def _group_runs(files, roles, subject, session):
    """Group GRE files into runs keyed by the entities other than echo/part/role selectors."""
    role_keys = set()
    for sel in roles.values():
        role_keys |= set(sel)
    runs: dict[tuple, dict] = defaultdict(lambda: {r: {} for r in ROLE_KEYS})
    for f in sorted(files, key=lambda x: x.path):
        ents = f.get_entities()
        # magnitude last: its default selector (part absent) is the catch-all
        role = next((r for r in ("phase", "real", "imag", "mag") if matches(ents, roles[r])), None)
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


def _select_run(layout, subject, session, bids_filters, where, warnings):
    """The GRE images of the first run of one session, grouped by role and echo."""
    root = Path(layout.root)
    files, auto = _gre_files(layout, subject, session, bids_filters)
    if auto:
        msg = f"{where}: no MEGRE files; using the single-echo '{auto}' part-mag/part-phase images."
        LOGGER.info(msg)
        warnings.append(msg)
    if not files:
        q = query("megre", bids_filters)
        raise MissingInputError(
            f"No GRE data for {where} in {root / ('sub-' + subject)}: searched anat/ for suffix "
            f"{q.get('suffix')!r} (e.g. {where}_echo-1_part-phase_MEGRE.nii.gz). Rename the files "
            "to BIDS MEGRE or map your naming with --bids-filter-file (see docs/usage.md)."
        )

    _, roles = split_megre_filters(bids_filters)
    runs = _group_runs(files, roles, subject, session)
    run_keys = sorted(runs)
    if len(run_keys) > 1:
        msg = (f"{where}: {len(run_keys)} GRE runs found ({[dict(k) for k in run_keys]}); using "
               f"the first, {dict(run_keys[0])}. Select another with --bids-filter-file "
               "(e.g. {\"megre\": {\"run\": 2}}).")
        LOGGER.warning(msg)
        warnings.append(msg)
    return runs[run_keys[0]]


def _magnitude_and_phase(run, where):
    """``(mag, phase, parts)``: ``{echo: path}`` of each, real/imaginary images standing in."""
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
    return mag, phase, parts


def collect_data(layout, subject, session=None, bids_filters=None, b0_strength=None) -> dict:
    """Gather and check one session's inputs (headers and sidecars only; no image data loaded).

    Parameters
    ----------
    layout : bids.BIDSLayout
        From :func:`qsmprep.bids.layout.build_layout`.
    subject : str
        Label, with or without ``sub-``.
    session : str or None
        Label, with or without ``ses-``; ``None`` for a dataset without sessions.
    bids_filters : mapping or None
        A parsed ``--bids-filter-file`` (:func:`qsmprep.bids.filters.load_bids_filters`).
    b0_strength : float or None
        ``--b0-strength`` (Tesla); overrides the sidecars.

    Returns
    -------
    dict
        ``subject``, ``session``, ``t1w`` (path or None), ``mag`` and ``phase`` (paths, sorted by
        echo number; with ``parts == 'real-imag'`` they hold the ``part-real`` and ``part-imag``
        images, converted by the loader), ``parts`` (``'mag-phase'`` or ``'real-imag'``),
        ``echo_times`` (s, ascending), ``b0`` (T), ``phase_units`` ('rad', 'arbitrary' or None
        when the sidecar says nothing), ``shape``, ``sources`` (``bids:raw:`` URIs of the GRE
        images, magnitude and phase of each echo in turn, then the T1w) and ``warnings``.

    Raises
    ------
    MissingInputError
        Exit 66: no GRE data, magnitude or phase missing, unreadable image.
    DataError
        Exit 65: inconsistent echoes, grids or sidecars (the file is named).
    """
    subject = _strip([subject], "sub-")[0]
    if session is not None:
        session = _strip([session], "ses-")[0]
    where = f"sub-{subject}" + (f"_ses-{session}" if session else "")
    warnings: list[str] = []
    root = Path(layout.root)

    run = _select_run(layout, subject, session, bids_filters, where, warnings)
    mag, phase, parts = _magnitude_and_phase(run, where)
    echoes = sorted(phase)  # numeric: echo-10 after echo-2
    mag_files = [mag[e] for e in echoes]
    phase_files = [phase[e] for e in echoes]

    # geometry first (headers only): a 4-D file per run would fail the EchoTime checks
    shape, _ = check_geometry(mag_files + phase_files)
    # metadata (inheritance through pybids)
    tes, b0_values, units_seen = read_echo_metadata(layout, echoes, mag_files, phase_files)
    check_echo_order(tes, echoes, phase_files, where)
    b0 = field_strength(b0_values, len(echoes), b0_strength, phase_files, where, warnings)
    units = phase_units(units_seen, phase_files, parts, where, warnings)
    t1w = _collect_t1w(layout, subject, session, bids_filters, where, warnings)

    sources = [bids_uri(p, root) for pair in zip(mag_files, phase_files) for p in pair]
    if t1w:
        sources.append(bids_uri(t1w, root))
    return {
        "subject": subject,
        "session": session,
        "t1w": t1w,
        "mag": mag_files,
        "phase": phase_files,
        "echo_times": tes,
        "b0": b0,
        "phase_units": units,
        "parts": parts,
        "shape": shape,
        "sources": sources,
        "warnings": warnings,
    }


def _collect_t1w(layout, subject, session, bids_filters, where, warnings):
    from bids.layout import Query

    base = {"subject": subject}
    candidates = []
    if session is not None:
        candidates = layout.get(**query("t1w", bids_filters, session=session, **base))
        if not candidates:  # session-less anatomy (sub-X/anat/sub-X_T1w.nii.gz)
            candidates = layout.get(**query("t1w", bids_filters, session=Query.NONE, **base))
    else:
        candidates = layout.get(**query("t1w", bids_filters, **base))
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
