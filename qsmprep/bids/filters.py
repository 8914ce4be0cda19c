"""The ``--bids-filter-file`` and the pybids queries built from it (fMRIPrep semantics).

Top-level keys: ``megre`` (the GRE data) and ``t1w``; each value updates the default query
(:data:`DEFAULT_QUERIES`). ``megre`` may also say how each image of a run is recognised
(``mag``/``phase``/``real``/``imag`` selectors, :data:`DEFAULT_ROLES`): the input mapping for
non-MEGRE data such as OpenNeuro ds000221's ``acq-mag_GRE`` / ``acq-phase_GRE``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from ..errors import MissingInputError, UsageError

__all__ = ["NIFTI_EXT", "DEFAULT_QUERIES", "DEFAULT_ROLES", "ROLE_KEYS", "load_bids_filters",
           "split_megre_filters", "query", "matches", "has_megre_filter"]

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

    Parameters
    ----------
    path_or_dict : str, path-like, mapping or None
        The filter file, or its already parsed content.

    Returns
    -------
    dict
        Plain JSON values; ``{}`` for ``None``.

    Raises
    ------
    MissingInputError
        Exit 66: the file does not exist.
    UsageError
        Exit 64: not JSON, not an object, unknown keys, or misplaced role selectors.
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
            raise MissingInputError(f"--bids-filter-file {path} does not exist.")
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


def split_megre_filters(bids_filters):
    """Split the ``megre`` filter into the pybids query and the per-role selectors.

    Parameters
    ----------
    bids_filters : mapping or None
        A parsed filter file.

    Returns
    -------
    query : dict
        The ``megre`` entities without the role selectors.
    roles : dict
        ``{role: selector}`` for ``mag``, ``phase``, ``real``, ``imag`` (defaults filled in).
    """
    megre = dict((bids_filters or {}).get("megre", {}))
    roles = {k: dict(v) for k, v in DEFAULT_ROLES.items()}
    for role in ROLE_KEYS:
        if role in megre:
            roles[role] = dict(megre.pop(role))
    return megre, roles


def query(kind, bids_filters, **extra):
    """The pybids ``layout.get`` arguments for ``kind`` (``megre`` or ``t1w``).

    Parameters
    ----------
    kind : str
        A key of :data:`DEFAULT_QUERIES`.
    bids_filters : mapping or None
        A parsed filter file; its ``kind`` entry updates the default query.
    **extra
        Further entities (``subject``, ``session``, ...), applied last.

    Returns
    -------
    dict
        ``null`` converted to ``Query.NONE`` and ``"*"`` to ``Query.ANY``.
    """
    q = dict(DEFAULT_QUERIES[kind])
    f = (bids_filters or {}).get(kind, {})
    if kind == "megre":
        f, _ = split_megre_filters(bids_filters)
    q.update(f)
    q.update(extra)
    return {k: _convert_query_values(v) for k, v in q.items()}


def matches(entities: Mapping, selector: Mapping) -> bool:
    """Whether a file's entities satisfy a role selector (filter-file semantics).

    Parameters
    ----------
    entities : mapping
        pybids entities of one file.
    selector : mapping
        ``{entity: value or list of values}``; ``None`` means absent, ``"*"`` present.

    Returns
    -------
    bool

    Examples
    --------
    >>> matches({"part": "mag"}, {"part": ["mag", None]}), matches({}, {"part": "phase"})
    (True, False)
    """
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



def has_megre_filter(bids_filters) -> bool:
    """Whether the filter file restricts or maps the GRE query (so an empty match is its doing).

    Parameters
    ----------
    bids_filters : mapping or None
        A parsed filter file.

    Returns
    -------
    bool
    """
    megre = (bids_filters or {}).get("megre") or {}
    return bool(megre)
