"""Readers of the participant-level outputs: what the group level reads from ``OUTPUT_DIR``.

The participant level writes, per session, a ROI table ``*_atlas-<A>_desc-dgm_stats.tsv``
(:func:`qsmprep.roi.roi_statistics`, plus the ``qc_*`` columns of
:func:`qsmprep.roi.add_qc_columns`) and a ``*_Chimap.json`` sidecar recording how the map was
reconstructed (the ``chimap_sidecar`` node of :func:`qsmprep.workflows.qsm.init_qsm_wf`), and per
subject an HTML report
``sub-<label>.html``.  The functions here find and read those files; they never write.

* :func:`find_stats_tables` - every ROI table, with its participant, session and atlas
* :func:`read_stats_tables` - many ROI tables parsed at once (one ``read_csv`` per header)
* :func:`collect_provenance` - the reconstruction settings of the Chimap sidecars, summarised
* :func:`participant_reports` - relative links to the participants' HTML reports
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import UsageError
from . import names

__all__ = [
    "StatsTables",
    "collect_provenance",
    "find_stats_tables",
    "parse_entities",
    "participant_reports",
    "read_stats_tables",
    "read_tsv",
]

_READ_ENTITIES = ("sub", "ses", "atlas")


def parse_entities(path):
    """The ``sub``, ``ses`` and ``atlas`` entities of a BIDS file name.

    Parameters
    ----------
    path : str or Path
        File name or path; only the name is parsed.

    Returns
    -------
    dict
        ``{'sub': ..., 'ses': ..., 'atlas': ...}``, each key present only when the name has it.

    Examples
    --------
    >>> parse_entities("sub-01_ses-baseline_atlas-DGM_desc-dgm_stats.tsv")
    {'sub': '01', 'ses': 'baseline', 'atlas': 'DGM'}
    """
    return {k: v for k, v in names.parse_entities(Path(path).name).items() if k in _READ_ENTITIES}


def find_stats_tables(output_dir, atlas=None):
    """Every participant-level ROI table (``*_desc-dgm_stats.tsv``) under ``output_dir``.

    Parameters
    ----------
    output_dir : str or Path
        The qsmprep output folder (``OUTPUT_DIR/group/`` is skipped).
    atlas : str, optional
        Keep only the tables of this atlas (``atlas-<name>`` entity).  Needed when the output
        holds tables of several atlases, so that labels of different atlases never mix.

    Returns
    -------
    list of tuple
        ``(participant_id, session_id, atlas, path)`` sorted by path; ``session_id`` is ``n/a``
        without a session, ``atlas`` None without an ``atlas-`` entity.

    Raises
    ------
    UsageError
        Tables of several atlases and no ``atlas`` given (exit code 64).
    """
    output_dir = Path(output_dir)
    found = []
    for path in sorted(output_dir.glob("sub-*/**/anat/*_desc-dgm_stats.tsv")):
        if "group" in path.relative_to(output_dir).parts[:1]:
            continue
        ent = parse_entities(path)
        if "sub" not in ent:
            continue
        found.append((f"sub-{ent['sub']}", f"ses-{ent['ses']}" if "ses" in ent else "n/a", ent.get("atlas"), path))
    atlases = sorted({a for _, _, a, _ in found if a})
    if atlas is not None:
        found = [f for f in found if f[2] == atlas]
    elif len(atlases) > 1:
        raise UsageError(
            f"ROI tables of several atlases found under {output_dir} ({', '.join(atlases)}); the group "
            "level analyses one atlas at a time: move the other atlas' tables out of the output folder"
        )
    return found


def read_tsv(path):
    """Read one BIDS TSV file with ``n/a`` as the only missing value.

    Parameters
    ----------
    path : str or Path
        TSV file.

    Returns
    -------
    pandas.DataFrame
        The table; ``n/a`` cells are NaN, every other text (``NA``, ``null``) stays text.
    """
    return pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False)


def read_change_angles(output_dir, participant_ids, atlas=None):
    """The measured head-turn angle of each participant's change table, where there is one.

    Parameters
    ----------
    output_dir : str or Path
        The participant level's output folder.
    participant_ids : iterable of str
        ``sub-<label>`` of the participants to look at.
    atlas : str, optional
        Only change tables of ``atlas-<atlas>``.

    Returns
    -------
    pandas.DataFrame
        ``participant_id``, ``session_a``, ``session_b`` (``ses-<label>``), ``b0_angle_deg``:
        one row per ``*_desc-dgmchange_stats.tsv`` that has a ``b0_angle_deg`` value (the
        follow-up GRE registered to the baseline one:
        :func:`qsmprep.registration.b0_angle_between_sessions`).
    """
    output_dir = Path(output_dir)
    rows = []
    for pid in participant_ids:
        pattern = f"{pid}_atlas-{atlas or '*'}_desc-dgmchange_stats.tsv"
        for path in sorted((output_dir / pid / "anat").glob(pattern)):
            df = read_tsv(path)
            if "b0_angle_deg" not in df.columns or df.empty:
                continue
            angle = pd.to_numeric(df["b0_angle_deg"], errors="coerce").iloc[0]
            if pd.isna(angle):
                continue
            ses = [str(df[c].iloc[0]) for c in ("baseline_session", "followup_session")]
            rows.append({"participant_id": pid,
                         **{k: v if v.startswith("ses-") else f"ses-{v}"
                            for k, v in zip(("session_a", "session_b"), ses)},
                         "b0_angle_deg": float(angle)})
    return pd.DataFrame(rows, columns=["participant_id", "session_a", "session_b", "b0_angle_deg"])


class StatsTables(Sequence):
    """ROI tables parsed in one pass: a sequence of one DataFrame per path, plus their rows stacked.

    Returned by :func:`read_stats_tables`.  Files sharing a header are parsed together into one
    frame (the rows of a file stay contiguous), so that the group level can check columns,
    look at one column of every table and stack the tables it keeps without building one
    DataFrame per file and concatenating them again (both cost more than the parse itself at
    2,000 tables).  ``tables[i]`` is the DataFrame of ``paths[i]``, built on access.
    """

    def __init__(self, n, batches, where):
        self._n = n
        self._batches = batches  # [(columns, frame without _file)]
        self._where = where  # i -> (batch number, first row, stop row) or None (empty file)

    def __len__(self):
        return self._n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(self._n))]
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(i)
        loc = self._where[i]
        if loc is None:
            return pd.DataFrame()
        b, a, z = loc
        cols, frame = self._batches[b]
        if a == z:  # header only
            return pd.DataFrame(columns=cols)
        return frame.iloc[a:z].reset_index(drop=True)

    def columns(self, i):
        """Column names of table ``i`` (its header) without building the table.

        Parameters
        ----------
        i : int
            Position in the paths given to :func:`read_stats_tables`.

        Returns
        -------
        list of str
        """
        loc = self._where[i]
        return [] if loc is None else list(self._batches[loc[0]][0])

    def n_rows(self, i):
        """Number of rows of table ``i``.

        Parameters
        ----------
        i : int

        Returns
        -------
        int
        """
        loc = self._where[i]
        return 0 if loc is None else loc[2] - loc[1]

    def any_row(self, column, test):
        """Per table: does any row pass ``test`` in ``column``?

        Parameters
        ----------
        column : str
            Column looked at; a table without it gives False.
        test : callable
            ``test(Series) -> boolean Series``, applied to the column of all tables sharing a
            header at once (element-wise tests only, e.g. ``lambda c: c == 1``).

        Returns
        -------
        numpy.ndarray of bool
            One value per table.
        """
        out = np.zeros(self._n, dtype=bool)
        hits = {}
        for b, (cols, frame) in enumerate(self._batches):
            if column in cols and len(frame):
                hits[b] = np.asarray(test(frame[column]), dtype=bool)
        for i, loc in enumerate(self._where):
            if loc is not None and loc[0] in hits and loc[2] > loc[1]:
                out[i] = bool(hits[loc[0]][loc[1]:loc[2]].any())
        return out

    def stack(self, indices):
        """Tables ``indices`` stacked, equal to ``pd.concat([self[i] for i in indices],
        ignore_index=True)``.

        Parameters
        ----------
        indices : sequence of int
            Tables to stack, in order.

        Returns
        -------
        pandas.DataFrame
        """
        indices = list(indices)
        locs = [self._where[i] for i in indices]
        if locs and all(loc is not None and loc[2] > loc[1] for loc in locs) \
                and len({loc[0] for loc in locs}) == 1:
            # one header, no empty table: take the rows of the one parsed frame
            frame = self._batches[locs[0][0]][1]
            rows = np.concatenate([np.arange(a, z) for _, a, z in locs])
            return frame.take(rows).reset_index(drop=True)
        return pd.concat([self[i] for i in indices], ignore_index=True)


def read_stats_tables(paths):
    """Read many ROI tables at once; one DataFrame per path, same order.

    Files sharing a header are concatenated and parsed by a single ``pandas.read_csv`` call
    (parsing thousands of small files one by one dominates the group level's time).  The
    result equals reading each file with :func:`read_tsv`.

    Parameters
    ----------
    paths : sequence of str or Path
        ROI tables (``*_desc-dgm_stats.tsv``).

    Returns
    -------
    StatsTables
        A sequence of one DataFrame per path (built on access); a file with a header only gives
        an empty frame with its columns, an empty file an empty frame without columns.
        :meth:`StatsTables.stack` stacks tables without building them one by one.
    """
    texts = [Path(p).read_text(encoding="utf-8") for p in paths]
    by_header = {}
    for i, text in enumerate(texts):
        lines = text.splitlines()
        if not lines:
            continue
        by_header.setdefault(lines[0], []).append((i, lines[1:]))
    where = [None] * len(texts)
    batches = []
    for header, items in by_header.items():
        body = "".join(f"{i}\t{line}\n" for i, lines in items for line in lines if line.strip())
        frame = pd.read_csv(io.StringIO(f"_file\t{header}\n{body}"), sep="\t", na_values=["n/a"],
                            keep_default_na=False)
        cols = [c for c in frame.columns if c != "_file"]
        # rows of one file are contiguous: remember where each starts and stops
        ids = frame["_file"].to_numpy()
        frame = frame[cols]
        b = len(batches)
        batches.append((cols, frame))
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if len(ids) else np.array([], int)
        stops = np.r_[starts[1:], len(ids)] if len(ids) else np.array([], int)
        for a, z in zip(starts, stops):
            where[int(ids[a])] = (b, int(a), int(z))
        for i, _ in items:
            if where[i] is None:  # header only
                where[i] = (b, 0, 0)
    return StatsTables(len(texts), batches, where)


#: Text-valued outcomes of a step (what happened on this session, not how it was set up):
#: left out of the settings, so sessions that stopped differently do not read as mixed settings.
_OUTCOME_KEYS = frozenset({"StoppedBy"})


def _step_setting(value):
    """``(method, settings dict)`` of one provenance entry of a Chimap sidecar, or None.

    The participant level writes ``{"Method": ..., "Parameters": {...}, <measured values>}`` for
    most steps and ``{"reference": <region>, "value_ppm": ..., "n_voxels": ...}`` for
    referencing (:func:`qsmprep.qsm.reference.reference_mean`).  Only the method, its parameters
    and text-valued settings describe *how* a map was made; numbers measured on the session
    (mask volume, reference value, voxel counts) differ between sessions by nature and are left
    out, otherwise every cohort would look like one with mixed settings; so are the text-valued
    outcomes of :data:`_OUTCOME_KEYS` (``StoppedBy``: tolerance or iteration cap).
    """
    if not isinstance(value, dict):
        return None
    method = None
    for key in ("Method", "method", "reference", "Reference"):
        if key in value and isinstance(value[key], str):
            method = value[key]
            break
    if method is None:
        return None
    params = value.get("Parameters") or value.get("parameters") or {}
    if not isinstance(params, dict):
        params = {"Parameters": params}
    extra = {
        k: v
        for k, v in value.items()
        if k not in ("Method", "method", "reference", "Reference", "Parameters", "parameters")
        and k not in _OUTCOME_KEYS and isinstance(v, str)
    }
    return method, {**params, **extra}


def collect_provenance(output_dir, subjects=None, sessions=None):
    """Summarise the reconstruction provenance of every ``*_Chimap.json`` under ``output_dir``.

    Parameters
    ----------
    output_dir : str or Path
        qsmprep output folder.
    subjects : set of str, optional
        ``sub-<label>`` to include (default: every subject).
    sessions : set of (str, str), optional
        ``(sub-<label>, ses-<label>)`` pairs to include (default: every session); sessions
        left out of the analysis (exclusions, QC flags) are then not summarised.

    Returns
    -------
    dict
        ``step -> {description: count}`` for every step with a method (``DipoleInversion``,
        ``Reference``, ...), ``MagneticFieldStrength`` and ``EchoTime``; ``n_files``; and
        ``QualityFlags``: a list of ``{participant_id, session_id, step, severity, message}``
        from the sidecars' ``QualityFlags`` lists.  Sidecars in template space
        (``_space-`` copies of ``--output-spaces``) are not counted twice.
    """
    summary = {}
    flags = []
    files = sorted(p for p in Path(output_dir).glob("sub-*/**/*_Chimap.json")
                   if "_space-" not in p.name)  # --output-spaces copies repeat the GRE-grid map
    if subjects is not None:
        files = [f for f in files if parse_entities(f).get("sub") and f"sub-{parse_entities(f)['sub']}" in subjects]
    if sessions is not None:
        def key(f):
            ent = parse_entities(f)
            return (f"sub-{ent.get('sub')}", f"ses-{ent['ses']}" if "ses" in ent else "n/a")
        files = [f for f in files if key(f) in sessions]
    for path in files:
        try:
            side = json.loads(path.read_text())
        except (OSError, ValueError):
            summary.setdefault("_unreadable", {})[str(path.name)] = 1
            continue
        ent = parse_entities(path)
        for flag in side.get("QualityFlags") or []:
            if isinstance(flag, dict):
                flags.append({
                    "participant_id": f"sub-{ent.get('sub', '?')}",
                    "session_id": f"ses-{ent['ses']}" if "ses" in ent else "n/a",
                    "step": str(flag.get("step", "")),
                    "severity": str(flag.get("severity", "")),
                    "message": str(flag.get("message", "")),
                })
        for key, value in side.items():
            setting = _step_setting(value)
            if setting is not None:
                method, details = setting
                desc = str(method)
                if details:
                    desc += " (" + ", ".join(f"{k}={v}" for k, v in details.items()) + ")"
                summary.setdefault(key, {}).setdefault(desc, 0)
                summary[key][desc] += 1
            elif key in ("MagneticFieldStrength",):
                summary.setdefault(key, {}).setdefault(f"{value} T", 0)
                summary[key][f"{value} T"] += 1
            elif key == "EchoTime" and isinstance(value, list):
                desc = f"{len(value)} echoes, TE = " + ", ".join(f"{1000 * float(t):.3g}" for t in value) + " ms"
                summary.setdefault(key, {}).setdefault(desc, 0)
                summary[key][desc] += 1
    summary["n_files"] = len(files)
    summary["QualityFlags"] = flags
    return summary


def participant_reports(output_dir, participant_ids, report_dir):
    """Relative links from ``report_dir`` to each participant's ``sub-<label>.html``.

    Parameters
    ----------
    output_dir : str or Path
        qsmprep output folder (the participant reports sit at its top).
    participant_ids : iterable of str
        ``sub-<label>`` of the participants to link.
    report_dir : str or Path
        Folder of the page holding the links (``OUTPUT_DIR/group``).

    Returns
    -------
    list of dict
        ``{participant_id, href}`` in the order given; ``href`` is None when the report is
        missing.
    """
    out = []
    output_dir, report_dir = Path(output_dir), Path(report_dir)
    for pid in participant_ids:
        page = output_dir / f"{pid}.html"
        href = Path(os.path.relpath(page, report_dir)).as_posix() if page.exists() else None
        out.append({"participant_id": pid, "href": href})
    return out
