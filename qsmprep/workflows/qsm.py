"""Per-session QSM reconstruction workflow (wiring only; the steps are :mod:`qsmprep.qsm.pipeline`)."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from ..interfaces.qsm import (
    BackgroundRemoval,
    BrainMask,
    DipoleInversion,
    LoadGRE,
    MergeProvenance,
    R2StarMap,
    ReferenceChi,
    TotalField,
)


def init_qsm_wf(
    *,
    echo_times,
    b0,
    masking,
    combination,
    unwrapping,
    bf_removal,
    inversion,
    reference,
    method_options=None,
    phase_units="",
    parts="mag-phase",
    label="",
    sidecar_extra=None,
    mem_gb=2.0,
    log_label="",
    name="qsm_wf",
):
    """Reconstruct a susceptibility map from multi-echo magnitude and phase.

    Steps (one node each; each node makes one call to the step function of
    :mod:`qsmprep.qsm.pipeline` that :func:`~qsmprep.qsm.pipeline.reconstruct` also calls):
    load + phase scaling -> brain mask (``run_masking``) -> echo combination/unwrapping
    (``run_field_fit``, total field in ppm) -> background field removal
    (``run_background_removal``, local field, eroded mask) -> dipole inversion
    (``run_inversion``) -> referencing (``run_referencing``); R2*/T2* (``run_r2star``) beside
    the chain. Each node's provenance is merged into the Chimap sidecar.

    Parameters
    ----------
    echo_times : sequence of float
        Echo times (s).
    b0 : float
        Field strength (T).
    masking, combination, unwrapping, bf_removal, inversion, reference : str
        Method of each step (names of :mod:`qsmprep.qsm.methods`).
    method_options : dict, optional
        Step -> ``{option: value}`` passed to that step's method.
    phase_units : str
        BIDS ``Units`` of the phase sidecar ("" when absent; the scaling is detected).
    parts : {"mag-phase", "real-imag"}
        What the two input file lists hold (BIDS ``part``).
    label : str
        ``sub-<l>[_ses-<l>]``, for the input-check log messages.
    sidecar_extra : dict, optional
        Static entries of the Chimap sidecar.
    mem_gb : float
        Memory estimate of one step (GB); the field, background and inversion steps get twice.
    log_label : str
        Prefix of the warnings that steps log (e.g. ``"sub-01 ses-baseline"`` for a solver
        cut short at its iteration cap).
    name : str
        Workflow name.

    Returns
    -------
    nipype.pipeline.engine.Workflow
        With the inputs and outputs below.

    Inputs
    ------
    mag_files, phase_files : lists of per-echo NIfTI files, sorted by echo number (real and
        imaginary parts when ``parts='real-imag'``; converted when loaded)
    user_mask : optional brain mask on the GRE grid
    ref_mask : optional reference-region mask on the GRE grid (CSF referencing)

    Outputs
    -------
    chi : referenced susceptibility (ppm)
    mask : final (eroded) mask, the support of ``chi``
    brain_mask : mask before background removal
    field, local_field : total and local field (ppm)
    reliability : echo-fit reliability (0..1)
    mag4d : 4-D magnitude (float32)
    mag_ref : 3-D root-sum-of-squares magnitude (registration target)
    r2star, t2star : R2* (1/s) and T2* (s) from the multi-echo magnitude, inside the brain mask
    sidecar : dict with every algorithm and parameter used
    """
    method_options = method_options or {}
    _check_method_options(method_options, masking=masking, combination=combination,
                          bf_removal=bf_removal, inversion=inversion)
    wf = pe.Workflow(name=name)
    inputnode = pe.Node(
        niu.IdentityInterface(fields=["mag_files", "phase_files", "user_mask", "ref_mask"]),
        name="inputnode",
    )
    outputnode = pe.Node(
        niu.IdentityInterface(
            fields=["chi", "mask", "brain_mask", "field", "local_field", "reliability", "mag4d", "mag_ref",
                    "sidecar", "r2star", "t2star"]
        ),
        name="outputnode",
    )
    load = pe.Node(LoadGRE(phase_units=phase_units or "", parts=parts or "mag-phase", label=label or ""),
                   name="load_gre", mem_gb=mem_gb)
    mask = pe.Node(
        BrainMask(echo_times=list(echo_times), method=masking,
                  method_options=method_options.get("masking", {})),
        name="brain_mask", mem_gb=mem_gb,
    )
    field = pe.Node(
        TotalField(echo_times=list(echo_times), b0=float(b0), combination=combination,
                   unwrapping=unwrapping, method_options=method_options.get("combination", {})),
        name="total_field", mem_gb=mem_gb * 2,
    )
    bfr = pe.Node(
        BackgroundRemoval(method=bf_removal, method_options=method_options.get("bf_removal", {})),
        name="bf_removal", mem_gb=mem_gb * 2,
    )
    inv = pe.Node(
        DipoleInversion(method=inversion, method_options=method_options.get("inversion", {}),
                        log_label=log_label),
        name="dipole_inversion", mem_gb=mem_gb * 2,
    )
    ref = pe.Node(ReferenceChi(method=reference, echo_times=list(echo_times)), name="reference")
    r2star = pe.Node(R2StarMap(echo_times=list(echo_times), b0=float(b0),
                               method_options=method_options.get("relaxometry", {})),
                     name="r2star", mem_gb=mem_gb)
    merge = pe.Node(niu.Merge(6), name="merge_provenance")
    prov = pe.Node(
        MergeProvenance(
            extra={
                "Units": "ppm",
                "SkullStripped": True,
                "EchoTime": [float(t) for t in echo_times],
                "MagneticFieldStrength": float(b0),
                **(sidecar_extra or {}),
            }
        ),
        name="chimap_sidecar",
    )

    # fmt: off
    wf.connect([
        (inputnode, load, [("mag_files", "mag_files"), ("phase_files", "phase_files")]),
        (inputnode, mask, [("user_mask", "user_mask")]),
        (load, mask, [("mag_file", "mag_file"), ("phase_file", "phase_file"),
                      ("nonfinite_file", "exclude_file")]),
        (load, field, [("mag_file", "mag_file"), ("phase_file", "phase_file")]),
        (mask, field, [("mask_file", "mask_file")]),
        (field, bfr, [("field_file", "field_file"), ("reliability_file", "reliability_file")]),
        (mask, bfr, [("mask_file", "mask_file")]),
        (bfr, inv, [("local_file", "local_file"), ("mask_file", "mask_file")]),
        (field, inv, [("reliability_file", "reliability_file"), ("noise_file", "noise_file")]),
        (load, inv, [("mag_ref_file", "mag_file")]),  # the RSS magnitude, computed once
        (inv, ref, [("chi_file", "chi_file")]),
        (bfr, ref, [("mask_file", "mask_file")]),
        (inputnode, ref, [("ref_mask", "ref_mask_file")]),
        (load, ref, [("mag_file", "mag_file")]),
        (load, merge, [("provenance", "in1")]),
        (mask, merge, [("provenance", "in2")]),
        (field, merge, [("provenance", "in3")]),
        (bfr, merge, [("provenance", "in4")]),
        (inv, merge, [("provenance", "in5")]),
        (ref, merge, [("provenance", "in6")]),
        (merge, prov, [("out", "provenance")]),
        (ref, outputnode, [("chi_file", "chi")]),
        (bfr, outputnode, [("mask_file", "mask"), ("local_file", "local_field")]),
        (mask, outputnode, [("mask_file", "brain_mask")]),
        (field, outputnode, [("field_file", "field"), ("reliability_file", "reliability")]),
        (load, outputnode, [("mag_file", "mag4d"), ("mag_ref_file", "mag_ref")]),
        (prov, outputnode, [("sidecar", "sidecar")]),
        (load, r2star, [("mag_file", "mag_file")]),
        (mask, r2star, [("mask_file", "mask_file")]),
        (field, r2star, [("field_file", "field_file")]),
        (r2star, outputnode, [("r2star_file", "r2star"), ("t2star_file", "t2star")]),
    ])
    # fmt: on
    return wf


def _check_method_options(method_options, **methods):
    """Refuse a misspelt step or method option when the workflow is built, before any node runs
    (:func:`qsmprep.qsm.pipeline.check_method_options`)."""
    from ..qsm.methods import OPTION_STEPS as steps
    from ..qsm.pipeline import check_method_options
    unknown = sorted(set(method_options) - set(steps))
    if unknown:
        raise ValueError(f"method_options: unknown step(s) {', '.join(map(repr, unknown))}; "
                         f"the steps with options are {', '.join(steps)}.")
    for step, name in methods.items():
        if method_options.get(step) and not (step == "masking" and name == "user"):
            check_method_options(step, name, method_options[step])
