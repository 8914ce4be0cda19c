"""Quality flags of one session, gathered for the participant report (plain functions).

Sources of flags (each flag: ``{"category", "severity" ("warning"|"error"), "message"}``):

* registration quality: the stats table's ``qc_<metric>`` columns, ``qc_flagged`` (1 = below the
  documented threshold) and ``qc_reasons`` (written by the registration step; absent columns mean
  "not assessed", not "flagged");
* small ROIs: a structure whose statistics rest on fewer than :data:`MIN_ROI_VOXELS` voxels;
* reconstruction: every entry of the Chimap sidecar's ``QualityFlags`` list (solver cut short,
  field residual far above the noise, non-finite voxels, ...), as the QSM steps wrote them;
* method choices that depart from the 2024 ISMRM QSM consensus
  (:func:`qsmprep.qsm.pipeline.consensus_report`), read from the sidecar's recorded methods.
"""

from __future__ import annotations

import math

import pandas as pd

#: A structure measured on fewer voxels than this is flagged: its mean rests on a handful of
#: voxels, most of them on the label boundary where partial volume and sub-voxel label
#: placement decide the value (label sizes at 3 mm and 1 mm: docs/outputs.md).
MIN_ROI_VOXELS = 20

#: sidecar key -> QSMOptions field
_SIDECAR_STEPS = {"BrainMask": "masking", "EchoCombination": "combination",
                  "PhaseUnwrapping": "unwrapping", "BackgroundFieldRemoval": "bf_removal",
                  "DipoleInversion": "inversion"}
#: names the referencing step writes -> ``--reference`` choice
_REFERENCE_NAMES = {"whole_brain_mean": "mean", "csf": "csf", "none": "none"}


def _flag(category, severity, message):
    return {"category": category, "severity": severity, "message": message}


def registration_flags(stats: pd.DataFrame | None) -> tuple[list[dict], dict]:
    """Flags and metric values from the ``qc_*`` columns of a per-session stats table.

    Parameters
    ----------
    stats : pandas.DataFrame or None
        A ``*_desc-dgm_stats.tsv`` table. Without ``qc_flagged`` nothing is flagged
        (registration quality not assessed is not a failure).

    Returns
    -------
    flags : list of dict
        One ``registration`` warning, with the ``qc_reasons``, when any row has
        ``qc_flagged == 1``; else empty.
    metrics : dict
        Each ``qc_<metric>`` column (except ``qc_flagged``/``qc_reasons``) -> its first
        numeric value, for display.

    Example
    -------
    >>> import pandas as pd
    >>> registration_flags(pd.DataFrame({"qc_dice": [0.8], "qc_flagged": [0]}))
    ([], {'qc_dice': 0.8})
    """
    if stats is None or stats.empty:
        return [], {}
    metrics = {}
    for col in stats.columns:
        if col.startswith("qc_") and col not in ("qc_flagged", "qc_reasons"):
            vals = pd.to_numeric(stats[col], errors="coerce").dropna()
            if len(vals):
                metrics[col] = float(vals.iloc[0])
    flags = []
    if "qc_flagged" in stats.columns:
        flagged = pd.to_numeric(stats["qc_flagged"], errors="coerce").fillna(0)
        if (flagged == 1).any():
            reasons = ""
            if "qc_reasons" in stats.columns:
                texts = [str(r) for r in stats["qc_reasons"].dropna().unique() if str(r) != "n/a"]
                reasons = "; ".join(texts)
            flags.append(_flag("registration", "warning",
                               "registration quality below the documented threshold"
                               + (f": {reasons}" if reasons else "")
                               + " (the group level excludes this session unless "
                                 "--keep-flagged)"))
    return flags, metrics


def small_roi_flags(stats: pd.DataFrame | None, min_voxels: int = MIN_ROI_VOXELS) -> list[dict]:
    """One flag per structure measured on too few voxels.

    Parameters
    ----------
    stats : pandas.DataFrame or None
        A per-session stats table with ``name`` and ``n_voxels``.
    min_voxels : int
        Threshold; a row with fewer voxels is flagged.

    Returns
    -------
    list of dict
        ``small ROI`` flags: ``error`` for an empty label (0 voxels), ``warning`` otherwise.

    Example
    -------
    >>> import pandas as pd
    >>> [f["severity"] for f in small_roi_flags(pd.DataFrame({"name": ["a", "b", "c"],
    ...                                                       "n_voxels": [19, 0, 20]}))]
    ['warning', 'error']
    """
    if stats is None or stats.empty or "n_voxels" not in stats.columns:
        return []
    out = []
    for row in stats.to_dict("records"):
        n = row.get("n_voxels")
        try:
            n = int(n)
        except (TypeError, ValueError):
            continue
        if n < min_voxels:
            sev = "error" if n == 0 else "warning"
            what = "no voxel (label empty inside the QSM mask)" if n == 0 else f"{n} voxels"
            out.append(_flag("small ROI", sev, f"{row.get('name', '?')}: {what}, below the "
                             f"{min_voxels}-voxel threshold; its mean is unreliable"))
    return out


def sidecar_flags(sidecar: dict | None) -> list[dict]:
    """The Chimap sidecar's ``QualityFlags`` as report flags.

    Parameters
    ----------
    sidecar : dict or None
        A ``*_Chimap.json`` sidecar; each ``QualityFlags`` entry has ``step``, ``severity``
        (``warning``/``error``) and ``message``.

    Returns
    -------
    list of dict
        One flag per entry, its category the step that wrote it (a malformed entry becomes a
        ``reconstruction`` warning with its text; an unknown severity becomes ``warning``).
    """
    out = []
    for item in (sidecar or {}).get("QualityFlags") or []:
        if not isinstance(item, dict):
            out.append(_flag("reconstruction", "warning", str(item)))
            continue
        sev = item.get("severity") if item.get("severity") in ("warning", "error") else "warning"
        step = item.get("step") or "reconstruction"
        out.append(_flag(str(step), sev, str(item.get("message", ""))))
    return out


def options_from_sidecar(sidecar: dict | None):
    """The method choices a Chimap sidecar records.

    Parameters
    ----------
    sidecar : dict or None
        A ``*_Chimap.json`` sidecar (``BrainMask``, ``EchoCombination``, ``PhaseUnwrapping``,
        ``BackgroundFieldRemoval``, ``DipoleInversion`` with ``Method``; ``Reference``).

    Returns
    -------
    QSMOptions or None
        The recorded methods (defaults for steps the sidecar does not name); ``None`` when it
        names none.
    """
    from ..qsm.pipeline import QSMOptions

    sidecar = sidecar or {}
    kwargs = {}
    for key, field in _SIDECAR_STEPS.items():
        method = (sidecar.get(key) or {}).get("Method") if isinstance(sidecar.get(key), dict) else None
        if method:
            kwargs[field] = str(method)
    ref = sidecar.get("Reference")
    if isinstance(ref, dict):
        name = ref.get("Method") or ref.get("reference")
        if name:
            kwargs["reference"] = _REFERENCE_NAMES.get(str(name), str(name))
    if not kwargs:
        return None
    return QSMOptions(**kwargs)


def consensus_flags(sidecar: dict | None) -> list[dict]:
    """One warning per QSM consensus recommendation the recorded methods depart from.

    Parameters
    ----------
    sidecar : dict or None
        A ``*_Chimap.json`` sidecar (read with :func:`options_from_sidecar`).

    Returns
    -------
    list of dict
        ``consensus`` warnings ``departs from: <recommendation>`` (empty without recorded
        methods).

    References
    ----------
    .. [1] QSM Consensus Organization Committee, Bilgic B, Costagli M, et al. Recommended
       implementation of quantitative susceptibility mapping for clinical research in the
       brain: a consensus of the ISMRM electro-magnetic tissue properties study group.
       Magn Reson Med. 2024;91:1834-1862. doi:10.1002/mrm.30006
    """
    from ..qsm.pipeline import consensus_report

    options = options_from_sidecar(sidecar)
    if options is None:
        return []
    return [_flag("consensus", "warning", f"departs from: {item['recommendation']}")
            for item in consensus_report(options) if not item["follows"]]


def session_flags(stats: pd.DataFrame | None, sidecar: dict | None,
                  min_voxels: int = MIN_ROI_VOXELS) -> tuple[list[dict], dict]:
    """Every flag of one session, and the registration metric values (for display).

    Parameters
    ----------
    stats : pandas.DataFrame or None
        The session's stats table.
    sidecar : dict or None
        The session's Chimap sidecar.
    min_voxels : int
        Small-ROI threshold (:data:`MIN_ROI_VOXELS`).

    Returns
    -------
    flags : list of dict
        Registration, small-ROI, reconstruction and consensus flags, in that order.
    metrics : dict
        Finite ``qc_<metric>`` values.
    """
    reg, metrics = registration_flags(stats)
    flags = reg + small_roi_flags(stats, min_voxels) + sidecar_flags(sidecar) + consensus_flags(sidecar)
    return flags, {k: v for k, v in metrics.items() if math.isfinite(v)}
