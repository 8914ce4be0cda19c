"""The method registry: one :class:`Method` record per selectable algorithm of every QSM step.

Every consumer reads this one table: the command-line choices and defaults
(:mod:`qsmprep.cli.parser`, :func:`qsmprep.config.method_registry`), the provenance written into
the Chimap sidecar (:func:`qsmprep.qsm.pipeline.method_parameters`), the citation boilerplate
(:mod:`qsmprep.reports.citation`), the 2024-consensus report
(:func:`qsmprep.qsm.pipeline.consensus_report`), the BIDS ``desc-`` label of the output files and
the ``METHODS`` mapping of each numerical module (:class:`MethodTable`).

The records hold the function as a ``"module:function"`` string that is imported only when the
method runs, so reading the table (e.g. to build ``qsmprep --help``) imports neither numba nor
scipy.

Adding a method
---------------
1. Write the function in the step's module (its signature is the step's calling convention,
   see that module's docstring).
2. Add one :class:`Method` record to :data:`REGISTRY` below (name, function, ``desc`` label,
   one-line summary, citation keys, consensus flags, tunable parameters with their defaults).
3. Add its name to the step's row of the option table in ``docs/usage.md``
   (``tests/cli/test_parser.py`` checks that the table lists every record).

Examples
--------
>>> from qsmprep.qsm import methods
>>> methods.default("inversion")
'medi'
>>> methods.get("inversion", "tv_admm").desc
'tvadmm'
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["Method", "MethodTable", "REGISTRY", "STEPS", "CLI_STEPS", "OPTION_STEPS", "STEP_MODULES",
           "STEP_WORDS", "RECOMMENDATIONS", "NEEDS", "methods", "get", "find", "names", "default", "desc"]

#: Steps with selectable methods, in the order of the chain.
STEPS = ("masking", "combination", "unwrapping", "bf_removal", "inversion", "reference",
         "relaxometry")
#: Steps chosen on the command line (``--masking`` ... ``--reference``; the option's dest).
CLI_STEPS = STEPS[:6]
#: Steps whose method takes user options (``QSMOptions.method_options`` keys, ``--method-option``).
OPTION_STEPS = ("masking", "combination", "bf_removal", "inversion", "relaxometry")
#: Module of :mod:`qsmprep.qsm` that holds the functions of each step.
STEP_MODULES = {"masking": "masking", "combination": "echoes", "unwrapping": "unwrap",
                "bf_removal": "background", "inversion": "inversion", "reference": "reference",
                "relaxometry": "relaxometry"}
#: The step in words (help texts, methods boilerplate).
STEP_WORDS = {"masking": "brain masking", "combination": "echo combination",
              "unwrapping": "phase unwrapping", "bf_removal": "background field removal",
              "inversion": "dipole inversion", "reference": "susceptibility referencing",
              "relaxometry": "R2*/T2* mapping"}

#: 2024 ISMRM consensus recommendations (QSM Consensus Organization Committee, Magn Reson Med
#: 2024;91:1834-1862, doi:10.1002/mrm.30006) that a method choice can follow or depart from:
#: ``(key, step, text, follows when the name is not a registered method)``. A method follows
#: recommendation ``key`` when ``key`` is in its record's ``consensus``. The last field keeps the
#: verdict for a name outside the registry, e.g. ``masking == "user"`` (a supplied brain mask).
RECOMMENDATIONS = (
    ("fit_echoes", "combination",
     "Combine echoes into one field before background removal (nonlinear or weighted fit)", False),
    ("exact_unwrapping", "unwrapping",
     "Use exact, non-Laplacian phase unwrapping for quantification", True),
    ("phase_quality_mask", "masking",
     "Build the brain mask from magnitude and phase quality", True),
    ("sharp_pdf_family", "bf_removal",
     "Use a SHARP- or PDF-family background field removal", False),
    ("sparse_weighted_inversion", "inversion",
     "Use a sparsity-regularised (TV/L1), data-weighted iterative inversion", False),
    ("stated_reference", "reference",
     "Report susceptibility against a stated reference region", True),
)
_RECOMMENDATION_KEYS = {key for key, *_ in RECOMMENDATIONS}

#: Inputs a method may need beyond its step's calling convention (:attr:`Method.needs`).
NEEDS = {
    "ref_mask": "a reference-region mask; when none is supplied it is derived from the multi-echo "
                "magnitude (:func:`qsmprep.qsm.reference.csf_mask_from_r2star`)",
}


@dataclass(frozen=True)
class Method:
    """One selectable algorithm of one step.

    Parameters
    ----------
    name : str
        The choice on the command line and the ``Method`` value in the sidecar.
    step : str
        One of :data:`STEPS`.
    func : str
        ``"module:function"``, imported by :meth:`load` when the method runs.
    desc : str
        BIDS ``desc-`` label for files named after this method (alphanumeric only).
    summary : str
        One line: what the method does (help text, docs, methods text).
    references : tuple of str
        Citation keys of :data:`qsmprep.reports.citation.REFERENCES`.
    consensus : tuple of str
        Keys of :data:`RECOMMENDATIONS` that choosing this method follows.
    parameters : mapping
        Tunable option -> default value used when the option is not given; recorded in the
        Chimap sidecar (``Parameters``) so a map can be reproduced from its sidecar.
    default : bool
        The step's default (exactly one record per step).
    needs : tuple of str
        Extra inputs (keys of :data:`NEEDS`), e.g. ``("ref_mask",)`` for CSF referencing.
    """

    name: str
    step: str
    func: str
    desc: str
    summary: str
    references: tuple = ()
    consensus: tuple = ()
    parameters: Mapping = field(default_factory=dict, hash=False)
    default: bool = False
    needs: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "parameters", MappingProxyType(dict(self.parameters)))
        object.__setattr__(self, "references", tuple(self.references))
        object.__setattr__(self, "consensus", tuple(self.consensus))
        object.__setattr__(self, "needs", tuple(self.needs))

    def load(self):
        """Import and return the function (``func``).

        Returns
        -------
        callable
            The step function of this method.
        """
        module, _, attr = self.func.partition(":")
        return getattr(importlib.import_module(module), attr)


def _m(step, name, func, summary, **kw):
    module = STEP_MODULES[step]
    kw.setdefault("desc", re.sub(r"[^A-Za-z0-9]", "", name))
    return Method(name=name, step=step, func=f"qsmprep.qsm.{module}:{func}", summary=summary,
                  **kw)


_MAGNITUDE_MASK = {"threshold": None, "threshold_factor": 1.0, "combine": "rss",
                   "smooth_mm": 1.0, "erode_radius_mm": 4.0, "close_radius_mm": 2.0}
_FIELD_FIT = {"crop": True, "noise_sigma": None}
_INVERSION_COMMON = {"pad_mm": 12.0, "workers": None}

#: Every method of every step (registry order = order of the command-line choices).
REGISTRY: tuple[Method, ...] = (
    # masking: f(mag, phase, tes, voxel_size, **opts) -> bool mask
    _m("masking", "magnitude", "magnitude_method",
       "magnitude threshold, morphological cutting of scalp bridges, hole filling",
       references=("stewart2022qsmxt",), parameters=dict(_MAGNITUDE_MASK, fill=True)),
    _m("masking", "phase-quality", "phase_quality_method",
       "magnitude mask pruned by ROMEO phase quality and outer-shell removal (QSMxT-style)",
       references=("stewart2022qsmxt", "dymerska2021romeo"), consensus=("phase_quality_mask",),
       parameters=dict(_MAGNITUDE_MASK, quality_threshold=None, shell_mm=2.0, fill=True),
       default=True),
    # echo combination: f(phase4d, mag4d, tes, mask, voxel_size, unwrapping, **opts) -> dict
    _m("combination", "nonlinear", "fit_nonlinear",
       "nonlinear complex fit of field and phase offset over all echoes, then unwrapping",
       references=("liu2013nonlinear",), consensus=("fit_echoes",),
       parameters=dict(n_iter=30, **_FIELD_FIT), default=True),
    _m("combination", "linear", "fit_linear",
       "MCPC-3D-S offset removal, unwrapping, weighted linear fit of phase against TE",
       references=("eckstein2018mcpc3ds",), consensus=("fit_echoes",),
       parameters=dict(offset_sigma_mm=4.0, **_FIELD_FIT)),
    _m("combination", "single-echo", "fit_single_echo",
       "first echo only: unwrapped phase / (2 pi TE), phase offset assumed 0",
       parameters=dict(_FIELD_FIT)),
    # unwrapping: f(wrapped, voxel_size, mask=None, mag=None, **opts) -> unwrapped
    _m("unwrapping", "romeo", "unwrap_romeo",
       "ROMEO quality-guided region growing (exact)",
       references=("dymerska2021romeo",), consensus=("exact_unwrapping",),
       parameters={"phase2": None, "te_ratio": None, "nbins": 255, "correct_global": True,
                   "return_info": False}, default=True),
    _m("unwrapping", "laplacian", "unwrap_laplacian",
       "DCT Laplacian unwrapping (fast, not exact: true phase up to a harmonic function)",
       references=("schofield2003laplacian",), parameters={"mask_laplacian": False}),
    _m("unwrapping", "skimage", "unwrap_skimage",
       "scikit-image reliability-sorted path following (exact)",
       references=("herraez2002unwrap", "abdulrahman2007unwrap"), consensus=("exact_unwrapping",),
       parameters={"seed": 0}),
    # background field removal: f(total_ppm, mask, voxel_size, b0_dir, weights, **opts)
    #   -> (local_ppm, eroded_mask)
    _m("bf_removal", "vsharp", "vsharp",
       "V-SHARP: spherical mean value filtering at decreasing radii near the mask edge",
       references=("li2011vsharp", "schweser2011sharp"), consensus=("sharp_pdf_family",),
       parameters={"radii_mm": None, "threshold": 0.02, "refine_order": 0, "workers": None}),
    _m("bf_removal", "pdf", "pdf",
       "projection onto dipole fields (weighted least squares, CG stopped early)",
       references=("liu2011pdf",), consensus=("sharp_pdf_family",),
       parameters={"tol": 1e-4, "max_iter": 100, "pad_mm": 20.0, "erode_mm": 0.0,
                   "weighted": True, "workers": None}),
    _m("bf_removal", "resharp", "resharp",
       "RESHARP: SHARP with Tikhonov regularisation solved by conjugate gradients",
       references=("sun2014resharp",), consensus=("sharp_pdf_family",),
       parameters={"radius_mm": None, "lam": 1e-3, "tol": 1e-4, "max_iter": 200,
                   "workers": None}),
    _m("bf_removal", "lbv", "lbv",
       "LBV: Laplace's equation inside the mask with the total field on its boundary",
       references=("zhou2014lbv",), consensus=("sharp_pdf_family",),
       parameters={"tol": 1e-6, "max_iter": 5000, "peel": 2, "levels": 4}),
    # auto: the sidecar records the method that ran (qsmprep.qsm.pipeline.run_background_removal)
    _m("bf_removal", "auto", "auto",
       "PDF at voxels up to 2.5 mm, V-SHARP for coarser voxels (measured on two simulators)",
       references=("liu2011pdf", "li2011vsharp", "schweser2011sharp"),
       consensus=("sharp_pdf_family",), default=True),
    # dipole inversion: f(local_ppm, mask, voxel_size, b0_dir, weights, magnitude, **opts) -> chi
    _m("inversion", "tkd", "tkd", "truncated k-space division",
       references=("shmueli2009tkd",), parameters=dict(threshold=0.19, **_INVERSION_COMMON)),
    _m("inversion", "tikhonov", "tikhonov", "closed-form Tikhonov (L2) regularised inversion",
       references=("bilgic2014fast", "kressler2010nonlinear"),
       parameters=dict(lam=1e-3, **_INVERSION_COMMON)),
    _m("inversion", "cg", "cg", "data-weighted L2 inversion solved by conjugate gradients",
       references=("kressler2010nonlinear", "li2015ilsqr"),
       parameters=dict(lam=1e-3, tol=1e-3, max_iter=100, **_INVERSION_COMMON)),
    _m("inversion", "tv_admm", "tv_admm", "data-weighted total variation by ADMM (FANSI-style)",
       references=("bilgic2014fast", "milovic2018fansi"),
       consensus=("sparse_weighted_inversion",),
       parameters=dict(alpha=3e-4, mu1=None, mu2=1.0, n_iter=50, tol=1e-3, data_fidelity="l2",
                       l1_threshold=1e-3, **_INVERSION_COMMON)),
    _m("inversion", "medi", "medi",
       "morphology-enabled (magnitude-edge weighted) total variation by ADMM",
       references=("liu2011medi", "liu2012medi"), consensus=("sparse_weighted_inversion",),
       parameters=dict(alpha=3e-4, edge_fraction=0.3, mu1=None, mu2=1.0, n_iter=50, tol=1e-3,
                       data_fidelity="l2", l1_threshold=1e-3, **_INVERSION_COMMON), default=True),
    _m("inversion", "rts", "rts",
       "rapid two-step: well-conditioned k-space first, then TV on the ill-conditioned cone",
       references=("kames2018rts",), consensus=("sparse_weighted_inversion",),
       parameters=dict(delta=0.15, mu=1e5, rho=10.0, n_iter=20, tol=1e-2, ls_iter=30, tau=0.7,
                       gamma=5.0, step1="masked_cg", **_INVERSION_COMMON)),
    # referencing: f(chi, mask, ref_mask=None) -> (chi_referenced, info)
    _m("reference", "mean", "reference_mean", "subtract the mean over the whole (eroded) mask",
       references=("qsmconsensus2024",), consensus=("stated_reference",), default=True),
    _m("reference", "csf", "reference_csf",
       "subtract the mean over a CSF mask (supplied, or from low R2* deep in the brain)",
       references=("straub2017reference",), consensus=("stated_reference",),
       needs=("ref_mask",)),
    _m("reference", "none", "reference_none", "no referencing (values relative to an unstated "
       "reference)"),
    # R2*: f(mag4d, tes, mask, **opts) -> r2star
    # ``loglinear`` option ``field_correction="sinc"``: divide each echo by the attenuation by
    # the field gradient across the voxel (Fernandez-Seara & Wehrli MRM 2000;44:358; needs the
    # total field, which run_r2star passes on; qsmprep.qsm.relaxometry.dephasing_factor)
    _m("relaxometry", "loglinear", "r2star_loglinear",
       "weighted log-linear least-squares fit of the magnitude decay (optionally corrected for "
       "the field gradient across the voxel)",
       parameters={"r2star_max": 500.0, "field_correction": "none", "correction_floor": 0.3,
                   "correction_smooth_mm": 0.0}, default=True),
    _m("relaxometry", "arlo", "r2star_arlo",
       "auto-regression on linear operations (ARLO; equally spaced echoes)",
       parameters={"r2star_max": 500.0, "spacing_rtol": 1e-3}),
)


def _validate(registry) -> None:
    seen = set()
    for m in registry:
        if m.step not in STEPS:
            raise ValueError(f"method {m.name!r}: unknown step {m.step!r}")
        if (m.step, m.name) in seen:
            raise ValueError(f"method {m.name!r} registered twice for step {m.step!r}")
        seen.add((m.step, m.name))
        if not re.fullmatch(r"[A-Za-z0-9]+", m.desc):
            raise ValueError(f"method {m.name!r}: desc label {m.desc!r} is not alphanumeric "
                             "(BIDS entity values allow letters and digits only)")
        unknown = set(m.consensus) - _RECOMMENDATION_KEYS
        if unknown:
            raise ValueError(f"method {m.name!r}: unknown consensus keys {sorted(unknown)}")
        if set(m.needs) - set(NEEDS):
            raise ValueError(f"method {m.name!r}: unknown needs {sorted(set(m.needs) - set(NEEDS))}")
        if ":" not in m.func:
            raise ValueError(f"method {m.name!r}: func {m.func!r} is not 'module:function'")
    for step in STEPS:
        recs = [m for m in registry if m.step == step]
        if recs and sum(m.default for m in recs) != 1:
            raise ValueError(f"step {step!r} needs exactly one default method")
        descs = [m.desc for m in recs]
        if len(set(descs)) != len(descs):
            raise ValueError(f"step {step!r}: two methods share a desc label")


_validate(REGISTRY)


def methods(step: str) -> tuple[Method, ...]:
    """The records of one step, in registry order.

    Parameters
    ----------
    step : str
        One of :data:`STEPS`.

    Returns
    -------
    tuple of Method
    """
    if step not in STEPS:
        raise ValueError(f"Unknown step {step!r}; choose one of {list(STEPS)}.")
    return tuple(m for m in REGISTRY if m.step == step)


def names(step: str) -> tuple[str, ...]:
    """The method names of one step, in registry order (the command-line choices).

    Parameters
    ----------
    step : str
        One of :data:`STEPS`.

    Returns
    -------
    tuple of str

    Examples
    --------
    >>> names("masking")
    ('magnitude', 'phase-quality')
    """
    return tuple(m.name for m in methods(step))


def default(step: str) -> str:
    """The default method name of one step.

    Parameters
    ----------
    step : str
        One of :data:`STEPS`.

    Returns
    -------
    str
    """
    return next(m.name for m in methods(step) if m.default)


def get(step: str, name: str) -> Method:
    """The record of ``name`` in ``step``.

    Parameters
    ----------
    step : str
        One of :data:`STEPS`.
    name : str
        The method name.

    Returns
    -------
    Method

    Raises
    ------
    ValueError
        When ``name`` is not registered for ``step``; the message lists the choices.
    """
    for m in methods(step):
        if m.name == name:
            return m
    raise ValueError(f"Unknown {STEP_WORDS[step]} method {name!r}; choose one of "
                     f"{sorted(names(step))}.")


def desc(step: str, name: str) -> str:
    """The BIDS ``desc-`` label of a method.

    Parameters
    ----------
    step : str
        One of :data:`STEPS`.
    name : str
        The method name.

    Returns
    -------
    str
        Letters and digits only.

    Raises
    ------
    ValueError
        When ``name`` is not registered for ``step``.

    Examples
    --------
    >>> desc("inversion", "tv_admm")
    'tvadmm'
    """
    return get(step, name).desc


def find(step: str, name: str) -> Method | None:
    """Like :func:`get`, but ``None`` for an unregistered name (e.g. ``"user"`` masks).

    Parameters
    ----------
    step : str
        One of :data:`STEPS`.
    name : str
        The method name.

    Returns
    -------
    Method or None
    """
    return next((m for m in methods(step) if m.name == name), None)


class MethodTable(Mapping):
    """Read-only ``name -> function`` view of one step's records (the modules' ``METHODS``).

    Functions are imported on first access, so a module can define ``METHODS =
    MethodTable("<step>")`` below its functions without an import cycle.

    Parameters
    ----------
    step : str
        One of :data:`STEPS`.

    Examples
    --------
    >>> from qsmprep.qsm import background
    >>> list(background.METHODS)[:2]
    ['vsharp', 'pdf']
    """

    def __init__(self, step: str):
        self.step = step

    def __getitem__(self, name):
        rec = find(self.step, name)
        if rec is None:
            raise KeyError(name)
        return rec.load()

    def __iter__(self):
        return iter(names(self.step))

    def __len__(self):
        return len(methods(self.step))

    def __repr__(self):
        return f"MethodTable({self.step!r}: {list(self)})"
