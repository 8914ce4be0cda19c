"""Per-subject atlas propagation: longitudinal (within-subject template) or cross-sectional.

Wiring only; every step is one interface of :mod:`qsmprep.interfaces.registration`.
"""

from __future__ import annotations

import logging

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from ..interfaces.registration import (
    ApplyTransforms,
    B0Orientation,
    BrainExtraction,
    BuildSubjectTemplate,
    RegisterAtlas,
    RegistrationQC,
    RigidRegistration,
    TemplateSessionTransform,
)
from ..registration import DEFAULT_SEED, TEMPLATE_ITERATIONS

LOGGER = logging.getLogger("qsmprep.workflow")

#: names used in transform file names (``from-<a>_to-<b>_mode-image_xfm``)
TEMPLATE_SPACE_NAME = "individual"
GRE_SPACE_NAME = "MEGRE"

OUTPUT_FIELDS = [
    # per session (lists in ``session_ids`` order; '' where a session has no such file)
    "labels_gre",
    "labels_t1w",
    "t1w_brain_mask",
    "xfm_gre_to_t1w",
    "xfm_t1w_to_template",
    "xfm_atlas_to_session",
    # per subject (longitudinal path only; '' otherwise)
    "template",
    "template_mask",
    "labels_template",
    "xfm_atlas_to_template",
    "xfm_template_to_atlas",
    # the path taken, for reports and sidecars
    "mode",
    # per session: inverse of xfm_atlas_to_session (session T1w/GRE -> atlas), for
    # --output-spaces on the cross-sectional path; '' on the longitudinal path
    "xfm_session_to_atlas",
    # registration quality (JSON; per session except qc_atlas_to_template)
    "qc_gre_to_t1w",
    "qc_t1w_to_template",
    "qc_atlas_to_session",
    "qc_session",
    "qc_atlas_to_template",
    # per session: B0 direction in the atlas frame (JSON, qsmprep.b0_orientation)
    "b0_orientation",
]
#: per-session list outputs (``session_ids`` order)
PER_SESSION_FIELDS = OUTPUT_FIELDS[:6] + [
    "qc_gre_to_t1w", "qc_t1w_to_template", "qc_atlas_to_session", "qc_session",
    "b0_orientation"]


def _pick(inlist, index):
    return inlist[index]


def _safe(label):
    return "".join(c if c.isalnum() else "_" for c in str(label))


def init_longitudinal_wf(
    *,
    session_ids,
    atlas,
    longitudinal=True,
    sessions_without_t1w=(),
    registration_resolution=None,
    syn_metric="CC",
    syn_region="labels",
    template_iterations=TEMPLATE_ITERATIONS,
    omp_nthreads=1,
    seed=DEFAULT_SEED,
    mem_gb=3.0,
    subject="",
    name="longitudinal_wf",
):
    """Carry the atlas labels into every session's GRE space (one resampling per session).

    Longitudinal path (``longitudinal=True`` and at least two sessions with a T1w):

    1. unbiased within-subject template from all sessions' T1w (iterative rigid averaging);
    2. template-based brain extraction of the subject template;
    3. atlas template -> subject template, once (SyN, both skull-stripped);
    4. per session: T1w -> subject template (the rigid transform of the template's last
       iteration, not a second registration), GRE magnitude -> T1w (rigid, Mattes MI,
       brain masks on both sides: the GRE brain mask before background removal, so the
       registration does not wait for the QSM chain), then labels resampled once through
       ``[GRE->T1w]^-1 o [T1w->template]^-1 o [atlas->template]`` with ``genericLabel`` and
       restricted to the QSM mask.

    Cross-sectional path (one session with a T1w, or ``longitudinal=False``): per session,
    brain extraction of the T1w, atlas -> T1w SyN, GRE -> T1w rigid, one resampling.

    Sessions listed in ``sessions_without_t1w`` register the atlas template directly to the
    GRE magnitude (skull-stripped with the QSM mask; SyN), with a warning.

    Every registration writes quality metrics (:mod:`qsmprep.registration_qc`); a
    ``RegistrationQC`` node per session combines them, logs a WARNING naming subject, session,
    metric, value and threshold for each metric below its threshold, and outputs the session
    verdict (``qc_session``) that the ROI table turns into ``qc_*`` columns.

    A ``B0Orientation`` node per session carries the GRE brain mask's points through the same
    chain as the labels and outputs the session's B0 direction in the atlas frame
    (``b0_orientation``; :mod:`qsmprep.b0_orientation`), which the ROI table turns into
    ``b0_*`` columns and the change table into the angle between the sessions.

    Parameters
    ----------
    session_ids : list of str
        Session labels (the order of every list input and output).
    atlas : qsmprep.atlas.Atlas
        Its ``template``, ``dseg``, ``brain_mask`` and ``space`` are used.
    longitudinal : bool, default True
        Use the subject-template path when at least two sessions have a T1w.
    sessions_without_t1w : iterable of str, default ()
        Sessions registered to the atlas through their GRE magnitude.
    registration_resolution : float, optional
        Isotropic mm for estimating transforms (``None`` = native); brain extraction always
        runs at >= 2 mm.
    syn_metric : {"CC", "mattes"}, default "CC"
        Similarity metric of the atlas -> T1w / subject template SyN (see
        :func:`qsmprep.registration.register_atlas_to_t1w`); the atlas -> GRE SyN of sessions
        without a T1w always uses ``"mattes"`` (different contrasts).
    syn_region : {"labels", "brain"}, default "labels"
        Domain of every atlas SyN: ``"labels"`` runs its coarser levels on the whole brain and
        its finest level on the fixed image cropped to the atlas labels (as the coarse warp
        places them) plus :data:`qsmprep.registration.SYN_REGION_MARGIN_MM`; ``"brain"`` runs every
        level on the whole brain (needed for ``--output-spaces``).
    template_iterations : int, default :data:`qsmprep.registration.TEMPLATE_ITERATIONS` (2)
        Iterations of the subject template (:func:`qsmprep.registration.build_subject_template`).
    omp_nthreads : int, default 1
        ITK threads per registration node (also its ``n_procs``).
    seed : int, default DEFAULT_SEED
        antsRegistration random seed.
    mem_gb : float, default 3.0
        Memory estimate of the registration nodes.
    subject : str, default ""
        Subject label, named in the registration-quality log lines.
    name : str, default "longitudinal_wf"
        Workflow name.

    Returns
    -------
    nipype.pipeline.engine.Workflow
        With an ``inputnode`` (lists in ``session_ids`` order):

        * ``t1w``: T1w per session (entries of sessions without a T1w are ignored);
        * ``gre_mag``: 3-D GRE magnitude per session (echo 1 or RSS; 4-D uses its first volume);
        * ``qsm_mask``: final QSM mask per session (GRE grid; labels are zero outside it);
        * ``gre_brain_mask``: GRE brain mask per session before background removal (the
          metric mask of the GRE registrations; available long before ``qsm_mask``);

        and an ``outputnode`` with the fields of :data:`OUTPUT_FIELDS`. ``labels_gre`` (int16,
        GRE grid, zero outside the QSM mask) is always defined; per-session entries that do not
        exist for a session are ``''``; per-subject outputs are ``''`` on the cross-sectional
        path. ``mode`` is ``'longitudinal'`` or ``'cross-sectional'``.

    Raises
    ------
    ValueError
        Without sessions, or when ``sessions_without_t1w`` names an unknown session.
    """
    session_ids = [str(s) for s in session_ids]
    if not session_ids:
        raise ValueError("init_longitudinal_wf needs at least one session")
    no_t1w = {str(s) for s in sessions_without_t1w}
    unknown = no_t1w - set(session_ids)
    if unknown:
        raise ValueError(f"sessions_without_t1w lists unknown sessions: {sorted(unknown)}")
    with_t1w = [s for s in session_ids if s not in no_t1w]
    for s in sorted(no_t1w):
        LOGGER.warning(
            "Session %s has no T1w: registering the atlas template directly to the GRE "
            "magnitude (less accurate than going through a T1w).",
            s,
        )
    is_long = bool(longitudinal) and len(with_t1w) >= 2
    mode = "longitudinal" if is_long else "cross-sectional"
    res = float(registration_resolution or 0.0)
    bex_res = max(2.0, res)
    n = len(session_ids)
    common = {"seed": int(seed), "num_threads": int(omp_nthreads)}
    if syn_region not in ("labels", "brain"):
        raise ValueError(f"syn_region must be 'labels' or 'brain', not {syn_region!r}")
    # the atlas SyN nodes' domain (RegisterAtlas.region_labels)
    syn_domain = {"region_labels": str(atlas.dseg)} if syn_region == "labels" else {}
    space = getattr(atlas, "space", "MNI152NLin2009cAsym")

    wf = pe.Workflow(name=name)
    inputnode = pe.Node(
        niu.IdentityInterface(fields=["t1w", "gre_mag", "qsm_mask", "gre_brain_mask"]),
        name="inputnode",
    )

    outputnode = pe.Node(niu.IdentityInterface(fields=OUTPUT_FIELDS), name="outputnode")
    outputnode.inputs.mode = mode

    # list-collecting nodes, one per per-session output
    per_session = list(PER_SESSION_FIELDS)
    merges = {}
    for field in per_session:
        merges[field] = pe.Node(niu.Merge(n), name=f"collect_{field}", run_without_submitting=True)
        wf.connect(merges[field], "out", outputnode, field)
    merges["xfm_session_to_atlas"] = pe.Node(niu.Merge(n), name="collect_xfm_session_to_atlas",
                                             run_without_submitting=True)
    wf.connect(merges["xfm_session_to_atlas"], "out", outputnode, "xfm_session_to_atlas")

    template_mask_src = None  # (node, field) of the subject template brain mask
    atlas_fwd_src = None  # (node, field) of atlas -> subject template transform
    if is_long:
        tpl_inputs = pe.Node(niu.Merge(len(with_t1w)), name="tpl_inputs",
                             run_without_submitting=True)
        for k, s in enumerate(with_t1w):
            wf.connect(inputnode, ("t1w", _pick, session_ids.index(s)), tpl_inputs, f"in{k + 1}")
        subject_tpl = pe.Node(
            BuildSubjectTemplate(iterations=int(template_iterations), resolution_mm=res, **common),
            name="subject_template", n_procs=omp_nthreads, mem_gb=mem_gb,
        )
        tpl_bex = pe.Node(
            BrainExtraction(template=str(atlas.template), resolution_mm=bex_res, **common),
            name="template_brain_extraction", n_procs=omp_nthreads, mem_gb=mem_gb,
        )
        if getattr(atlas, "brain_mask", None):
            tpl_bex.inputs.template_mask = str(atlas.brain_mask)
        atlas_to_tpl = pe.Node(
            RegisterAtlas(moving=str(atlas.template), src=space, dst=TEMPLATE_SPACE_NAME,
                          resolution_mm=res, syn_metric=syn_metric,
                          qc_name="atlas_to_template", **common, **syn_domain),
            name="atlas_to_template", n_procs=omp_nthreads, mem_gb=mem_gb,
        )
        labels_tpl = pe.Node(
            ApplyTransforms(in_file=str(atlas.dseg), out_name="labels_template.nii.gz"),
            name="labels_to_template", mem_gb=1.0,
        )
        wf.connect([
            (tpl_inputs, subject_tpl, [("out", "in_files")]),
            (subject_tpl, tpl_bex, [("out_file", "in_file")]),
            (tpl_bex, atlas_to_tpl, [("out_file", "fixed"), ("out_affine", "initial_affine")]),
            (subject_tpl, labels_tpl, [("out_file", "reference")]),
            (atlas_to_tpl, labels_tpl, [("fwd_transform", "transforms")]),
            (subject_tpl, outputnode, [("out_file", "template")]),
            (tpl_bex, outputnode, [("out_mask", "template_mask")]),
            (labels_tpl, outputnode, [("out_file", "labels_template")]),
            (atlas_to_tpl, outputnode, [("fwd_transform", "xfm_atlas_to_template"),
                                        ("inv_transform", "xfm_template_to_atlas"),
                                        ("qc_file", "qc_atlas_to_template")]),
        ])
        template_mask_src = (tpl_bex, "out_mask")
        atlas_fwd_src = (atlas_to_tpl, "fwd_transform")
    else:
        for field in ("template", "template_mask", "labels_template",
                      "xfm_atlas_to_template", "xfm_template_to_atlas", "qc_atlas_to_template"):
            setattr(outputnode.inputs, field, "")

    for i, ses in enumerate(session_ids):
        tag = _safe(ses)
        slot = f"in{i + 1}"
        labels_gre = pe.Node(
            ApplyTransforms(in_file=str(atlas.dseg), out_name="labels_gre.nii.gz"),
            name=f"labels_to_gre_{tag}", mem_gb=1.0,
        )
        wf.connect([
            (inputnode, labels_gre, [(("gre_mag", _pick, i), "reference"),
                                     (("qsm_mask", _pick, i), "mask")]),
            (labels_gre, merges["labels_gre"], [("out_file", slot)]),
        ])
        orient = pe.Node(B0Orientation(), name=f"b0_orientation_{tag}", mem_gb=1.0)
        wf.connect([
            (inputnode, orient, [(("gre_brain_mask", _pick, i), "mask")]),
            (orient, merges["b0_orientation"], [("out_file", slot)]),
        ])
        qc_inputs = pe.Node(niu.Merge(3), name=f"qc_inputs_{tag}", run_without_submitting=True)
        ses_qc = pe.Node(RegistrationQC(subject=str(subject), session=str(ses)),
                         name=f"registration_qc_{tag}", run_without_submitting=True)
        wf.connect([
            (qc_inputs, ses_qc, [("out", "in_files")]),
            (ses_qc, merges["qc_session"], [("out_file", slot)]),
        ])

        if ses in no_t1w:
            atlas_to_gre = pe.Node(
                RegisterAtlas(moving=str(atlas.template), src=space, dst=GRE_SPACE_NAME,
                              resolution_mm=res, syn_metric="mattes", qc_name="atlas_to_gre",
                              **common, **syn_domain),
                name=f"atlas_to_gre_{tag}", n_procs=omp_nthreads, mem_gb=mem_gb,
            )
            wf.connect([
                (inputnode, atlas_to_gre, [(("gre_mag", _pick, i), "fixed")]),
                (inputnode, atlas_to_gre, [(("gre_brain_mask", _pick, i), "fixed_mask")]),
                (atlas_to_gre, labels_gre, [("fwd_transform", "transforms")]),
                (atlas_to_gre, orient, [("fwd_transform", "transforms")]),
                (atlas_to_gre, merges["xfm_atlas_to_session"], [("fwd_transform", slot)]),
                (atlas_to_gre, merges["xfm_session_to_atlas"], [("inv_transform", slot)]),
                (atlas_to_gre, merges["qc_atlas_to_session"], [("qc_file", slot)]),
                (atlas_to_gre, qc_inputs, [("qc_file", "in1")]),
            ])
            qc_inputs.inputs.in2 = qc_inputs.inputs.in3 = ""
            labels_gre.inputs.invert = orient.inputs.invert = [False]
            for field in ("labels_t1w", "t1w_brain_mask", "xfm_gre_to_t1w",
                          "xfm_t1w_to_template", "qc_gre_to_t1w", "qc_t1w_to_template"):
                setattr(merges[field].inputs, slot, "")
            continue

        gre_to_t1w = pe.Node(
            RigidRegistration(src=GRE_SPACE_NAME, dst="T1w", resolution_mm=res,
                              qc_name="gre_to_t1w", **common),
            name=f"gre_to_t1w_{tag}", n_procs=omp_nthreads, mem_gb=mem_gb,
        )
        labels_t1w = pe.Node(
            ApplyTransforms(in_file=str(atlas.dseg), out_name="labels_t1w.nii.gz"),
            name=f"labels_to_t1w_{tag}", mem_gb=1.0,
        )
        wf.connect([
            (inputnode, gre_to_t1w, [(("t1w", _pick, i), "fixed"),
                                     (("gre_mag", _pick, i), "moving")]),
            (inputnode, gre_to_t1w, [(("gre_brain_mask", _pick, i), "moving_mask")]),
            (inputnode, labels_t1w, [(("t1w", _pick, i), "reference")]),
            (gre_to_t1w, merges["xfm_gre_to_t1w"], [("out_transform", slot)]),
            (gre_to_t1w, merges["qc_gre_to_t1w"], [("qc_file", slot)]),
            (gre_to_t1w, qc_inputs, [("qc_file", "in1")]),
            (labels_t1w, merges["labels_t1w"], [("out_file", slot)]),
        ])
        chain_gre = pe.Node(niu.Merge(3 if is_long else 2), name=f"chain_gre_{tag}",
                            run_without_submitting=True)
        chain_t1w = pe.Node(niu.Merge(2 if is_long else 1), name=f"chain_t1w_{tag}",
                            run_without_submitting=True)
        wf.connect([
            (gre_to_t1w, chain_gre, [("out_transform", "in1")]),
            (chain_gre, labels_gre, [("out", "transforms")]),
            (chain_gre, orient, [("out", "transforms")]),
            (chain_t1w, labels_t1w, [("out", "transforms")]),
        ])

        if is_long:
            # the transform the template was built with (no second registration)
            t1w_to_tpl = pe.Node(
                TemplateSessionTransform(src="T1w", dst=TEMPLATE_SPACE_NAME,
                                         qc_name="t1w_to_template", index=with_t1w.index(ses)),
                name=f"t1w_to_template_{tag}", mem_gb=1.0,
            )
            t1w_mask = pe.Node(
                ApplyTransforms(invert=[True], out_name="t1w_brain_mask.nii.gz"),
                name=f"t1w_brain_mask_{tag}", mem_gb=1.0,
            )
            wf.connect([
                (subject_tpl, t1w_to_tpl, [("out_file", "template"),
                                           ("transforms", "transforms")]),
                (inputnode, t1w_to_tpl, [(("t1w", _pick, i), "t1w")]),
                (template_mask_src[0], t1w_mask, [(template_mask_src[1], "in_file")]),
                (inputnode, t1w_mask, [(("t1w", _pick, i), "reference")]),
                (t1w_to_tpl, t1w_mask, [("out_transform", "transforms")]),
                (t1w_mask, gre_to_t1w, [("out_file", "fixed_mask")]),
                (t1w_to_tpl, chain_gre, [("out_transform", "in2")]),
                (atlas_fwd_src[0], chain_gre, [(atlas_fwd_src[1], "in3")]),
                (t1w_to_tpl, chain_t1w, [("out_transform", "in1")]),
                (atlas_fwd_src[0], chain_t1w, [(atlas_fwd_src[1], "in2")]),
                (t1w_mask, merges["t1w_brain_mask"], [("out_file", slot)]),
                (t1w_to_tpl, merges["xfm_t1w_to_template"], [("out_transform", slot)]),
                (t1w_to_tpl, merges["qc_t1w_to_template"], [("qc_file", slot)]),
                (t1w_to_tpl, qc_inputs, [("qc_file", "in2")]),
                (atlas_to_tpl, qc_inputs, [("qc_file", "in3")]),
            ])
            labels_gre.inputs.invert = orient.inputs.invert = [True, True, False]
            labels_t1w.inputs.invert = [True, False]
            setattr(merges["xfm_atlas_to_session"].inputs, slot, "")
            setattr(merges["xfm_session_to_atlas"].inputs, slot, "")
            setattr(merges["qc_atlas_to_session"].inputs, slot, "")
        else:
            t1w_bex = pe.Node(
                BrainExtraction(template=str(atlas.template), resolution_mm=bex_res, **common),
                name=f"t1w_brain_extraction_{tag}", n_procs=omp_nthreads, mem_gb=mem_gb,
            )
            if getattr(atlas, "brain_mask", None):
                t1w_bex.inputs.template_mask = str(atlas.brain_mask)
            atlas_to_t1w = pe.Node(
                RegisterAtlas(moving=str(atlas.template), src=space, dst="T1w",
                              resolution_mm=res, syn_metric=syn_metric, qc_name="atlas_to_t1w",
                              **common, **syn_domain),
                name=f"atlas_to_t1w_{tag}", n_procs=omp_nthreads, mem_gb=mem_gb,
            )
            wf.connect([
                (inputnode, t1w_bex, [(("t1w", _pick, i), "in_file")]),
                (t1w_bex, atlas_to_t1w, [("out_file", "fixed"), ("out_affine", "initial_affine")]),
                (t1w_bex, gre_to_t1w, [("out_mask", "fixed_mask")]),
                (atlas_to_t1w, chain_gre, [("fwd_transform", "in2")]),
                (atlas_to_t1w, chain_t1w, [("fwd_transform", "in1")]),
                (t1w_bex, merges["t1w_brain_mask"], [("out_mask", slot)]),
                (atlas_to_t1w, merges["xfm_atlas_to_session"], [("fwd_transform", slot)]),
                (atlas_to_t1w, merges["xfm_session_to_atlas"], [("inv_transform", slot)]),
                (atlas_to_t1w, merges["qc_atlas_to_session"], [("qc_file", slot)]),
                (atlas_to_t1w, qc_inputs, [("qc_file", "in3")]),
            ])
            qc_inputs.inputs.in2 = ""
            labels_gre.inputs.invert = orient.inputs.invert = [True, False]
            labels_t1w.inputs.invert = [False]
            setattr(merges["xfm_t1w_to_template"].inputs, slot, "")
            setattr(merges["qc_t1w_to_template"].inputs, slot, "")
    return wf
