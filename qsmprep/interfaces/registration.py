"""Thin Nipype interfaces around :mod:`qsmprep.registration` (one function call each).

Common inputs: ``resolution_mm`` (0 = native), ``seed`` (antsRegistration random seed) and
``num_threads`` (ITK threads; the workflow passes ``omp_nthreads``).
"""

from __future__ import annotations

import json
import logging
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

from .. import registration as reg

LOGGER = logging.getLogger("qsmprep.registration")


class _CommonInputSpec(BaseInterfaceInputSpec):
    resolution_mm = traits.Float(0.0, usedefault=True, desc="registration resolution (0 = native)")
    seed = traits.Int(reg.DEFAULT_SEED, usedefault=True, desc="antsRegistration random seed")
    num_threads = traits.Int(1, usedefault=True, desc="ITK threads")


def _opt(value):
    return value if isdefined(value) and value else None


# --------------------------------------------------------------------------------------------
class _BrainExtractInputSpec(_CommonInputSpec):
    in_file = File(exists=True, mandatory=True, desc="T1w (or GRE magnitude) head image")
    template = File(exists=True, mandatory=True, desc="brain-extracted atlas template")
    template_mask = File(exists=True, desc="template brain mask (default: template > 0)")
    resolution_mm = traits.Float(2.0, usedefault=True, desc="registration resolution (mm)")


class _BrainExtractOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="brain-extracted image")
    out_mask = File(exists=True, desc="brain mask")
    out_affine = File(exists=True, desc="affine template -> image (ANTs .mat), as estimated")


class BrainExtraction(SimpleInterface):
    """Template-based brain extraction (:func:`qsmprep.registration.brain_extract_t1w`)."""

    input_spec = _BrainExtractInputSpec
    output_spec = _BrainExtractOutputSpec

    def _run_interface(self, runtime):
        brain, mask, affine = reg.brain_extract_t1w(
            self.inputs.in_file,
            self.inputs.template,
            template_mask=_opt(self.inputs.template_mask),
            out_prefix=os.path.join(runtime.cwd, "t1w_"),
            resolution_mm=_opt(self.inputs.resolution_mm),
            seed=self.inputs.seed,
            num_threads=self.inputs.num_threads,
            return_affine=True,
        )
        self._results["out_file"] = brain
        self._results["out_mask"] = mask
        self._results["out_affine"] = affine
        return runtime


# --------------------------------------------------------------------------------------------
class _AtlasRegInputSpec(_CommonInputSpec):
    fixed = File(exists=True, mandatory=True, desc="skull-stripped target (T1w/template/GRE)")
    moving = File(exists=True, mandatory=True, desc="skull-stripped atlas template")
    fixed_mask = File(exists=True, desc="optional metric mask on the fixed image")
    src = traits.Str(reg.TEMPLATE_SPACE, usedefault=True, desc="moving space name")
    dst = traits.Str("T1w", usedefault=True, desc="fixed space name")
    type_of_transform = traits.Str("SyN", usedefault=True)
    reg_iterations = traits.List(traits.Int, list(reg.SYN_ITERATIONS), usedefault=True,
                                 desc="SyN iterations per pyramid level (registration.SYN_ITERATIONS)")
    syn_metric = traits.Enum("CC", "mattes", usedefault=True,
                             desc="SyN similarity: CC (same contrast) or mattes (MI)")
    qc_name = traits.Str("", usedefault=True,
                         desc="registration name for the quality metrics ('' = atlas_to_<dst>)")
    initial_affine = File(exists=True, desc="affine (template -> fixed) to start SyN from, "
                          "instead of the affine stage (e.g. the brain extraction's)")
    region_labels = File(exists=True, desc="atlas label image (template space): the SyN's "
                         "finest level runs on the fixed image cropped to these labels as the "
                         "coarse warp places them, plus region_margin_mm (coarser levels: whole "
                         "brain)")
    region_margin_mm = traits.Float(reg.SYN_REGION_MARGIN_MM, usedefault=True,
                                    desc="margin (mm) around the placed labels")


class _AtlasRegOutputSpec(TraitedSpec):
    fwd_transform = File(exists=True, desc="from-<src>_to-<dst> composite .h5")
    inv_transform = File(exists=True, desc="from-<dst>_to-<src> composite .h5")
    warped = File(exists=True, desc="moving resampled into the fixed grid")
    qc_file = File(exists=True, desc="registration quality (JSON sidecar content)")


class RegisterAtlas(SimpleInterface):
    """SyN of the atlas template to a skull-stripped image (:func:`register_atlas_to_t1w`)."""

    input_spec = _AtlasRegInputSpec
    output_spec = _AtlasRegOutputSpec

    def _run_interface(self, runtime):
        fwd, inv, warped = reg.register_atlas_to_t1w(
            self.inputs.fixed,
            self.inputs.moving,
            out_dir=runtime.cwd,
            src=self.inputs.src,
            dst=self.inputs.dst,
            resolution_mm=_opt(self.inputs.resolution_mm),
            type_of_transform=self.inputs.type_of_transform,
            reg_iterations=tuple(self.inputs.reg_iterations),
            fixed_mask=_opt(self.inputs.fixed_mask),
            syn_metric=self.inputs.syn_metric,
            seed=self.inputs.seed,
            num_threads=self.inputs.num_threads,
            qc_name=self.inputs.qc_name or None,
            qc_file=os.path.join(runtime.cwd, "registration_quality.json"),
            initial_affine=_opt(self.inputs.initial_affine),
            region_labels=_opt(self.inputs.region_labels),
            region_margin_mm=self.inputs.region_margin_mm,
        )
        self._results.update(fwd_transform=fwd, inv_transform=inv, warped=warped,
                             qc_file=os.path.join(runtime.cwd, "registration_quality.json"))
        return runtime


# --------------------------------------------------------------------------------------------
class _RigidInputSpec(_CommonInputSpec):
    fixed = File(exists=True, mandatory=True)
    moving = File(exists=True, mandatory=True)
    fixed_mask = File(exists=True, desc="brain mask of the fixed image")
    moving_mask = File(exists=True, desc="brain mask of the moving image")
    src = traits.Str("moving", usedefault=True)
    dst = traits.Str("fixed", usedefault=True)
    type_of_transform = traits.Enum("Rigid", "Affine", "Similarity", usedefault=True)
    qc_name = traits.Str("", usedefault=True,
                         desc="registration name for quality metrics (e.g. gre_to_t1w); '' = none")
    max_samples = traits.Int(0, usedefault=True,
                             desc="MI sample points (0: registration.RIGID_MAX_SAMPLES)")


class _RigidOutputSpec(TraitedSpec):
    out_transform = File(exists=True, desc="from-<src>_to-<dst> .mat")
    warped = File(exists=True, desc="moving resampled into the fixed grid")
    qc_file = File(desc="registration quality (JSON sidecar content), when qc_name is set")


class RigidRegistration(SimpleInterface):
    """Rigid/affine Mattes-MI registration (:func:`qsmprep.registration.register_rigid`)."""

    input_spec = _RigidInputSpec
    output_spec = _RigidOutputSpec

    def _run_interface(self, runtime):
        xfm, warped = reg.register_rigid(
            self.inputs.fixed,
            self.inputs.moving,
            out_dir=runtime.cwd,
            src=self.inputs.src,
            dst=self.inputs.dst,
            fixed_mask=_opt(self.inputs.fixed_mask),
            moving_mask=_opt(self.inputs.moving_mask),
            resolution_mm=_opt(self.inputs.resolution_mm),
            type_of_transform=self.inputs.type_of_transform,
            seed=self.inputs.seed,
            num_threads=self.inputs.num_threads,
            qc_name=self.inputs.qc_name or None,
            qc_file=(os.path.join(runtime.cwd, "registration_quality.json")
                     if self.inputs.qc_name else None),
            max_samples=self.inputs.max_samples or None,
        )
        self._results.update(out_transform=xfm, warped=warped)
        if self.inputs.qc_name:
            self._results["qc_file"] = os.path.join(runtime.cwd, "registration_quality.json")
        return runtime


# --------------------------------------------------------------------------------------------
class _TemplateInputSpec(_CommonInputSpec):
    in_files = InputMultiObject(File(exists=True), mandatory=True, desc="T1w of every session")
    iterations = traits.Int(reg.TEMPLATE_ITERATIONS, usedefault=True,
                            desc="template iterations (>= 2)")


class _TemplateOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="unbiased within-subject template")
    transforms = traits.List(File(exists=True),
                             desc="per input T1w (same order): T1w -> template rigid .mat")


class BuildSubjectTemplate(SimpleInterface):
    """Unbiased rigid within-subject template (:func:`build_subject_template`)."""

    input_spec = _TemplateInputSpec
    output_spec = _TemplateOutputSpec

    def _run_interface(self, runtime):
        self._results["out_file"], self._results["transforms"] = reg.build_subject_template(
            list(self.inputs.in_files),
            out_dir=runtime.cwd,
            iterations=self.inputs.iterations,
            resolution_mm=_opt(self.inputs.resolution_mm),
            seed=self.inputs.seed,
            num_threads=self.inputs.num_threads,
            return_transforms=True,
        )
        return runtime


# --------------------------------------------------------------------------------------------
class _TemplateXfmInputSpec(BaseInterfaceInputSpec):
    template = File(exists=True, mandatory=True, desc="subject template (fixed grid)")
    t1w = File(exists=True, mandatory=True, desc="the session's T1w")
    transforms = traits.List(File(exists=True), mandatory=True,
                             desc="BuildSubjectTemplate.transforms")
    index = traits.Int(mandatory=True, desc="this session's position in the template inputs")
    src = traits.Str("T1w", usedefault=True)
    dst = traits.Str("individual", usedefault=True)
    qc_name = traits.Str("t1w_to_template", usedefault=True)
    num_threads = traits.Int(1, usedefault=True, desc="ITK threads")


class TemplateSessionTransform(SimpleInterface):
    """One session's T1w -> template transform from the template construction
    (:func:`qsmprep.registration.template_session_transform`), with its quality metrics."""

    input_spec = _TemplateXfmInputSpec
    output_spec = _RigidOutputSpec

    def _run_interface(self, runtime):
        qc = os.path.join(runtime.cwd, "registration_quality.json")
        xfm, warped = reg.template_session_transform(
            self.inputs.template,
            self.inputs.t1w,
            self.inputs.transforms[self.inputs.index],
            out_dir=runtime.cwd,
            src=self.inputs.src,
            dst=self.inputs.dst,
            qc_name=self.inputs.qc_name,
            qc_file=qc,
            num_threads=self.inputs.num_threads,
        )
        self._results.update(out_transform=xfm, warped=warped, qc_file=qc)
        return runtime


# --------------------------------------------------------------------------------------------
class _ApplyInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="image to resample (labels)")
    reference = File(exists=True, mandatory=True, desc="target grid")
    transforms = InputMultiObject(
        File(exists=True), desc="antsApplyTransforms order (nearest the reference first)"
    )
    invert = traits.List(traits.Bool, desc="invert flag per transform")
    mask = File(exists=True, desc="binary mask on the reference grid (outside -> 0)")
    interpolator = traits.Str("genericLabel", usedefault=True)
    out_name = traits.Str("labels.nii.gz", usedefault=True)


class _ApplyOutputSpec(TraitedSpec):
    out_file = File(exists=True)


def _chain(inputs):
    """``transforms`` (a list, empty when undefined) and ``invert`` (None when undefined)."""
    xfms = list(inputs.transforms) if isdefined(inputs.transforms) else []
    inv = list(inputs.invert) if isdefined(inputs.invert) else None
    return xfms, inv


class ApplyTransforms(SimpleInterface):
    """One resampling through a transform chain (:func:`compose_and_apply`)."""

    input_spec = _ApplyInputSpec
    output_spec = _ApplyOutputSpec

    def _run_interface(self, runtime):
        xfms, inv = _chain(self.inputs)
        self._results["out_file"] = reg.compose_and_apply(
            self.inputs.in_file,
            self.inputs.reference,
            xfms,
            invert=inv,
            out_file=os.path.join(runtime.cwd, self.inputs.out_name),
            mask=_opt(self.inputs.mask),
            interpolator=self.inputs.interpolator,
        )
        return runtime


# --------------------------------------------------------------------------------------------
class _B0InputSpec(BaseInterfaceInputSpec):
    mask = File(exists=True, mandatory=True, desc="GRE brain mask (its points are mapped)")
    transforms = InputMultiObject(
        File(exists=True), desc="the atlas labels' chain into this GRE grid (ApplyTransforms order)"
    )
    invert = traits.List(traits.Bool, desc="invert flag per transform")


class _B0OutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="B0 direction in the atlas frame (JSON)")


class B0Orientation(SimpleInterface):
    """The session's B0 direction in the atlas frame (:func:`qsmprep.registration.b0_orientation`)."""

    input_spec = _B0InputSpec
    output_spec = _B0OutputSpec

    def _run_interface(self, runtime):
        xfms, inv = _chain(self.inputs)
        self._results["out_file"] = reg.b0_orientation(
            self.inputs.mask, xfms, inv, out_file=os.path.join(runtime.cwd, "b0_orientation.json"))
        return runtime


class _B0ChangeInputSpec(_CommonInputSpec):
    baseline_mag = File(exists=True, mandatory=True, desc="baseline GRE magnitude (3-D)")
    followup_mag = File(exists=True, mandatory=True, desc="follow-up GRE magnitude (3-D)")
    baseline_mask = File(exists=True, mandatory=True, desc="baseline GRE brain mask")
    followup_mask = File(exists=True, mandatory=True, desc="follow-up GRE brain mask")


class B0Change(SimpleInterface):
    """Angle between two sessions' B0 directions in the head
    (:func:`qsmprep.registration.b0_angle_between_sessions`)."""

    input_spec = _B0ChangeInputSpec
    output_spec = _B0OutputSpec

    def _run_interface(self, runtime):
        self._results["out_file"] = reg.b0_angle_between_sessions(
            self.inputs.baseline_mag, self.inputs.followup_mag, self.inputs.baseline_mask,
            self.inputs.followup_mask, out_dir=runtime.cwd, seed=self.inputs.seed,
            num_threads=self.inputs.num_threads)
        return runtime


# --------------------------------------------------------------------------------------------
class _QCInputSpec(BaseInterfaceInputSpec):
    in_files = InputMultiObject(traits.Str, mandatory=True,
                                desc="registration_quality.json of each registration ('' = none)")
    subject = traits.Str("", usedefault=True)
    session = traits.Str("", usedefault=True)


class _QCOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="session verdict: metrics, flagged, reasons (JSON)")
    flagged = traits.Int(desc="1 when a metric is below its threshold")


class RegistrationQC(SimpleInterface):
    """One session's registration verdict (:func:`qsmprep.registration_qc.assess`), logged."""

    input_spec = _QCInputSpec
    output_spec = _QCOutputSpec

    def _run_interface(self, runtime):
        from ..registration_qc import session_verdict

        docs = [json.loads(open(f).read()) for f in self.inputs.in_files if f]
        verdict = session_verdict(docs)
        who = " ".join(x for x in (f"sub-{self.inputs.subject}" if self.inputs.subject else "",
                                   f"ses-{self.inputs.session}" if self.inputs.session else "")
                       if x) or "this session"
        for flag in verdict["QualityFlags"]:
            LOGGER.warning("%s: registration quality flagged: %s", who, flag["message"])
        out = os.path.join(runtime.cwd, "session_registration_quality.json")
        with open(out, "w") as fh:
            json.dump(verdict, fh, indent=2, sort_keys=True)
        self._results.update(out_file=out, flagged=int(verdict["Flagged"]))
        return runtime
