"""The QSM chain as plain functions: one call per step, and :func:`reconstruct` for all of them.

Each step has one function, ``run_<step>``, that takes arrays and returns arrays plus the
step's provenance (the entries it contributes to the Chimap sidecar). :func:`reconstruct` calls
them in order; the Nipype interfaces (:mod:`qsmprep.interfaces.qsm`) call the very same functions
node by node (load files -> one ``run_<step>`` call -> save), so both paths give identical
arrays (``tests/qsm/test_pipeline.py`` checks it).

Order of the chain (2024 ISMRM consensus, QSM Consensus Organization Committee, Magn Reson Med
2024;91:1834-1862, doi:10.1002/mrm.30006): mask -> combine echoes into one total field (with
exact unwrapping) -> background field removal -> dipole inversion -> referencing.

Methods are chosen by name; the names, defaults, tunable parameters and consensus flags live in
one table, :mod:`qsmprep.qsm.methods`.
"""

from __future__ import annotations

import inspect
import logging
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from . import methods as _registry
from .kernels import b0_direction_from_affine, hz_to_ppm, ppm_to_hz, voxel_size_from_affine

LOGGER = logging.getLogger("qsmprep.qsm.pipeline")

#: step -> the words of the "Unknown ... method" error
_KIND = {"masking": "masking", "combination": "echo combination", "unwrapping": "unwrapping",
         "bf_removal": "background field removal", "inversion": "dipole inversion",
         "reference": "reference", "relaxometry": "R2*"}


def call_method(step: str, name: str, options=None, **inputs):
    """Call the function of method ``name`` of ``step`` with its inputs and options.

    Steps share one calling convention (see docs/architecture.md) but not every method needs
    every input (e.g. TKD ignores the magnitude), so ``inputs`` the function does not declare
    are dropped (all are passed when it takes ``**kwargs``). ``options`` are the user's method
    options: one the function does not declare is an error, never dropped (a misspelt option
    would otherwise run the default while the sidecar recorded the option).

    Parameters
    ----------
    step, name, options
        As for :func:`check_method_options` (``options``: ``QSMOptions.method_options[step]``).
    **inputs
        Inputs of the step (its calling convention).

    Returns
    -------
    object
        What the method returns.

    Raises
    ------
    ValueError
        From :func:`check_method_options` (the message lists the choices or the options).
    """
    func, sig = check_method_options(step, name, options, inputs)
    options = dict(options or {})
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return func(**inputs, **options)
    return func(**{k: v for k, v in inputs.items() if k in sig.parameters}, **options)


def check_method_options(step: str, name: str, options=None, inputs=()):
    """Check a method name and its options without running it (e.g. when a workflow is built).

    Parameters
    ----------
    step : str
        A step of :data:`qsmprep.qsm.methods.STEPS`.
    name : str
        The method name.
    options : dict, optional
        Options of the method.
    inputs : iterable of str
        Names of the step's inputs that will be passed too (an option may not shadow one).

    Returns
    -------
    func : callable
        The method's function (its module imported).
    signature : inspect.Signature

    Raises
    ------
    ValueError
        For a name that is not registered for ``step``, or an option the method's function does
        not declare (a function taking ``**kwargs``, e.g. ``auto``, is checked when it runs).
    """
    rec = _registry.find(step, name)
    if rec is None:
        raise ValueError(f"Unknown {_KIND[step]} method {name!r}; choose one of "
                         f"{sorted(_registry.names(step))}.")
    func = rec.load()
    sig = inspect.signature(func)
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return func, sig
    unknown = sorted(k for k in (options or {}) if k not in sig.parameters or k in inputs)
    if unknown:
        raise ValueError(f"Unknown option(s) {', '.join(map(repr, unknown))} for the "
                         f"{_KIND[step]} method {name!r}; its options are "
                         f"{', '.join(sorted(rec.parameters)) or 'none'}.")
    return func, sig


def _json_value(val):
    return list(val) if isinstance(val, tuple) else val


def method_parameters(step: str, name: str, **opts) -> dict:
    """Every tunable parameter of a method with the value that will be used.

    The record's defaults (:attr:`qsmprep.qsm.methods.Method.parameters`) overridden by
    ``opts``; recorded in the Chimap sidecar so that a map can be reproduced from its sidecar.

    Parameters
    ----------
    step : str
        A step of :data:`qsmprep.qsm.methods.STEPS`.
    name : str
        The method name; for a name outside the registry (e.g. ``"user"`` for a supplied brain
        mask) only ``opts`` are returned.
    **opts
        Options given for this run.

    Returns
    -------
    dict
        Parameter name -> value.

    Examples
    --------
    >>> method_parameters("inversion", "tkd", threshold=0.2)["threshold"]
    0.2
    """
    rec = _registry.find(step, name)
    if rec is None:
        return dict(opts)
    out = {k: _json_value(v) for k, v in rec.parameters.items()}
    out.update(opts)
    return out


@dataclass(frozen=True)
class QSMOptions:
    """Names of the method used at each step (choices: :mod:`qsmprep.qsm.methods`).

    Parameters
    ----------
    masking, combination, unwrapping, bf_removal, inversion, reference : str
        Method of each step (default: the step's default record).
    method_options : dict
        Step -> ``{option: value}`` passed to that step's method.
    """

    masking: str = _registry.default("masking")
    combination: str = _registry.default("combination")
    unwrapping: str = _registry.default("unwrapping")
    bf_removal: str = _registry.default("bf_removal")
    inversion: str = _registry.default("inversion")
    reference: str = _registry.default("reference")
    method_options: dict = field(default_factory=dict)

    def to_dict(self):
        """The options as a plain dict (field -> value)."""
        return asdict(self)


def consensus_report(options: QSMOptions) -> list[dict]:
    """Which 2024 ISMRM QSM consensus recommendations the chosen pipeline follows.

    A recommendation is followed when the chosen method's record lists it in ``consensus``
    (:data:`qsmprep.qsm.methods.RECOMMENDATIONS`).

    Parameters
    ----------
    options : QSMOptions
        The chosen methods (any object with the step names as attributes).

    Returns
    -------
    list of dict
        One dict per recommendation with keys ``recommendation`` (text) and ``follows`` (bool).

    References
    ----------
    QSM Consensus Organization Committee. Recommended implementation of quantitative
    susceptibility mapping for clinical research in the brain. Magn Reson Med
    2024;91:1834-1862, doi:10.1002/mrm.30006.
    """
    out = []
    for key, step, text, unregistered in _registry.RECOMMENDATIONS:
        rec = _registry.find(step, getattr(options, step))
        follows = unregistered if rec is None else key in rec.consensus
        out.append({"recommendation": text, "follows": bool(follows)})
    return out


def format_consensus_report(options: QSMOptions) -> str:
    """:func:`consensus_report` as log text, one ``[follows ]``/``[DEPARTS ]`` line each.

    Parameters
    ----------
    options : QSMOptions
        The chosen methods.

    Returns
    -------
    str
    """
    lines = ["QSM pipeline vs the 2024 ISMRM consensus recommendations (doi:10.1002/mrm.30006):"]
    for item in consensus_report(options):
        mark = "follows " if item["follows"] else "DEPARTS "
        lines.append(f"  [{mark}] {item['recommendation']}")
    return "\n".join(lines)


def _volume_ml(mask, voxel_size) -> float:
    return float(np.count_nonzero(mask)) * float(np.prod(voxel_size)) / 1000.0


def run_masking(mag, phase, tes, voxel_size, method, user_mask=None, exclude=None, **opts):
    """Step 1: brain mask from magnitude (and phase quality, method permitting).

    Parameters
    ----------
    mag, phase : ndarray
        4-D ``(x, y, z, echo)`` magnitude and phase (radians).
    tes : sequence of float
        Echo times (s).
    voxel_size : sequence of float
        Voxel size (mm).
    method : str
        A ``masking`` method of :mod:`qsmprep.qsm.methods`; ignored when ``user_mask`` is given.
    user_mask : ndarray, optional
        A supplied brain mask (non-zero = brain); replaces the computed one (``Method: user``).
    exclude : ndarray of bool, optional
        Voxels to leave out of any mask (e.g. non-finite input, see
        :func:`qsmprep.qsm.masking.nonfinite_voxels`).
    **opts
        Options of the method.

    Returns
    -------
    mask : ndarray of bool
    provenance : dict
        ``{"BrainMask": {"Method", "Parameters", "VolumeML", "NonFiniteVoxelsExcluded"}}``.
    """
    from .masking import drop_voxels

    if user_mask is not None:
        mask = np.asarray(user_mask) > 0
        method = "user"
    else:
        mask = np.asarray(call_method("masking", method, options=opts, mag=mag, phase=phase,
                                      tes=tes, voxel_size=voxel_size)).astype(bool)
    n_excluded = 0
    if exclude is not None:
        mask, n_excluded = drop_voxels(mask, exclude)
    prov = {"BrainMask": {"Method": method,
                          "Parameters": method_parameters("masking", method, **opts),
                          "VolumeML": round(_volume_ml(mask, voxel_size), 2),
                          "NonFiniteVoxelsExcluded": n_excluded}}
    return mask, prov


def run_field_fit(phase, mag, tes, mask, voxel_size, b0, combination, unwrapping, **opts):
    """Step 2: echo combination and unwrapping into one total field (ppm).

    Parameters
    ----------
    phase, mag : ndarray
        4-D ``(x, y, z, echo)`` phase (radians) and magnitude.
    tes : sequence of float
        Echo times (s).
    mask : ndarray of bool
        Brain mask.
    voxel_size : sequence of float
        Voxel size (mm).
    b0 : float
        Field strength (T).
    combination, unwrapping : str
        ``combination`` and ``unwrapping`` methods of :mod:`qsmprep.qsm.methods`.
    **opts
        Options of the combination method (unknown ones are passed on to the unwrapper).

    Returns
    -------
    fit : dict
        The method's result (``field_hz``, ``offset_rad``, ``noise_std_hz``, ...) plus
        ``field_ppm`` (float32, zero outside ``mask``) and ``reliability`` (float32, 0..1; the
        mask itself when the method gives none).
    provenance : dict
        ``{"EchoCombination": {...}, "PhaseUnwrapping": {...}}`` (method and parameters).
    """
    res = call_method("combination", combination, options=opts, phase4d=phase, mag4d=mag,
                      tes=np.asarray(tes, dtype=float), mask=mask, voxel_size=voxel_size,
                      unwrapping=unwrapping)
    fit = dict(res)
    fit["field_ppm"] = (hz_to_ppm(res["field_hz"], b0) * mask).astype(np.float32)
    if fit.get("reliability") is None:
        fit["reliability"] = np.asarray(mask, dtype=np.float32)
    prov = {
        "EchoCombination": {"Method": combination,
                            "Parameters": method_parameters("combination", combination, **opts)},
        "PhaseUnwrapping": {"Method": unwrapping,
                            "Parameters": method_parameters("unwrapping", unwrapping)},
    }
    return fit, prov


def run_background_removal(total_ppm, mask, voxel_size, b0_dir, method, weights=None, **opts):
    """Step 3: background field removal.

    Parameters
    ----------
    total_ppm : ndarray
        Total field (ppm).
    mask : ndarray of bool
        Brain mask.
    voxel_size : sequence of float
        Voxel size (mm).
    b0_dir : sequence of float
        Unit B0 direction in voxel axes.
    method : str
        A ``bf_removal`` method of :mod:`qsmprep.qsm.methods`; ``"auto"`` runs the method
        :func:`qsmprep.qsm.background.auto_method` picks for ``voxel_size``, and the provenance
        names that method (``Method``) with ``Selection`` saying why.
    weights : ndarray, optional
        Field reliability (data weight of methods with a data term).
    **opts
        Options of the method.

    Returns
    -------
    local_ppm : ndarray of float32
        Local field, zero outside ``eroded``.
    eroded : ndarray of bool
        The mask the local field is valid in.
    provenance : dict
        ``{"BackgroundFieldRemoval": {...}, "B0Direction": [...]}``.
    """
    record = {}
    if method == "auto":
        from .background import AUTO_PDF_MAX_VOXEL_MM, auto_method

        method = auto_method(voxel_size)
        vs = "x".join(f"{float(v):g}" for v in voxel_size)
        record["Selection"] = (f"auto: {method} for {vs} mm voxels (pdf when every voxel "
                               f"dimension is <= {AUTO_PDF_MAX_VOXEL_MM:g} mm, vsharp above)")
    local, eroded = call_method("bf_removal", method, options=opts, total_ppm=total_ppm,
                                mask=mask, voxel_size=voxel_size, b0_dir=b0_dir, weights=weights)
    eroded = np.asarray(eroded, dtype=bool)
    local = np.asarray(local, dtype=np.float32) * eroded
    prov = {
        "BackgroundFieldRemoval": {"Method": method, **record,
                                   "Parameters": method_parameters("bf_removal", method, **opts),
                                   "ErodedMaskVolumeML": round(_volume_ml(eroded, voxel_size), 2)},
        "B0Direction": [round(float(v), 6) for v in b0_dir],
    }
    return local, eroded, prov


def run_inversion(local_ppm, mask, voxel_size, b0_dir, method, weights=None, mag=None,
                  log_label="", info=None, noise_sd=None, **opts):
    """Step 4: dipole inversion; the convergence record, the field residual and their flags go
    into the provenance.

    Parameters
    ----------
    local_ppm : ndarray
        Local field (ppm).
    mask : ndarray of bool
        The (eroded) mask of the local field; ``chi`` is zero outside it.
    voxel_size : sequence of float
        Voxel size (mm).
    b0_dir : sequence of float
        Unit B0 direction in voxel axes.
    method : str
        An ``inversion`` method of :mod:`qsmprep.qsm.methods`.
    weights : ndarray, optional
        Field reliability; multiplied by ``mask`` before use.
    mag : ndarray, optional
        Magnitude, 3-D or 4-D (echo-combined by root-sum-of-squares) for morphology-enabled
        methods.
    log_label : str
        Prefix of the warnings logged (e.g. ``"sub-01 ses-baseline"``).
    info : dict, optional
        Filled with the solver's convergence record (``method``, ``iterations``, ``max_iter``,
        ``tol``, ``final_change``, ``converged``; iterative methods only).
    noise_sd : ndarray or float, optional
        Noise SD of the field (ppm; the echo fit's). When given, the provenance records how much
        of the field the map leaves unexplained (``FieldResidual``,
        :func:`qsmprep.qsm.inversion.field_residual`), flagged above
        :data:`qsmprep.qsm.inversion.FIELD_RESIDUAL_WARN`.
    **opts
        Options of the method.

    Returns
    -------
    chi : ndarray of float32
        Susceptibility (ppm), not referenced, zero outside ``mask``.
    provenance : dict
        ``{"DipoleInversion": {"Method", "Parameters", and for iterative solvers "Iterations",
        "MaxIterations", "FinalRelativeChange", "Converged", "StoppedBy"; with ``noise_sd``
        "FieldResidual": {"RMSOverNoise", "WarnAbove"}}}``, plus ``QualityFlags`` when the
        solver was cut short at its iteration cap (:func:`qsmprep.qsm.inversion.
        convergence_flag`; MEDI's designed stop at its iteration budget is recorded, not
        flagged) or the residual is above its threshold
        (:func:`qsmprep.qsm.inversion.residual_flag`).
    """
    from .inversion import FIELD_RESIDUAL_WARN, convergence_flag, field_residual, residual_flag
    from .masking import combine_magnitude

    info = {} if info is None else info
    chi = call_method("inversion", method, options=opts, local_ppm=local_ppm, mask=mask,
                      voxel_size=voxel_size, b0_dir=b0_dir,
                      weights=None if weights is None else weights * mask,
                      magnitude=None if mag is None else combine_magnitude(mag), info=info)
    chi = (np.asarray(chi, dtype=np.float32) * mask).astype(np.float32)
    record = {"Method": method, "Parameters": method_parameters("inversion", method, **opts)}
    if "converged" in info:
        record.update({"Iterations": info["iterations"], "MaxIterations": info["max_iter"],
                       "FinalRelativeChange": info["final_change"],
                       "Converged": info["converged"],
                       "StoppedBy": "tolerance" if info["converged"] else "iteration cap"})
    prov = {"DipoleInversion": record}
    flag = convergence_flag(info)
    flags = [flag]
    if noise_sd is not None:
        value = field_residual(chi, local_ppm, mask, voxel_size, b0_dir, noise_sd)
        record["FieldResidual"] = {"RMSOverNoise": value, "WarnAbove": FIELD_RESIDUAL_WARN}
        flags.append(residual_flag(value, method))
    label = (log_label + " ") if log_label else ""
    for f in flags:
        if f is not None:
            LOGGER.warning("%sdipole inversion (%s): %s", label, method, f["message"])
            prov.setdefault("QualityFlags", []).append(f)
    if flag is None and "converged" in info and not info["converged"]:
        LOGGER.info("%sdipole inversion (%s): stopped at its iteration budget (%d iterations, last "
                    "relative change %.3g, not above %.3g): the designed stop, not flagged "
                    "(docs/outputs.md)", label, method, info["iterations"], info["final_change"],
                    info["warn_change"])
    return chi, prov


def noise_sd_ppm(fit: dict, b0: float):
    """The echo fit's field noise SD in ppm (``noise_std_hz`` converted), or ``None``.

    Parameters
    ----------
    fit : dict
        A :func:`run_field_fit` result.
    b0 : float
        Field strength (T).

    Returns
    -------
    ndarray of float32, or None
        ``None`` when the combination method gives no ``noise_std_hz``.
    """
    sd = fit.get("noise_std_hz")
    return None if sd is None else hz_to_ppm(np.asarray(sd, dtype=np.float32), b0).astype(np.float32)


def run_referencing(chi, mask, method, ref_mask=None, mag=None, tes=None, voxel_size=None):
    """Step 5: referencing (subtract the value of a stated reference region).

    A method whose record ``needs`` a ``ref_mask`` (``csf``) derives it from the multi-echo
    magnitude when none is supplied (low R2*, deep inside the brain:
    :func:`qsmprep.qsm.reference.csf_mask_from_r2star`).

    Parameters
    ----------
    chi : ndarray
        Susceptibility (ppm), not referenced.
    mask : ndarray of bool
        Support of ``chi``.
    method : str
        A ``reference`` method of :mod:`qsmprep.qsm.methods`.
    ref_mask : ndarray of bool, optional
        Reference region on the same grid.
    mag : ndarray or callable, optional
        4-D magnitude, or a function without arguments that returns it (called only when the
        method needs it, so a caller need not load it otherwise).
    tes : sequence of float, optional
        Echo times (s), with ``mag``.
    voxel_size : sequence of float, optional
        Voxel size (mm); 1 mm isotropic when not given.

    Returns
    -------
    chi : ndarray of float32
        Referenced susceptibility, zero outside ``mask``.
    provenance : dict
        ``{"Reference": info}`` with ``reference`` (name), ``value_ppm`` and ``n_voxels``.

    Raises
    ------
    ValueError
        For an unknown method, or when a reference mask is needed and neither it nor a
        multi-echo magnitude is given.
    """
    rec = _registry.find("reference", method)
    if rec is not None and "ref_mask" in rec.needs and ref_mask is None:
        from .reference import csf_mask_from_r2star

        if callable(mag):
            mag = mag()
        if mag is None or tes is None or np.asarray(mag).ndim != 4 or np.asarray(mag).shape[-1] < 2:
            raise ValueError("CSF referencing needs a CSF mask or multi-echo magnitude (>= 2 echoes).")
        ref_mask = csf_mask_from_r2star(mag, tes, mask, voxel_size=voxel_size or (1.0, 1.0, 1.0))
    chi_ref, info = call_method("reference", method, chi=chi, mask=mask, ref_mask=ref_mask)
    return (np.asarray(chi_ref, dtype=np.float32) * mask).astype(np.float32), {"Reference": dict(info)}


def run_r2star(mag, tes, mask, method=None, field_ppm=None, b0=None, voxel_size=None, **opts):
    """R2* and T2* maps from the multi-echo magnitude (beside the chain).

    Parameters
    ----------
    mag : ndarray
        4-D magnitude.
    tes : sequence of float
        Echo times (s).
    mask : ndarray of bool
        Brain mask.
    method : str, optional
        A ``relaxometry`` method of :mod:`qsmprep.qsm.methods` (default: the step's default).
    field_ppm : ndarray, optional
        Total field (ppm, :func:`run_field_fit`); with ``b0`` and ``voxel_size`` it is passed
        on (in Hz) to a method that takes ``field_hz`` (``loglinear`` uses it with
        ``field_correction="sinc"``).
    b0 : float, optional
        Field strength (T), to convert ``field_ppm`` to Hz.
    voxel_size : sequence of float, optional
        Voxel size (mm).
    **opts
        Options of the method.

    Returns
    -------
    r2star, t2star : ndarray of float32
        R2* (1/s) and T2* (s), zero outside ``mask``.
    provenance : dict
        ``{"Method", "Parameters", "EchoTime"}``.
    """
    from .relaxometry import METHODS, r2star_t2star

    method = method or _registry.default("relaxometry")
    inputs = {}
    if method in METHODS:
        accepted = inspect.signature(METHODS[method]).parameters
        if field_ppm is not None and b0 is not None and "field_hz" in accepted:
            inputs["field_hz"] = ppm_to_hz(np.asarray(field_ppm, dtype=np.float64), float(b0))
        if voxel_size is not None and "voxel_size" in accepted:
            inputs["voxel_size"] = tuple(float(v) for v in voxel_size)
    r2, t2 = r2star_t2star(mag, tes, mask, method=method, **inputs, **opts)
    return r2, t2, {"Method": method,
                    "Parameters": method_parameters("relaxometry", method, **opts),
                    "EchoTime": [float(t) for t in tes]}


def merge_provenance(items, extra=None) -> dict:
    """Merge per-step provenance dicts into one sidecar dict.

    Keys of later steps win, except ``QualityFlags``: the lists of all steps (and of ``extra``)
    are concatenated, in order, into the result's ``QualityFlags``.

    Parameters
    ----------
    items : sequence of dict
        The provenance of each step, in chain order.
    extra : dict, optional
        Static entries written first (``Units``, ``EchoTime``, ...).

    Returns
    -------
    dict
    """
    out = dict(extra or {})
    flags = list(out.pop("QualityFlags", []))
    for item in items:
        item = dict(item)
        flags += list(item.pop("QualityFlags", []))
        out.update(item)
    out["QualityFlags"] = flags
    return out


def reconstruct(mag, phase, tes, b0, affine, options: QSMOptions | None = None, mask=None,
                ref_mask=None, exclude=None):
    """Run the whole chain on arrays; returns every intermediate, timings and provenance.

    Parameters
    ----------
    mag, phase : ndarray
        4-D ``(x, y, z, echo)`` (3-D for one echo); phase in radians.
    tes : sequence of float
        Echo times (s).
    b0 : float
        Field strength (T).
    affine : ndarray
        NIfTI affine of the GRE grid (voxel size and B0 direction come from it).
    options : QSMOptions, optional
        Methods and their options (default: every step's default).
    mask : ndarray, optional
        A supplied brain mask (skips the masking step).
    ref_mask : ndarray, optional
        Reference-region mask (CSF referencing).
    exclude : ndarray of bool, optional
        Voxels to leave out of the brain mask (non-finite input).

    Returns
    -------
    dict
        ``mask``, ``eroded_mask``, ``field_ppm``, ``reliability``, ``local_ppm``,
        ``chi_unreferenced``, ``chi``, ``inversion_info`` (convergence record),
        ``quality_flags``, ``reference`` (referencing info), ``r2star`` and ``t2star``
        (:func:`run_r2star` inside ``mask``, with the total field for
        ``method_options["relaxometry"]``), ``r2star_provenance``, ``provenance`` (the merged
        per-step provenance, as in the Chimap sidecar), ``timings`` (s per step), ``b0_dir``,
        ``voxel_size`` and ``options``.
    """
    options = options or QSMOptions()
    mopts = options.method_options or {}
    if mag.ndim == 3:
        mag, phase = mag[..., None], phase[..., None]
    voxel_size = tuple(float(v) for v in voxel_size_from_affine(affine))
    b0_dir = b0_direction_from_affine(affine)
    timings = {}
    t = time.perf_counter()
    mask, p_mask = run_masking(mag, phase, tes, voxel_size, options.masking, user_mask=mask,
                               exclude=exclude, **mopts.get("masking", {}))
    timings["masking"] = time.perf_counter() - t
    t = time.perf_counter()
    fit, p_fit = run_field_fit(phase, mag, tes, mask, voxel_size, b0, options.combination,
                               options.unwrapping, **mopts.get("combination", {}))
    timings["field"] = time.perf_counter() - t
    t = time.perf_counter()
    weights = fit["reliability"]
    local, eroded, p_bfr = run_background_removal(
        fit["field_ppm"], mask, voxel_size, b0_dir, options.bf_removal, weights=weights,
        **mopts.get("bf_removal", {}))
    timings["bf_removal"] = time.perf_counter() - t
    t = time.perf_counter()
    inv_info = {}
    chi, p_inv = run_inversion(local, eroded, voxel_size, b0_dir, options.inversion,
                               weights=weights, mag=mag, info=inv_info,
                               noise_sd=noise_sd_ppm(fit, b0), **mopts.get("inversion", {}))
    timings["inversion"] = time.perf_counter() - t
    t = time.perf_counter()
    chi_ref, p_ref = run_referencing(chi, eroded, options.reference, ref_mask=ref_mask, mag=mag,
                                     tes=tes, voxel_size=voxel_size)
    timings["reference"] = time.perf_counter() - t
    t = time.perf_counter()
    r2star, t2star, p_r2s = run_r2star(mag, tes, mask, field_ppm=fit["field_ppm"], b0=b0,
                                       voxel_size=voxel_size, **mopts.get("relaxometry", {}))
    timings["r2star"] = time.perf_counter() - t
    return {
        "mask": mask,
        "eroded_mask": eroded,
        "field_ppm": fit["field_ppm"],
        "reliability": weights,
        "local_ppm": local,
        "chi_unreferenced": chi,
        "chi": chi_ref,
        "inversion_info": inv_info,
        "quality_flags": list(p_inv.get("QualityFlags", [])),
        "reference": p_ref["Reference"],
        "r2star": r2star,
        "t2star": t2star,
        "r2star_provenance": p_r2s,
        "provenance": merge_provenance([p_mask, p_fit, p_bfr, p_inv, p_ref]),
        "timings": timings,
        "b0_dir": b0_dir,
        "voxel_size": voxel_size,
        "options": options.to_dict(),
    }
