"""Every derivative qsmprep writes, in one place (see docs/outputs.md).

Each function adds ``DerivativesSink`` nodes for one level (session, subject) and returns the
list of ``(node, 'out_file')`` pairs that the subject's ``PublishDerivatives`` node waits for.
"""

from __future__ import annotations

from nipype.pipeline import engine as pe

from ..interfaces.derivatives import DerivativesSink, build_name

#: Per-session outputs: (name, source field of the session outputs, suffix, entities, sidecar)
SESSION_OUTPUTS = (
    ("chimap", "chi", "Chimap", {"desc": "{inversion}"}, "chimap"),
    ("mask", "mask", "mask", {"desc": "brain"}, {"Type": "Brain", "Description":
     "Final QSM mask (after background field removal erosion); the support of the Chimap "
     "and of the ROI statistics."}),
    ("local_field", "local_field", "field", {"desc": "local"}, {"Units": "ppm", "Description":
     "Local field after background field removal, relative to B0 (ppm). Non-standard name, "
     "listed in .bidsignore."}),
    ("r2starmap", "r2star", "R2starmap", {"desc": "loglinear"}, {"Units": "1/s", "SkullStripped": True, "Description":
     "R2* from a magnitude^2-weighted log-linear fit of the multi-echo magnitude against echo "
     "time, inside the brain mask (qsmprep.qsm.relaxometry)."}),
    ("t2starmap", "t2star", "T2starmap", {"desc": "loglinear"}, {"Units": "s", "SkullStripped": True, "Description":
     "T2* = 1/R2* (0 where R2* is 0), inside the brain mask."}),
    ("dseg", "labels", "dseg", {"atlas": "{atlas}"}, "dseg"),
    ("stats", "stats", "stats", {"atlas": "{atlas}", "desc": "dgm"}, "stats"),
)


def _fill(entities, **values):
    return {k: v.format(**values) for k, v in entities.items()}


def add_session_sinks(wf, source_node, source_fields, *, source_file, inversion, atlas_name, tag,
                      chimap_sidecar_node=None, dseg_sidecar=None, stats_sidecar_field=None,
                      spatial_reference=None, sources=None):
    """Add the sinks of one session.

    ``source_node`` exposes the fields named in :data:`SESSION_OUTPUTS`; ``source_fields``
    maps those names to the node's actual field names. ``spatial_reference`` (a BIDS URI of
    the raw GRE image whose grid the outputs share) goes into the mask and dseg sidecars,
    ``sources`` (BIDS URIs of the raw GRE images) into the mask sidecar.
    """
    grid = {"SpatialReference": spatial_reference} if spatial_reference else {}
    pairs = []
    for name, field, suffix, ents, sidecar in SESSION_OUTPUTS:
        sink = pe.Node(
            DerivativesSink(source_file=source_file, suffix=suffix,
                            entities=_fill(ents, inversion=inversion, atlas=atlas_name)),
            name=f"ds_{name}_{tag}", run_without_submitting=True,
        )
        wf.connect(source_node, source_fields[field], sink, "in_file")
        if sidecar == "chimap" and chimap_sidecar_node is not None:
            wf.connect(chimap_sidecar_node[0], chimap_sidecar_node[1], sink, "sidecar")
        elif sidecar == "dseg" and dseg_sidecar:
            sink.inputs.sidecar = {**dseg_sidecar, **grid}
        elif sidecar == "stats" and stats_sidecar_field is not None:
            wf.connect(stats_sidecar_field[0], stats_sidecar_field[1], sink, "sidecar_file")
        elif isinstance(sidecar, dict):
            extra = dict(grid) if suffix in ("mask", "dseg") else {}
            if suffix == "mask" and sources:
                extra["Sources"] = list(sources)
            sink.inputs.sidecar = {**sidecar, **extra}
        pairs.append((sink, "out_file"))
    return pairs


def add_subject_sinks(wf, long_wf, change_node, *, subject, atlas_name, atlas_space,
                      longitudinal):
    """Sinks of subject-level outputs: template, template-space labels, transforms, change table."""
    src = f"sub-{subject}_T1w.nii.gz"
    # 'individual' is not a standard template: every image in it names its reference image (the
    # template itself, a dataset-relative path), as the BIDS validator requires
    template_ref = f"sub-{subject}/anat/sub-{subject}_space-individual_desc-template_T1w.nii.gz"
    pairs = []
    specs = []
    if longitudinal:
        specs += [
            ("template", "T1w", {"space": "individual", "desc": "template"},
             {"Description": "Unbiased within-subject T1w template (iterative rigid average of all sessions).",
              "SpatialReference": template_ref, "SkullStripped": False}),
            ("labels_template", "dseg", {"space": "individual", "atlas": atlas_name},
             {"Description": f"{atlas_name} atlas labels in the within-subject template space.",
              "SpatialReference": template_ref}),
            ("xfm_atlas_to_template", "xfm", {"from": atlas_space, "to": "individual", "mode": "image"}, None),
            ("xfm_template_to_atlas", "xfm", {"from": "individual", "to": atlas_space, "mode": "image"}, None),
        ]
    for field, suffix, ents, sidecar in specs:
        sink = pe.Node(DerivativesSink(source_file=src, suffix=suffix, entities=ents),
                       name=f"ds_{field}", run_without_submitting=True)
        if sidecar:
            sink.inputs.sidecar = sidecar
        wf.connect(long_wf, f"outputnode.{field}", sink, "in_file")
        if field.startswith("xfm_"):  # registration quality metrics in the transform sidecar
            wf.connect(long_wf, "outputnode.qc_atlas_to_template", sink, "sidecar_file")
        pairs.append((sink, "out_file"))
    if change_node is not None:
        sink = pe.Node(DerivativesSink(source_file=src, suffix="stats",
                                       entities={"atlas": atlas_name, "desc": "dgmchange"}),
                       name="ds_dgmchange", run_without_submitting=True)
        wf.connect([(change_node, sink, [("out_tsv", "in_file"), ("out_json", "sidecar_file")])])
        pairs.append((sink, "out_file"))
    return pairs


def _pick(inlist, index):
    return inlist[index]


def add_session_xfm_sinks(wf, long_wf, index, *, source_file, tag, has_t1w, longitudinal, atlas_space):
    """Sinks of one session's registration transforms (ANTs files, BIDS-like names)."""
    specs = []
    if has_t1w:
        specs.append(("xfm_gre_to_t1w", {"from": "MEGRE", "to": "T1w", "mode": "image"}))
        if longitudinal:
            specs.append(("xfm_t1w_to_template", {"from": "T1w", "to": "individual", "mode": "image"}))
        else:
            specs.append(("xfm_atlas_to_session", {"from": atlas_space, "to": "T1w", "mode": "image"}))
    else:
        specs.append(("xfm_atlas_to_session", {"from": atlas_space, "to": "MEGRE", "mode": "image"}))
    pairs = []
    for field, ents in specs:
        sink = pe.Node(DerivativesSink(source_file=source_file, suffix="xfm", entities=ents),
                       name=f"ds_{field}_{tag}", run_without_submitting=True)
        wf.connect(long_wf, (f"outputnode.{field}", _pick, index), sink, "in_file")
        # registration quality metrics (RegistrationQuality) in the transform's JSON sidecar
        wf.connect(long_wf, (f"outputnode.qc_{field[4:]}", _pick, index), sink, "sidecar_file")
        pairs.append((sink, "out_file"))
    return pairs


def chimap_relpath(source_file, inversion) -> str:
    """Dataset-relative path of a session's (GRE-grid) Chimap, for ``Sources`` entries."""
    from ..interfaces.derivatives import relative_dir

    name = build_name(source_file, "Chimap", ".nii.gz", desc=inversion)
    return f"{relative_dir(name)}/{name}"


def add_space_sinks(wf, space_nodes, *, source_file, inversion, tag):
    """Sinks of one session's template-space outputs (``--output-spaces``).

    ``space_nodes`` maps each :class:`qsmprep.spaces.OutputSpace` to ``(chimap_node,
    mask_node)``, :class:`~qsmprep.interfaces.spaces.ResampleToSpace` nodes whose
    ``out_file``/``out_sidecar`` are published as
    ``..._space-<name>[_res-<N>]_desc-<inversion>_Chimap.nii.gz`` and
    ``..._space-<name>[_res-<N>]_desc-brain_mask.nii.gz`` (each with a JSON sidecar).
    """
    pairs = []
    for space, (chi_node, mask_node) in space_nodes.items():
        for kind, node, suffix, desc in (("chimap", chi_node, "Chimap", inversion),
                                         ("mask", mask_node, "mask", "brain")):
            sink = pe.Node(
                DerivativesSink(source_file=source_file, suffix=suffix,
                                entities={**space.entities, "desc": desc}),
                name=f"ds_{kind}_{space.tag}_{tag}", run_without_submitting=True,
            )
            wf.connect([(node, sink, [("out_file", "in_file"), ("out_sidecar", "sidecar")])])
            pairs.append((sink, "out_file"))
    return pairs
