"""The QSM chain as plain functions: one call per step, and :func:`reconstruct` for all of them.

The Nipype workflow (:mod:`qsmprep.workflows.qsm`) runs the very same step functions node by
node; benchmarks and tests call :func:`reconstruct` directly on arrays.

Order of the chain (2024 ISMRM consensus, QSM Consensus Organization Committee, Magn Reson Med
2024;91:1834-1862, doi:10.1002/mrm.30006): mask -> combine echoes into one total field (with
exact unwrapping) -> background field removal -> dipole inversion -> referencing.
"""

from __future__ import annotations

import inspect
import logging
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from . import background, echoes, inversion, masking, reference
from .kernels import b0_direction_from_affine, hz_to_ppm, voxel_size_from_affine

LOGGER = logging.getLogger("qsmprep.qsm.pipeline")


def call_method(registry: dict, name: str, kind: str, **kwargs):
    """Call ``registry[name]`` with the keyword arguments its signature accepts.

    Steps share one calling convention (see docs/architecture.md) but not every method needs
    every input (e.g. TKD ignores the magnitude); unknown names raise a ``ValueError`` that lists
    the valid choices.
    """
    if name not in registry:
        raise ValueError(f"Unknown {kind} method {name!r}; choose one of {sorted(registry)}.")
    func = registry[name]
    sig = inspect.signature(func)
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return func(**kwargs)
    return func(**{k: v for k, v in kwargs.items() if k in sig.parameters})


_DATA_ARGS = {
    "mag", "phase", "tes", "voxel_size", "phase4d", "mag4d", "mask", "unwrapping", "total_ppm",
    "b0_dir", "weights", "local_ppm", "magnitude", "chi", "ref_mask", "wrapped", "info",
}


def method_parameters(registry: dict, name: str, **opts) -> dict:
    """Every tunable parameter of ``registry[name]`` with the value that will be used.

    Signature defaults (JSON-friendly scalars and sequences) overridden by ``opts``; recorded in
    the Chimap sidecar so that a map can be reproduced from its sidecar alone.
    """
    func = registry.get(name)
    if func is None:
        return dict(opts)
    out = {}
    for pname, param in inspect.signature(func).parameters.items():
        if pname in _DATA_ARGS or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            continue
        if param.default is inspect.Parameter.empty:
            continue
        val = param.default
        if isinstance(val, (bool, int, float, str)) or val is None:
            out[pname] = val
        elif isinstance(val, (tuple, list)) and all(isinstance(v, (int, float, str)) for v in val):
            out[pname] = list(val)
    out.update(opts)
    return out


@dataclass(frozen=True)
class QSMOptions:
    """Names of the method used at each step (choices: the ``METHODS`` dict of each module)."""

    masking: str = masking.DEFAULT
    combination: str = echoes.DEFAULT
    unwrapping: str = "romeo"
    bf_removal: str = background.DEFAULT
    inversion: str = inversion.DEFAULT
    reference: str = reference.DEFAULT
    method_options: dict = field(default_factory=dict)

    def to_dict(self):
        return asdict(self)


# (recommendation, predicate on options, what departing means)
_CONSENSUS = [
    (
        "Combine echoes into one field before background removal (nonlinear or weighted fit)",
        lambda o: o.combination in ("nonlinear", "linear"),
    ),
    (
        "Use exact, non-Laplacian phase unwrapping for quantification",
        lambda o: o.unwrapping != "laplacian",
    ),
    (
        "Build the brain mask from magnitude and phase quality",
        lambda o: o.masking not in ("magnitude",),
    ),
    (
        "Use a SHARP- or PDF-family background field removal",
        lambda o: o.bf_removal in ("vsharp", "pdf", "resharp", "lbv", "sharp"),
    ),
    (
        "Use a sparsity-regularised (TV/L1), data-weighted iterative inversion",
        lambda o: o.inversion in ("tv_admm", "medi", "rts"),
    ),
    (
        "Report susceptibility against a stated reference region",
        lambda o: o.reference != "none",
    ),
]


def consensus_report(options: QSMOptions) -> list[dict]:
    """Which 2024 ISMRM QSM consensus recommendations the chosen pipeline follows.

    Returns one dict per recommendation with keys ``recommendation`` and ``follows`` (bool).
    """
    return [{"recommendation": text, "follows": bool(pred(options))} for text, pred in _CONSENSUS]


def format_consensus_report(options: QSMOptions) -> str:
    lines = ["QSM pipeline vs the 2024 ISMRM consensus recommendations (doi:10.1002/mrm.30006):"]
    for item in consensus_report(options):
        mark = "follows " if item["follows"] else "DEPARTS "
        lines.append(f"  [{mark}] {item['recommendation']}")
    return "\n".join(lines)


def brain_mask(mag, phase, tes, voxel_size, method, **opts):
    """Step 1: brain mask (bool) from magnitude (and phase quality, method permitting)."""
    return call_method(
        masking.METHODS, method, "masking", mag=mag, phase=phase, tes=tes, voxel_size=voxel_size, **opts
    ).astype(bool)


def total_field(phase, mag, tes, mask, voxel_size, b0, combination, unwrapping, **opts):
    """Step 2: echo combination + unwrapping; returns field in ppm, offset and reliability."""
    res = call_method(
        echoes.METHODS,
        combination,
        "echo combination",
        phase4d=phase,
        mag4d=mag,
        tes=np.asarray(tes, dtype=float),
        mask=mask,
        voxel_size=voxel_size,
        unwrapping=unwrapping,
        **opts,
    )
    out = dict(res)
    out["field_ppm"] = (hz_to_ppm(res["field_hz"], b0) * mask).astype(np.float32)
    return out


def remove_background(total_ppm, mask, voxel_size, b0_dir, method, weights=None, **opts):
    """Step 3: background field removal; returns ``(local_ppm, eroded_mask)``."""
    local, eroded = call_method(
        background.METHODS,
        method,
        "background field removal",
        total_ppm=total_ppm,
        mask=mask,
        voxel_size=voxel_size,
        b0_dir=b0_dir,
        weights=weights,
        **opts,
    )
    eroded = np.asarray(eroded, dtype=bool)
    return (np.asarray(local, dtype=np.float32) * eroded), eroded


def dipole_inversion(local_ppm, mask, voxel_size, b0_dir, method, weights=None, magnitude=None,
                     info=None, **opts):
    """Step 4: dipole inversion; returns chi in ppm (zero outside ``mask``).

    ``info``: optional dict; iterative methods fill it with their convergence record
    (iterations, max_iter, tol, final_change, converged; see :mod:`qsmprep.qsm.inversion`).
    """
    chi = call_method(
        inversion.METHODS,
        method,
        "dipole inversion",
        local_ppm=local_ppm,
        mask=mask,
        voxel_size=voxel_size,
        b0_dir=b0_dir,
        weights=weights,
        magnitude=magnitude,
        info=info,
        **opts,
    )
    return (np.asarray(chi, dtype=np.float32) * mask).astype(np.float32)


def reference_chi(chi, mask, method, ref_mask=None, mag=None, tes=None, voxel_size=None):
    """Step 5: referencing; returns ``(chi_referenced, info)``.

    For ``csf`` without a supplied ``ref_mask``, the CSF mask is derived from the multi-echo
    magnitude (low R2*, deep inside the brain: :func:`qsmprep.qsm.reference.csf_mask_from_r2star`).
    """
    if method == "csf" and ref_mask is None:
        if mag is None or tes is None or np.asarray(mag).ndim != 4 or np.asarray(mag).shape[-1] < 2:
            raise ValueError("CSF referencing needs a CSF mask or multi-echo magnitude (>= 2 echoes).")
        ref_mask = reference.csf_mask_from_r2star(mag, tes, mask, voxel_size=voxel_size or (1.0, 1.0, 1.0))
    chi_ref, info = call_method(
        reference.METHODS, method, "reference", chi=chi, mask=mask, ref_mask=ref_mask
    )
    return (np.asarray(chi_ref, dtype=np.float32) * mask).astype(np.float32), dict(info)


def reconstruct(mag, phase, tes, b0, affine, options: QSMOptions | None = None, mask=None, ref_mask=None):
    """Run the whole chain on arrays; returns every intermediate, timings and provenance.

    Parameters
    ----------
    mag, phase : 4-D arrays ``(x, y, z, echo)``; phase in radians.
    tes : echo times in seconds.
    b0 : field strength in tesla.
    affine : NIfTI affine of the GRE grid (voxel size and B0 direction come from it).
    options : :class:`QSMOptions`.
    mask : optional user-supplied brain mask (skips the masking step).
    ref_mask : optional reference-region mask (for CSF referencing).
    """
    options = options or QSMOptions()
    mopts = options.method_options or {}
    if mag.ndim == 3:
        mag, phase = mag[..., None], phase[..., None]
    voxel_size = tuple(float(v) for v in voxel_size_from_affine(affine))
    b0_dir = b0_direction_from_affine(affine)
    timings = {}
    t = time.perf_counter()
    if mask is None:
        mask = brain_mask(mag, phase, tes, voxel_size, options.masking, **mopts.get("masking", {}))
    timings["masking"] = time.perf_counter() - t
    t = time.perf_counter()
    fit = total_field(
        phase, mag, tes, mask, voxel_size, b0, options.combination, options.unwrapping,
        **mopts.get("combination", {}),
    )
    timings["field"] = time.perf_counter() - t
    t = time.perf_counter()
    weights = fit.get("reliability")
    local, eroded = remove_background(
        fit["field_ppm"], mask, voxel_size, b0_dir, options.bf_removal, weights=weights,
        **mopts.get("bf_removal", {}),
    )
    timings["bf_removal"] = time.perf_counter() - t
    t = time.perf_counter()
    mag_ref = masking.combine_magnitude(mag)
    inv_info = {}
    chi = dipole_inversion(
        local, eroded, voxel_size, b0_dir, options.inversion,
        weights=None if weights is None else weights * eroded, magnitude=mag_ref, info=inv_info,
        **mopts.get("inversion", {}),
    )
    timings["inversion"] = time.perf_counter() - t
    quality_flags = []
    flag = inversion.convergence_flag(inv_info)
    if flag is not None:
        LOGGER.warning("dipole inversion (%s): %s", options.inversion, flag["message"])
        quality_flags.append(flag)
    t = time.perf_counter()
    chi_ref, ref_info = reference_chi(chi, eroded, options.reference, ref_mask=ref_mask, mag=mag,
                                      tes=tes, voxel_size=voxel_size)
    timings["reference"] = time.perf_counter() - t
    return {
        "mask": mask,
        "eroded_mask": eroded,
        "field_ppm": fit["field_ppm"],
        "reliability": weights,
        "local_ppm": local,
        "chi_unreferenced": chi,
        "chi": chi_ref,
        "inversion_info": inv_info,
        "quality_flags": quality_flags,
        "reference": ref_info,
        "timings": timings,
        "b0_dir": b0_dir,
        "voxel_size": voxel_size,
        "options": options.to_dict(),
    }
