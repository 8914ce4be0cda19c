"""Nipype interfaces that name and publish derivatives (names: :mod:`qsmprep.derivatives.names`).

Outputs are never written straight into the output folder by the node that makes them. Each
``DerivativesSink`` node gives its file the final BIDS-derivatives name inside its own Nipype
working directory (so a rerun resumes from the cache), and one ``PublishDerivatives`` node per
subject, which runs only when every output of that subject exists, publishes them into
``output_dir`` all or nothing (:func:`qsmprep.publish.publish_subject`: stage, swap, then mark
the subject complete). A subject that crashes half-way leaves nothing under
``output_dir/sub-<label>`` and is never marked complete.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from ..derivatives.names import build_name, parse_entities, relative_dir
from ._io import write_gzip_reproducible

__all__ = ["DerivativesSink", "PublishDerivatives"]


class _SinkInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True)
    source_file = traits.Str(mandatory=True, desc="BIDS file whose entities name the output")
    suffix = traits.Str(mandatory=True)
    entities = traits.Dict(desc="entities to add (or drop with an empty value)")
    sidecar = traits.Dict(desc="JSON sidecar content")
    sidecar_file = File(exists=True, desc="JSON sidecar file (merged under ``sidecar``)")
    extension = traits.Str(desc="force an extension (default: that of in_file)")


class _SinkOutputSpec(TraitedSpec):
    out_file = File(exists=True)


class DerivativesSink(SimpleInterface):
    """Give a file its BIDS-derivatives name (and sidecar) in the node's working directory.

    The name is :func:`qsmprep.derivatives.names.build_name` of ``source_file``, ``suffix``,
    the extension of ``in_file`` (or ``extension``) and ``entities``. NIfTI files are written
    gzip-compressed with a reproducible header; ``sidecar_file`` and then ``sidecar`` are merged
    into the JSON sidecar (keys sorted), written only when not empty.

    Examples
    --------
    >>> sink = DerivativesSink(source_file="sub-01_echo-1_part-phase_MEGRE.nii.gz",
    ...                        suffix="Chimap", entities={"desc": "rts"})
    """

    input_spec = _SinkInputSpec
    output_spec = _SinkOutputSpec

    def _run_interface(self, runtime):
        src = self.inputs.in_file
        if isdefined(self.inputs.extension) and self.inputs.extension:
            ext = self.inputs.extension
        else:
            m = re.search(r"(\.nii\.gz|\.[A-Za-z0-9]+)$", os.path.basename(src))
            ext = m.group(1) if m else ""
        ents = dict(self.inputs.entities) if isdefined(self.inputs.entities) else {}
        # work-directory intermediates are often uncompressed (fast I/O); every NIfTI is
        # published gzip-compressed with a reproducible header (mtime 0, no file name)
        gz = ext in (".nii", ".nii.gz")
        if gz:
            ext = ".nii.gz"
        name = build_name(self.inputs.source_file, self.inputs.suffix, ext, **ents)
        out = os.path.join(runtime.cwd, name)
        if gz:
            write_gzip_reproducible(src, out)
        else:
            shutil.copyfile(src, out)
        meta = {}
        if isdefined(self.inputs.sidecar_file):
            meta.update(json.loads(Path(self.inputs.sidecar_file).read_text()))
        if isdefined(self.inputs.sidecar) and self.inputs.sidecar:
            meta.update(self.inputs.sidecar)
        if meta:
            side = out[: -len(ext)] + ".json"
            Path(side).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
        self._results["out_file"] = out
        return runtime


class _PublishInputSpec(BaseInterfaceInputSpec):
    in_files = InputMultiObject(traits.Either(File(exists=True), traits.List(File(exists=True))),
                                mandatory=True)
    output_dir = traits.Str(mandatory=True)
    subject = traits.Str(desc="subject label (default: from the file names)")


class _PublishOutputSpec(TraitedSpec):
    out_files = traits.List(traits.Str)


class PublishDerivatives(SimpleInterface):
    """Publish a subject's finished derivatives (and their JSON sidecars) into ``output_dir``,
    all or nothing, then mark the subject complete (:func:`qsmprep.publish.publish_subject`).

    ``in_files`` are named files (or lists of them); each goes to the folder its entities name
    (:func:`qsmprep.derivatives.names.relative_dir`), with the ``.json`` next to it.
    """

    input_spec = _PublishInputSpec
    output_spec = _PublishOutputSpec

    def _run_interface(self, runtime):
        from ..publish import publish_subject

        files = []
        for item in self.inputs.in_files:
            files.extend(item if isinstance(item, list) else [item])
        plan = []
        for f in files:
            pairs = [f]
            stem = re.sub(r"(\.nii\.gz|\.[A-Za-z0-9]+)$", "", f)
            if os.path.exists(stem + ".json") and not f.endswith(".json"):
                pairs.append(stem + ".json")
            for src in pairs:
                plan.append((src, os.path.join(relative_dir(src), os.path.basename(src))))
        if isdefined(self.inputs.subject) and self.inputs.subject:
            subject = self.inputs.subject
        else:
            subjects = {parse_entities(src).get("sub") for src, _ in plan}
            if len(subjects) != 1 or None in subjects:
                raise ValueError(f"cannot tell the subject of these outputs: {sorted(map(str, subjects))}")
            subject = subjects.pop()
        self._results["out_files"] = publish_subject(plan, self.inputs.output_dir, subject)
        return runtime
