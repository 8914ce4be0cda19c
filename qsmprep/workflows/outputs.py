"""Sink workflows: every derivative of a session and of a subject, as the output specification
(:mod:`qsmprep.derivatives.spec`) lists it.

NiPreps style: each ``init_ds_*_wf`` returns a workflow whose ``inputnode`` fields are the files
to sink (named after the spec records) and whose ``outputnode.out_files`` lists the named files,
in specification order, for the subject's ``PublishDerivatives`` node. Each sink is a
:class:`~qsmprep.interfaces.derivatives.DerivativesSink` named ``ds_<key>``.
"""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from ..derivatives import spec
from ..interfaces.derivatives import DerivativesSink


def _sink(d, source_file, entities, name):
    return pe.Node(DerivativesSink(source_file=source_file, suffix=d.suffix, entities=entities),
                   name=name, run_without_submitting=True)


def _finish(wf, inputnode, sinks):
    """Wire ``sinks`` (``[(node, input field, sidecar input field or None)]``) to the nodes."""
    gather = pe.Node(niu.Merge(len(sinks)), name="gather_ds", run_without_submitting=True)
    outputnode = pe.Node(niu.IdentityInterface(fields=["out_files"]), name="outputnode")
    for i, (node, field, sidecar_field, sidecar_input) in enumerate(sinks):
        wf.connect(inputnode, field, node, "in_file")
        if sidecar_field:
            wf.connect(inputnode, sidecar_field, node, sidecar_input)
        wf.connect(node, "out_file", gather, f"in{i + 1}")
    wf.connect(gather, "out", outputnode, "out_files")
    return wf


def space_field(kind, space) -> str:
    """``inputnode`` field of a template-space output (``chimap_<tag>``, ``mask_<tag>``).

    Parameters
    ----------
    kind : str
        ``chimap`` or ``mask`` (:data:`qsmprep.derivatives.spec.SPACE` keys).
    space : qsmprep.spaces.OutputSpace

    Returns
    -------
    str
        Its sidecar comes in the field of the same name plus ``_sidecar``.
    """
    return f"{kind}_{space.tag}"


def init_ds_session_wf(*, source_file, inversion, atlas_name, atlas_space, has_t1w,
                       longitudinal, dseg_sidecar=None, spatial_reference=None, sources=None,
                       spaces=(), name="ds_session_wf"):
    """Sinks of one session: GRE-grid outputs, transforms and template-space outputs.

    Parameters
    ----------
    source_file : str
        The session's first phase image; its entities name every output.
    inversion : str
        The inversion method's ``desc`` label.
    atlas_name, atlas_space : str
        Atlas name (``atlas-`` entity) and template space (``from-``/``to-`` of transforms).
    has_t1w : bool
        The session has a T1w (selects the transform records,
        :func:`qsmprep.derivatives.spec.session_records`).
    longitudinal : bool
        The subject takes the longitudinal path.
    dseg_sidecar : dict or None
        Sidecar of the GRE-grid labels (registration path and settings).
    spatial_reference : str or None
        BIDS URI of the raw GRE image whose grid the outputs share (mask and dseg sidecars).
    sources : list of str or None
        BIDS URIs of the raw GRE images (mask sidecar ``Sources``).
    spaces : sequence of qsmprep.spaces.OutputSpace
        ``--output-spaces``.
    name : str
        Workflow name.

    Returns
    -------
    nipype.pipeline.engine.Workflow
        ``inputnode`` fields: the ``output_field`` of every record of
        :func:`~qsmprep.derivatives.spec.session_records`, ``chimap_sidecar`` (dict),
        ``stats_sidecar`` (JSON file), ``qc_<registration>`` (JSON file) for each transform, and
        ``chimap_<tag>``/``mask_<tag>`` with ``..._sidecar`` (dict) per output space.
        ``outputnode.out_files``: the named files, in specification order.
    """
    wf = pe.Workflow(name=name)
    values = {"inversion": inversion, "atlas": atlas_name, "atlas_space": atlas_space}
    grid = {"SpatialReference": spatial_reference} if spatial_reference else {}
    records = spec.session_records(has_t1w=has_t1w, longitudinal=longitudinal)
    fields, sinks = [], []
    for d in records:
        node = _sink(d, source_file, d.fill(**values), f"ds_{d.key}")
        fields.append(d.output_field)
        side = None
        if d.key == "chimap":
            side = ("chimap_sidecar", "sidecar")
        elif d.key == "dseg":
            if dseg_sidecar:
                node.inputs.sidecar = {**dseg_sidecar, **grid}
        elif d.key == "stats":
            side = ("stats_sidecar", "sidecar_file")
        elif d.level == "xfm":  # registration quality metrics in the transform's sidecar
            side = (f"qc_{d.output_field[4:]}", "sidecar_file")
        elif d.sidecar is not None:
            extra = dict(grid) if d.suffix in ("mask", "dseg") else {}
            if d.suffix == "mask" and sources:
                extra["Sources"] = list(sources)
            node.inputs.sidecar = {**spec.sidecar(d, **values), **extra}
        if side:
            fields.append(side[0])
        sinks.append((node, d.output_field, *(side or (None, None))))
    for space in spaces:
        for d in spec.SPACE:
            field = space_field(d.key, space)
            node = _sink(d, source_file, {**space.entities, **d.fill(**values)},
                         f"ds_{d.key}_{space.tag}")
            fields += [field, f"{field}_sidecar"]
            sinks.append((node, field, f"{field}_sidecar", "sidecar"))
    inputnode = pe.Node(niu.IdentityInterface(fields=fields), name="inputnode")
    return _finish(wf, inputnode, sinks)


def init_ds_subject_wf(*, subject, atlas_name, atlas_space, longitudinal, change,
                       name="ds_subject_wf"):
    """Sinks of one subject: within-subject template, its labels and transforms, change table.

    Parameters
    ----------
    subject : str
        Label without ``sub-``; outputs are named from ``sub-<label>_T1w.nii.gz``.
    atlas_name, atlas_space : str
        Atlas name and template space.
    longitudinal : bool
        The subject takes the longitudinal path (template outputs).
    change : bool
        The subject has a change table (two sessions or more).
    name : str
        Workflow name.

    Returns
    -------
    nipype.pipeline.engine.Workflow or None
        ``inputnode`` fields: the key of every record of
        :func:`~qsmprep.derivatives.spec.subject_records`, ``qc_atlas_to_template`` (JSON file,
        the sidecar of both template transforms) and ``dgmchange_sidecar`` (JSON file);
        ``outputnode.out_files``: the named files. ``None`` when the subject has no
        subject-level output.
    """
    records = spec.subject_records(longitudinal=longitudinal, change=change)
    if not records:
        return None
    wf = pe.Workflow(name=name)
    src = f"sub-{subject}_T1w.nii.gz"
    values = {"inversion": "", "atlas": atlas_name, "atlas_space": atlas_space}
    template_ref = spec.by_key("template").path(src, **values)
    fields, sinks = [], []
    for d in records:
        node = _sink(d, src, d.fill(**values), f"ds_{d.key}")
        fields.append(d.key)
        side = None
        if d.key.startswith("xfm_"):  # registration quality metrics in the transform sidecar
            side = ("qc_atlas_to_template", "sidecar_file")
        elif d.key == "dgmchange":
            side = ("dgmchange_sidecar", "sidecar_file")
        elif d.sidecar is not None:
            node.inputs.sidecar = spec.sidecar(d, template_ref=template_ref, **values)
        if side and side[0] not in fields:
            fields.append(side[0])
        sinks.append((node, d.key, *(side or (None, None))))
    inputnode = pe.Node(niu.IdentityInterface(fields=fields), name="inputnode")
    return _finish(wf, inputnode, sinks)
