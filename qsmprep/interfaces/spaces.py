"""Thin Nipype interface around :func:`qsmprep.spaces.resample_to_space` (``--output-spaces``)."""

from __future__ import annotations

import os

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from .. import spaces


class _ResampleInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="image on the session's GRE grid")
    template = File(exists=True, mandatory=True, desc="atlas template (defines the space)")
    transforms = InputMultiObject(
        traits.Str, mandatory=True,
        desc="antsApplyTransforms order, nearest the template first ('' entries are skipped)")
    resolution_mm = traits.Int(0, usedefault=True, desc="grid spacing in mm (0 = template grid)")
    interpolator = traits.Str(spaces.CHIMAP_INTERPOLATOR, usedefault=True)
    out_name = traits.Str("resampled.nii.gz", usedefault=True)
    in_sidecar = traits.Dict(desc="sidecar of the GRE-grid image (copied, then updated)")
    sidecar_update = traits.Dict(desc="keys that describe the template-space image")


class _ResampleOutputSpec(TraitedSpec):
    out_file = File(exists=True)
    out_sidecar = traits.Dict(desc="in_sidecar updated with sidecar_update")


class ResampleToSpace(SimpleInterface):
    """One resampling of a GRE-grid image into a template space (:mod:`qsmprep.spaces`)."""

    input_spec = _ResampleInputSpec
    output_spec = _ResampleOutputSpec

    def _run_interface(self, runtime):
        self._results["out_file"] = spaces.resample_to_space(
            self.inputs.in_file,
            self.inputs.template,
            [t for t in self.inputs.transforms if t],
            os.path.join(runtime.cwd, self.inputs.out_name),
            resolution_mm=self.inputs.resolution_mm or None,
            interpolator=self.inputs.interpolator,
        )
        side = dict(self.inputs.in_sidecar) if isdefined(self.inputs.in_sidecar) else {}
        if isdefined(self.inputs.sidecar_update):
            side.update(self.inputs.sidecar_update)
        self._results["out_sidecar"] = side
        return runtime
