"""Top-level participant workflow: per session QSM, per subject atlas propagation, ROI tables,
derivatives and report (wiring only)."""

from __future__ import annotations

import nibabel as nb
from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from ..derivatives import spec
from ..interfaces.derivatives import PublishDerivatives
from ..interfaces.registration import B0Change
from ..interfaces.reports import ParticipantReport
from ..interfaces.roi import LongitudinalChange, ROIStats
from ..interfaces.spaces import ResampleToSpace
from ..qsm.methods import desc as method_desc
from ..spaces import CHIMAP_INTERPOLATOR, parse_output_spaces, spatial_reference
from .longitudinal import init_longitudinal_wf
from .outputs import init_ds_session_wf, init_ds_subject_wf, space_field
from .qsm import init_qsm_wf

#: Threads (and scheduler slots) of the participant report node, at most ``--nprocs``: its
#: eight figures overlap well in two threads (1 mm subject, two sessions: 11.6-13.6 -> 6.5-6.8 s
#: wall, the same page), and the node runs when the subject's other nodes are done.
REPORT_THREADS = 2


def _session_id(data):
    return data["session"] or "single"


def _syn_region(config, out_spaces):
    """The atlas SyN's domain: ``config.syn_region``, else ``brain`` with template-space
    outputs and ``labels`` without (as :meth:`qsmprep.config.RunConfig.from_args` resolves it)."""
    return getattr(config, "syn_region", "") or ("brain" if out_spaces else "labels")


def _syn_region_note(region):
    """``SyNRegion`` of the dseg sidecar: where the atlas SyN is nonlinear."""
    if region == "labels":
        from ..registration import SYN_REGION_MARGIN_MM

        return (f"finest level on the atlas labels + {SYN_REGION_MARGIN_MM:g} mm (as placed "
                "by the coarse levels); coarser levels on the whole brain")
    return "whole brain"


def _pick(inlist, index):
    return inlist[index]


def init_space_nodes(wf, long_wf, qsm_wf, index, *, spaces, atlas, tag, has_t1w, longitudinal,
                     chimap_source):
    """Resample one session's Chimap and QSM mask into each template space (wiring only).

    The transform chain (antsApplyTransforms order, nearest the template first) is the one the
    atlas labels took into this session, read in the other direction:

    * longitudinal path: ``[template->atlas inverse warp, T1w->template, GRE->T1w]``;
    * cross-sectional path: ``[T1w->atlas inverse warp, GRE->T1w]``;
    * session without a T1w: ``[GRE->atlas inverse warp]``.

    Parameters
    ----------
    wf : nipype.pipeline.engine.Workflow
        The subject workflow the nodes are added to and connected in.
    long_wf : nipype.pipeline.engine.Workflow
        The subject's atlas-propagation workflow (:func:`init_longitudinal_wf`); its
        ``outputnode`` transform fields (per-session lists, picked at ``index``) form the chain.
    qsm_wf : nipype.pipeline.engine.Workflow
        The session's QSM workflow (:func:`init_qsm_wf`); ``outputnode.chi``,
        ``outputnode.sidecar`` and ``outputnode.mask`` are resampled.
    index : int
        Position of the session in the subject's session list.
    spaces : sequence of qsmprep.spaces.OutputSpace
        ``--output-spaces``.
    atlas : qsmprep.atlas.Atlas
        The atlas; its template image gives the target grid and geometry, its ``space`` the
        sidecar's ``SpatialTransform.Path``.
    tag : str
        Session tag used in the node names.
    has_t1w : bool
        The session has a T1w.
    longitudinal : bool
        The subject takes the longitudinal path (selects the chain above).
    chimap_source : str
        Relative path of the session's GRE-grid Chimap, for the sidecars' ``Sources``
        (``bids::<path>``).

    Returns
    -------
    dict
        ``{space: (chimap_node, mask_node)}``, :class:`ResampleToSpace` nodes whose
        ``out_file``/``out_sidecar`` the caller connects. Added to ``wf``: one
        ``chain_to_atlas_<tag>`` ``Merge`` node (the transform list) and, per space,
        ``chimap_to_<space tag>_<tag>`` (Chimap in ppm, ``CHIMAP_INTERPOLATOR``) and
        ``mask_to_<space tag>_<tag>`` (``genericLabel``).
    """
    k = index
    if has_t1w and longitudinal:
        chain_src = [("outputnode.xfm_template_to_atlas", None), ("outputnode.xfm_t1w_to_template", k),
                     ("outputnode.xfm_gre_to_t1w", k)]
        path = ("GRE -> session T1w (rigid) -> within-subject template (rigid) -> "
                f"{atlas.space} (SyN)")
    elif has_t1w:
        chain_src = [("outputnode.xfm_session_to_atlas", k), ("outputnode.xfm_gre_to_t1w", k)]
        path = f"GRE -> session T1w (rigid) -> {atlas.space} (SyN)"
    else:
        chain_src = [("outputnode.xfm_session_to_atlas", k)]
        path = f"GRE magnitude -> {atlas.space} (SyN)"
    tpl_img = nb.load(str(atlas.template))
    tpl_geometry = (tpl_img.affine, tpl_img.shape)
    chain = pe.Node(niu.Merge(len(chain_src)), name=f"chain_to_atlas_{tag}",
                    run_without_submitting=True)
    for i, (field, pick) in enumerate(chain_src):
        src = field if pick is None else (field, _pick, pick)
        wf.connect(long_wf, src, chain, f"in{i + 1}")
    nodes = {}
    for space in spaces:
        grid = (f"{space.resolution} mm isotropic grid over the {atlas.space} template's field "
                "of view" if space.resolution else f"grid of qsmprep's {atlas.space} template")
        common = {"Sources": [f"bids::{chimap_source}"], "SkullStripped": True,
                  "SpatialTransform": {"Path": path, "Resamplings": 1},
                  "Resolution": grid}
        ref = spatial_reference(space, *tpl_geometry)
        if ref:
            common["SpatialReference"] = ref
        chi = pe.Node(
            ResampleToSpace(template=str(atlas.template), resolution_mm=space.resolution or 0,
                            interpolator=CHIMAP_INTERPOLATOR, out_name="chimap.nii.gz",
                            sidecar_update={**common, "Interpolation": CHIMAP_INTERPOLATOR,
                                            "Description": (
                                                f"Susceptibility map (ppm) resampled once into "
                                                f"{space.name} for voxel-wise analysis; zero "
                                                "outside the QSM mask, so values within about one "
                                                "voxel of the mask edge are attenuated. ROI "
                                                "statistics are computed on the GRE grid.")}),
            name=f"chimap_to_{space.tag}_{tag}", mem_gb=1.0,
        )
        mask = pe.Node(
            ResampleToSpace(template=str(atlas.template), resolution_mm=space.resolution or 0,
                            interpolator="genericLabel", out_name="mask.nii.gz",
                            sidecar_update={**common, "Type": "Brain", "Interpolation": "genericLabel",
                                            "Description": f"Final QSM mask resampled once into "
                                                           f"{space.name} (support of the Chimap)."}),
            name=f"mask_to_{space.tag}_{tag}", mem_gb=1.0,
        )
        wf.connect([
            (qsm_wf, chi, [("outputnode.chi", "in_file"), ("outputnode.sidecar", "in_sidecar")]),
            (qsm_wf, mask, [("outputnode.mask", "in_file")]),
            (chain, chi, [("out", "transforms")]),
            (chain, mask, [("out", "transforms")]),
        ])
        nodes[space] = (chi, mask)
    return nodes


def init_qsmprep_wf(*, selection, config, atlas, options, name="qsmprep_wf"):
    """One sub-workflow per subject.

    Parameters
    ----------
    selection : dict ``{subject: [collect_data() dict per session]}``
    config : :class:`qsmprep.config.RunConfig`
    atlas : :class:`qsmprep.atlas.Atlas`
    options : :class:`qsmprep.qsm.pipeline.QSMOptions`
    """
    wf = pe.Workflow(name=name)
    for subject, sessions in selection.items():
        sub_wf = init_single_subject_wf(subject=subject, sessions=sessions, config=config,
                                        atlas=atlas, options=options)
        wf.add_nodes([sub_wf])
    return wf


def init_single_subject_wf(*, subject, sessions, config, atlas, options, name=None):
    """Everything for one subject; its outputs are published only when all of them exist.

    Inputs come as static values (file lists from :func:`qsmprep.bids.collect_data`), so this
    workflow has no ``inputnode``. Outputs go to ``config.output_dir`` through one
    ``PublishDerivatives`` node.

    Parameters
    ----------
    subject : str
        Subject label, without ``sub-``.
    sessions : list of dict
        One :func:`qsmprep.bids.collect_data` dict per session (``session``, ``t1w``, ``mag``,
        ``phase``, ``parts``, ``echo_times`` (s), ``b0`` (T), ``phase_units``, ``sources``,
        ``warnings``; optional ``user_mask``).
    config : qsmprep.config.RunConfig
        Run settings (``longitudinal``, ``mem_gb``, ``nprocs``, ``omp_nthreads``,
        ``registration_resolution``, ``syn_metric``, ``random_seed``, ``roi_erosion``,
        ``roi_min_reliability``, ``output_spaces``, ``output_dir``).
    atlas : qsmprep.atlas.Atlas
        The atlas propagated into each session.
    options : qsmprep.qsm.pipeline.QSMOptions
        The chosen QSM methods and their options.
    name : str or None
        Workflow name; ``sub_<subject>_wf`` by default.

    Returns
    -------
    nipype.pipeline.engine.Workflow
        No ``inputnode`` or ``outputnode``. Nodes: ``longitudinal_wf`` (atlas propagation,
        :func:`init_longitudinal_wf`, given ``config.longitudinal`` and the sessions without a
        T1w; session outputs follow the longitudinal path when ``config.longitudinal`` is set
        and at least two sessions have a T1w), per session ``qsm_<tag>_wf`` (:func:`init_qsm_wf`),
        ``roi_stats_<tag>`` (:class:`ROIStats`, ppb tables), ``ds_<tag>_wf``
        (:func:`init_ds_session_wf`) and, with ``--output-spaces``, the nodes of
        :func:`init_space_nodes`; with two or more sessions ``dgm_change``
        (:class:`LongitudinalChange`); the subject-level sinks (:func:`init_ds_subject_wf`) where
        there are any; ``report`` (:class:`ParticipantReport`); ``gather_*`` ``Merge`` nodes;
        and ``publish`` (:class:`PublishDerivatives`), which receives every output file.
    """
    wf = pe.Workflow(name=name or f"sub_{subject}_wf")
    session_ids = [_session_id(d) for d in sessions]
    no_t1w = [_session_id(d) for d in sessions if not d.get("t1w")]
    is_long = bool(config.longitudinal) and len(session_ids) - len(no_t1w) >= 2
    mem_gb = max(1.0, min(4.0, config.mem_gb / max(config.nprocs, 1)))
    out_spaces = parse_output_spaces(getattr(config, "output_spaces", ()) or (), atlas.space)

    long_wf = init_longitudinal_wf(
        session_ids=session_ids,
        atlas=atlas,
        longitudinal=bool(config.longitudinal),
        sessions_without_t1w=no_t1w,
        registration_resolution=config.registration_resolution,
        syn_metric=config.syn_metric,
        syn_region=_syn_region(config, out_spaces),
        omp_nthreads=config.omp_nthreads,
        seed=config.random_seed,
        subject=subject,
    )
    long_wf.inputs.inputnode.t1w = [d.get("t1w") or "" for d in sessions]
    n = len(sessions)
    gre_mags = pe.Node(niu.Merge(n), name="gather_gre_mag", run_without_submitting=True)
    qsm_masks = pe.Node(niu.Merge(n), name="gather_qsm_mask", run_without_submitting=True)
    wf.connect([
        (gre_mags, long_wf, [("out", "inputnode.gre_mag")]),
        (qsm_masks, long_wf, [("out", "inputnode.qsm_mask")]),
    ])

    report_lists = {k: pe.Node(niu.Merge(n), name=f"gather_{k}", run_without_submitting=True)
                    for k in ("chi", "mask", "brain_mask", "mag", "labels", "stats", "sidecars")}
    # the GRE registrations' metric mask: the brain mask before background removal
    wf.connect(report_lists["brain_mask"], "out", long_wf, "inputnode.gre_brain_mask")
    publish_inputs = []
    stats_nodes = []
    warnings = []
    for k, data in enumerate(sessions):
        ses = session_ids[k]
        tag = ses.replace("-", "_")
        warnings += list(data.get("warnings", []))
        qsm_wf = init_qsm_wf(
            echo_times=data["echo_times"],
            b0=data["b0"],
            masking=options.masking,
            combination=options.combination,
            unwrapping=options.unwrapping,
            bf_removal=options.bf_removal,
            inversion=options.inversion,
            reference=options.reference,
            method_options=options.method_options,
            phase_units=data.get("phase_units") or "",
            parts=data.get("parts") or "mag-phase",
            label=f"sub-{subject}" + (f"_ses-{data['session']}" if data.get("session") else ""),
            sidecar_extra={"Sources": data.get("sources", []),
                           "Description": "Magnetic susceptibility map (ppm) on this session's GRE "
                                          "grid, relative to the reference region in 'Reference'."},
            mem_gb=mem_gb,
            log_label=f"sub-{subject}" + (f" ses-{data['session']}" if data.get("session") else ""),
            name=f"qsm_{tag}_wf",
        )
        qsm_wf.inputs.inputnode.mag_files = data["mag"]
        qsm_wf.inputs.inputnode.phase_files = data["phase"]
        if data.get("user_mask"):
            qsm_wf.inputs.inputnode.user_mask = data["user_mask"]

        roi = pe.Node(
            ROIStats(label_table=str(atlas.tsv), atlas_name=atlas.name, erode_vox=config.roi_erosion,
                     reference=options.reference),
            name=f"roi_stats_{tag}",
        )
        if config.roi_min_reliability is not None:
            roi.inputs.min_reliability = float(config.roi_min_reliability)
        source_file = data["phase"][0]
        wf.connect([
            (qsm_wf, gre_mags, [("outputnode.mag_ref", f"in{k + 1}")]),
            (qsm_wf, qsm_masks, [("outputnode.mask", f"in{k + 1}")]),
            (qsm_wf, roi, [("outputnode.chi", "in_file"), ("outputnode.mask", "mask"),
                           ("outputnode.reliability", "reliability"),
                           ("outputnode.r2star", "r2star")]),
            (long_wf, roi, [(("outputnode.labels_gre", _pick, k), "labels"),
                            (("outputnode.qc_session", _pick, k), "qc_file"),
                            (("outputnode.b0_orientation", _pick, k), "orientation_file")]),
            (qsm_wf, report_lists["chi"], [("outputnode.chi", f"in{k + 1}")]),
            (qsm_wf, report_lists["mask"], [("outputnode.mask", f"in{k + 1}")]),
            (qsm_wf, report_lists["brain_mask"], [("outputnode.brain_mask", f"in{k + 1}")]),
            (qsm_wf, report_lists["mag"], [("outputnode.mag_ref", f"in{k + 1}")]),
            (qsm_wf, report_lists["sidecars"], [("outputnode.sidecar", f"in{k + 1}")]),
            (long_wf, report_lists["labels"], [(("outputnode.labels_gre", _pick, k), f"in{k + 1}")]),
            (roi, report_lists["stats"], [("out_tsv", f"in{k + 1}")]),
        ])
        ds_wf = init_ds_session_wf(
            source_file=source_file, inversion=method_desc("inversion", options.inversion),
            atlas_name=atlas.name, atlas_space=atlas.space, has_t1w=bool(data.get("t1w")),
            longitudinal=is_long, spaces=out_spaces,
            dseg_sidecar={"Atlas": atlas.name, "AtlasSpace": atlas.space,
                          "Description": "Atlas labels carried into this session's GRE grid in one "
                                         "resampling (genericLabel), restricted to the QSM mask.",
                          "RegistrationPath": "longitudinal" if is_long else "cross-sectional",
                          "AtlasRegistration": {
                              "Software": "antspyx (ANTs antsRegistration)",
                              "Transform": "SyN",
                              "SyNMetric": ("mattes" if not data.get("t1w")
                                            else config.syn_metric),
                              "RegistrationResolution": (config.registration_resolution
                                                         or "native"),
                              "SyNRegion": _syn_region_note(_syn_region(config, out_spaces))}},
            spatial_reference=(data.get("sources") or [None])[0],
            sources=list(data.get("sources", []))[: 2 * len(data["mag"])],  # GRE mag/phase
            name=f"ds_{tag}_wf",
        )
        xfms = {d.output_field for d in spec.session_records(has_t1w=bool(data.get("t1w")),
                                                              longitudinal=is_long)
                if d.level == "xfm"}
        wf.connect([
            (qsm_wf, ds_wf, [("outputnode.chi", "inputnode.chimap"),
                             ("outputnode.sidecar", "inputnode.chimap_sidecar"),
                             ("outputnode.mask", "inputnode.mask"),
                             ("outputnode.local_field", "inputnode.local_field"),
                             ("outputnode.r2star", "inputnode.r2starmap"),
                             ("outputnode.t2star", "inputnode.t2starmap")]),
            (long_wf, ds_wf, [(("outputnode.labels_gre", _pick, k), "inputnode.dseg")]
             + [((f"outputnode.{x}", _pick, k), f"inputnode.{x}") for x in sorted(xfms)]
             + [((f"outputnode.qc_{x[4:]}", _pick, k), f"inputnode.qc_{x[4:]}")
                for x in sorted(xfms)]),
            (roi, ds_wf, [("out_tsv", "inputnode.stats"), ("out_json", "inputnode.stats_sidecar")]),
        ])
        if out_spaces:
            inversion = method_desc("inversion", options.inversion)
            space_nodes = init_space_nodes(
                wf, long_wf, qsm_wf, k, spaces=out_spaces, atlas=atlas, tag=tag,
                has_t1w=bool(data.get("t1w")), longitudinal=is_long,
                chimap_source=spec.by_key("chimap", "session").path(source_file,
                                                                    inversion=inversion))
            for space, nodes in space_nodes.items():
                for kind, node in zip(("chimap", "mask"), nodes):
                    field = space_field(kind, space)
                    wf.connect(node, "out_file", ds_wf, f"inputnode.{field}")
                    wf.connect(node, "out_sidecar", ds_wf, f"inputnode.{field}_sidecar")
        publish_inputs.append((ds_wf, "outputnode.out_files"))
        stats_nodes.append(roi)

    change = None
    if n >= 2:
        gather_stats = pe.Node(niu.Merge(n), name="gather_stats_change", run_without_submitting=True)
        for k, node in enumerate(stats_nodes):
            wf.connect(node, "out_tsv", gather_stats, f"in{k + 1}")
        change = pe.Node(
            LongitudinalChange(session_ids=session_ids, baseline=session_ids[0],
                               followup=session_ids[-1], atlas_name=atlas.name,
                               subject=subject),
            name="dgm_change",
        )
        wf.connect(gather_stats, "out", change, "in_files")
        # how much the head turned against B0 between the two sessions: their GRE magnitudes
        # registered to each other (same contrast; more exact than through the atlas)
        b0_change = pe.Node(B0Change(seed=config.random_seed, num_threads=config.omp_nthreads),
                            name="b0_change", n_procs=config.omp_nthreads, mem_gb=mem_gb)
        wf.connect([
            (gre_mags, b0_change, [(("out", _pick, 0), "baseline_mag"),
                                   (("out", _pick, n - 1), "followup_mag")]),
            (report_lists["brain_mask"], b0_change, [(("out", _pick, 0), "baseline_mask"),
                                                     (("out", _pick, n - 1), "followup_mask")]),
            (b0_change, change, [("out_file", "angle_file")]),
        ])
    ds_subject_wf = init_ds_subject_wf(subject=subject, atlas_name=atlas.name,
                                       atlas_space=atlas.space, longitudinal=is_long,
                                       change=change is not None)
    if ds_subject_wf is not None:
        if is_long:
            wf.connect([(long_wf, ds_subject_wf, [
                (f"outputnode.{f}", f"inputnode.{f}") for f in (
                    "template", "labels_template", "xfm_atlas_to_template",
                    "xfm_template_to_atlas", "qc_atlas_to_template")])])
        if change is not None:
            wf.connect([(change, ds_subject_wf, [("out_tsv", "inputnode.dgmchange"),
                                                 ("out_json", "inputnode.dgmchange_sidecar")])])
        publish_inputs.append((ds_subject_wf, "outputnode.out_files"))

    # the subject's last node: two threads draw its figures (half the wall time, same page)
    report_threads = min(REPORT_THREADS, int(config.nprocs))
    report = pe.Node(ParticipantReport(subject=subject, session_ids=session_ids, warnings=warnings,
                                       t1w=[d.get("t1w") or "" for d in sessions],
                                       label_table=str(atlas.tsv), n_threads=report_threads),
                     name="report", n_procs=report_threads)
    wf.connect([
        (long_wf, report, [("outputnode.labels_t1w", "labels_t1w"), ("outputnode.template", "template"),
                           ("outputnode.labels_template", "labels_template"),
                           ("outputnode.mode", "registration_mode")]),
    ])
    for key in ("chi", "mask", "brain_mask", "mag", "labels", "stats", "sidecars"):
        wf.connect(report_lists[key], "out", report, key)
    if change is not None:
        wf.connect(change, "out_tsv", report, "change")

    gather = pe.Node(niu.Merge(len(publish_inputs) + 2), name="gather_outputs",
                     run_without_submitting=True)
    for k, (node, field) in enumerate(publish_inputs):
        wf.connect(node, field, gather, f"in{k + 1}")
    wf.connect([
        (report, gather, [("out_report", f"in{len(publish_inputs) + 1}"),
                          ("figures", f"in{len(publish_inputs) + 2}")]),
    ])
    publish = pe.Node(PublishDerivatives(output_dir=str(config.output_dir), subject=subject), name="publish",
                      run_without_submitting=True)
    wf.connect(gather, "out", publish, "in_files")
    return wf
