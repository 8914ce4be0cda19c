"""Thin Nipype interfaces around :mod:`qsmprep.qsm` (load NIfTI, call one function, save).

Each step interface loads its files, makes one call to the step function of
:mod:`qsmprep.qsm.pipeline` that :func:`~qsmprep.qsm.pipeline.reconstruct` also calls
(``run_masking``, ``run_field_fit``, ``run_background_removal``, ``run_inversion``,
``run_referencing``, ``run_r2star``) and saves the arrays; the ``provenance`` dict that call
returns (method, parameters, ...) is merged into the Chimap sidecar by :class:`MergeProvenance`.
"""

from __future__ import annotations

import json
import logging
import os

import nibabel as nb
import numpy as np
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from ..qsm import masking, pipeline
from ..qsm.methods import default as default_method
from ..qsm.kernels import b0_direction_from_affine, voxel_size_from_affine
from ..qsm.masking import nonfinite_voxels
from ..qsm.phase import choose_phase_values, complex_to_mag_phase, detect_and_rescale_phase
from ._io import load, load_mask, load_scaled_and_unscaled, open_image, save, write_json

LOGGER = logging.getLogger("qsmprep.interfaces.qsm")


def _geometry(img):
    return (
        tuple(float(v) for v in voxel_size_from_affine(img.affine)),
        b0_direction_from_affine(img.affine),
    )


def _method_opts(value):
    return dict(value) if isdefined(value) and value else {}


# --------------------------------------------------------------------------------------------
class _LoadGREInputSpec(BaseInterfaceInputSpec):
    mag_files = InputMultiObject(File(exists=True), mandatory=True,
                                 desc="magnitude, one per echo (real parts when parts='real-imag')")
    phase_files = InputMultiObject(File(exists=True), mandatory=True,
                                   desc="phase, one per echo (imaginary parts when parts='real-imag')")
    phase_units = traits.Str("", usedefault=True, desc="BIDS 'Units' of the phase sidecar")
    parts = traits.Enum("mag-phase", "real-imag", usedefault=True,
                        desc="what the two file lists hold (BIDS 'part' entity)")
    label = traits.Str("", usedefault=True, desc="sub-<l>[_ses-<l>], for log messages")


class _LoadGREOutputSpec(TraitedSpec):
    mag_file = File(exists=True, desc="4-D magnitude (float32)")
    phase_file = File(exists=True, desc="4-D phase in radians [-pi, pi) (float32)")
    mag_ref_file = File(exists=True, desc="3-D root-sum-of-squares magnitude (registration target)")
    nonfinite_file = File(exists=True, desc="3-D mask of voxels non-finite in any echo (excluded)")
    provenance = traits.Dict(desc="phase scaling detected per echo, non-finite voxels")


class LoadGRE(SimpleInterface):
    """Stack echoes into 4-D magnitude/phase and bring phase to radians (scaling detected).

    ``parts='real-imag'``: the two lists hold real and imaginary parts, converted with
    :func:`qsmprep.qsm.phase.complex_to_mag_phase`. Voxels that are NaN/Inf in any echo
    (:func:`qsmprep.qsm.masking.nonfinite_voxels`) are set to 0, written to ``nonfinite_file``
    (the brain mask leaves them out), counted in the provenance (``NonFiniteVoxels``) and flagged
    (``QualityFlags``).
    """

    input_spec = _LoadGREInputSpec
    output_spec = _LoadGREOutputSpec

    def _run_interface(self, runtime):
        infos, per_file = [], {}
        ref = nb.load(self.inputs.mag_files[0])
        complex_input = self.inputs.parts == "real-imag"
        n_echo = len(self.inputs.mag_files)
        mag4d = phase4d = bad = None
        for e, (mfile, pfile) in enumerate(zip(self.inputs.mag_files, self.inputs.phase_files)):
            mraw = np.asarray(open_image(mfile).dataobj, dtype=np.float32)
            pimg = open_image(pfile)
            if complex_input:
                praw = np.asarray(pimg.dataobj, dtype=np.float32)
                mag, phase = complex_to_mag_phase(mraw, praw)
                info = {"detected": "angle of real + i*imaginary", "scale": 1.0, "offset": 0.0}
            else:
                values, note = choose_phase_values(*load_scaled_and_unscaled(pimg, np.float32))
                praw = values
                mag = mraw
                phase, info = detect_and_rescale_phase(values, units=self.inputs.phase_units or None)
                info = dict(info, header_scaling=note)
            bad_m, bad_p = nonfinite_voxels(mraw), nonfinite_voxels(praw)
            for f, b in ((mfile, bad_m), (pfile, bad_p)):
                if b.any():
                    per_file[os.path.basename(f)] = int(np.count_nonzero(b))
            info = dict(info, file=os.path.basename(pfile))
            infos.append(info)
            if mag4d is None:
                # Fortran order, as NIfTI stores it: each echo is one contiguous block, so
                # filling, the echo sum of combine_magnitude and writing need no transposed
                # copy (np.stack(..., axis=-1) made C-order arrays that nibabel transposed
                # again to write)
                shape4d = mag.shape + (n_echo,)
                mag4d = np.empty(shape4d, np.float32, order="F")
                phase4d = np.empty(shape4d, np.float32, order="F")
                bad = np.zeros(mag.shape, bool)
            elif mag.shape != mag4d.shape[:-1]:
                raise ValueError(f"{os.path.basename(mfile)}: shape {mag.shape} differs from "
                                 f"the first echo's {mag4d.shape[:-1]}.")
            mag4d[..., e] = mag
            phase4d[..., e] = phase
            bad |= bad_m
            bad |= bad_p
            del mag, phase, mraw, praw
        n_bad = int(np.count_nonzero(bad))
        if n_bad:
            mag4d[bad] = 0.0   # never a huge finite stand-in (nan_to_num gives 3.4e38 for +Inf)
            phase4d[bad] = 0.0
        self._results["mag_file"] = save(mag4d, ref, os.path.join(runtime.cwd, "mag4d.nii"))
        self._results["phase_file"] = save(phase4d, ref, os.path.join(runtime.cwd, "phase4d.nii"))
        self._results["mag_ref_file"] = save(
            masking.combine_magnitude(mag4d), ref, os.path.join(runtime.cwd, "mag_rss.nii")
        )
        self._results["nonfinite_file"] = save(bad, ref.slicer[..., 0] if ref.ndim == 4 else ref,
                                               os.path.join(runtime.cwd, "nonfinite.nii"))
        prov = {
            "PhaseScaling": infos,
            "InputParts": self.inputs.parts,
            "NonFiniteVoxels": {"Count": n_bad, "Files": per_file,
                                "Action": "set to 0 and excluded from the brain mask"},
        }
        if n_bad:
            where = f"{self.inputs.label}: " if self.inputs.label else ""
            files = ", ".join(f"{k} ({v})" for k, v in per_file.items())
            msg = (f"{where}{n_bad} voxel(s) are NaN or infinite in the GRE input ({files}); they "
                   "were excluded from the brain mask. Check the conversion of these images.")
            LOGGER.warning(msg)
            prov["QualityFlags"] = [{"step": "load_gre", "severity": "warning", "message": msg}]
        self._results["provenance"] = prov
        return runtime


# --------------------------------------------------------------------------------------------
class _MaskInputSpec(BaseInterfaceInputSpec):
    mag_file = File(exists=True, mandatory=True)
    phase_file = File(exists=True, mandatory=True)
    echo_times = traits.List(traits.Float, mandatory=True)
    method = traits.Str(mandatory=True)
    user_mask = File(exists=True, desc="user-supplied mask (skips computation)")
    exclude_file = File(exists=True, desc="voxels to leave out of any mask (non-finite input)")
    method_options = traits.Dict()


class _MaskOutputSpec(TraitedSpec):
    mask_file = File(exists=True)
    provenance = traits.Dict()


class BrainMask(SimpleInterface):
    """Brain mask from magnitude and phase quality (:func:`qsmprep.qsm.pipeline.run_masking`)."""

    input_spec = _MaskInputSpec
    output_spec = _MaskOutputSpec

    def _run_interface(self, runtime):
        mag, img = load(self.inputs.mag_file)
        user_mask = load_mask(self.inputs.user_mask)[0] if isdefined(self.inputs.user_mask) else None
        phase = load(self.inputs.phase_file)[0] if user_mask is None else None
        exclude = load_mask(self.inputs.exclude_file)[0] if isdefined(self.inputs.exclude_file) else None
        mask, prov = pipeline.run_masking(
            mag, phase, self.inputs.echo_times, _geometry(img)[0], self.inputs.method,
            user_mask=user_mask, exclude=exclude, **_method_opts(self.inputs.method_options))
        self._results["mask_file"] = save(mask, img.slicer[..., 0] if img.ndim == 4 else img,
                                          os.path.join(runtime.cwd, "mask.nii"))
        self._results["provenance"] = prov
        return runtime


# --------------------------------------------------------------------------------------------
class _FieldInputSpec(BaseInterfaceInputSpec):
    mag_file = File(exists=True, mandatory=True)
    phase_file = File(exists=True, mandatory=True)
    mask_file = File(exists=True, mandatory=True)
    echo_times = traits.List(traits.Float, mandatory=True)
    b0 = traits.Float(mandatory=True, desc="field strength (T)")
    combination = traits.Str(mandatory=True)
    unwrapping = traits.Str(mandatory=True)
    method_options = traits.Dict()


class _FieldOutputSpec(TraitedSpec):
    field_file = File(exists=True, desc="total field (ppm)")
    reliability_file = File(exists=True, desc="fit reliability 0..1")
    noise_file = File(exists=True, desc="noise SD of the field (ppm), when the method gives one")
    provenance = traits.Dict()


class TotalField(SimpleInterface):
    """Echo combination and unwrapping (:func:`qsmprep.qsm.pipeline.run_field_fit`)."""

    input_spec = _FieldInputSpec
    output_spec = _FieldOutputSpec

    def _run_interface(self, runtime):
        mag, img = load(self.inputs.mag_file)
        phase, _ = load(self.inputs.phase_file)
        mask, mimg = load_mask(self.inputs.mask_file)
        fit, prov = pipeline.run_field_fit(
            phase, mag, self.inputs.echo_times, mask, _geometry(img)[0], self.inputs.b0,
            self.inputs.combination, self.inputs.unwrapping,
            **_method_opts(self.inputs.method_options))
        self._results["field_file"] = save(fit["field_ppm"], mimg, os.path.join(runtime.cwd, "field_ppm.nii"))
        self._results["reliability_file"] = save(fit["reliability"], mimg,
                                                 os.path.join(runtime.cwd, "reliability.nii"))
        noise = pipeline.noise_sd_ppm(fit, self.inputs.b0)
        if noise is not None:
            self._results["noise_file"] = save(noise, mimg, os.path.join(runtime.cwd, "field_noise_ppm.nii"))
        self._results["provenance"] = prov
        return runtime


# --------------------------------------------------------------------------------------------
class _BFRInputSpec(BaseInterfaceInputSpec):
    field_file = File(exists=True, mandatory=True)
    mask_file = File(exists=True, mandatory=True)
    reliability_file = File(exists=True)
    method = traits.Str(mandatory=True)
    method_options = traits.Dict()


class _BFROutputSpec(TraitedSpec):
    local_file = File(exists=True, desc="local field (ppm)")
    mask_file = File(exists=True, desc="eroded mask")
    provenance = traits.Dict()


class BackgroundRemoval(SimpleInterface):
    """Background field removal (:func:`qsmprep.qsm.pipeline.run_background_removal`)."""

    input_spec = _BFRInputSpec
    output_spec = _BFROutputSpec

    def _run_interface(self, runtime):
        field, img = load(self.inputs.field_file)
        mask, _ = load_mask(self.inputs.mask_file)
        weights = load(self.inputs.reliability_file)[0] if isdefined(self.inputs.reliability_file) else None
        voxel_size, b0_dir = _geometry(img)
        local, eroded, prov = pipeline.run_background_removal(
            field, mask, voxel_size, b0_dir, self.inputs.method, weights=weights,
            **_method_opts(self.inputs.method_options))
        self._results["local_file"] = save(local, img, os.path.join(runtime.cwd, "local_ppm.nii"))
        self._results["mask_file"] = save(eroded, img, os.path.join(runtime.cwd, "mask_eroded.nii"))
        self._results["provenance"] = prov
        return runtime


# --------------------------------------------------------------------------------------------
class _InvInputSpec(BaseInterfaceInputSpec):
    local_file = File(exists=True, mandatory=True)
    mask_file = File(exists=True, mandatory=True)
    reliability_file = File(exists=True)
    noise_file = File(exists=True, desc="noise SD of the field (ppm): the map's field residual "
                      "is recorded and flagged against it")
    mag_file = File(exists=True, desc="magnitude for morphology-enabled methods: 3-D "
                    "echo-combined (the workflow passes LoadGRE's RSS) or 4-D (combined here)")
    method = traits.Str(mandatory=True)
    method_options = traits.Dict()
    log_label = traits.Str("", usedefault=True, desc="e.g. 'sub-01 ses-baseline', for log messages")


class _InvOutputSpec(TraitedSpec):
    chi_file = File(exists=True, desc="susceptibility (ppm), not referenced")
    provenance = traits.Dict()


class DipoleInversion(SimpleInterface):
    """Dipole inversion (:func:`qsmprep.qsm.pipeline.run_inversion`).

    Iterative solvers' convergence (iterations, converged, what stopped them) goes into the
    provenance; a solver cut short at its iteration cap (:func:`qsmprep.qsm.inversion.
    convergence_flag`) adds a ``QualityFlags`` warning and logs it at WARNING under the method's
    own name. With ``noise_file`` the field residual is recorded and flagged the same way
    (:func:`qsmprep.qsm.inversion.residual_flag`).
    """

    input_spec = _InvInputSpec
    output_spec = _InvOutputSpec

    def _run_interface(self, runtime):
        local, img = load(self.inputs.local_file)
        mask, _ = load_mask(self.inputs.mask_file)
        weights = load(self.inputs.reliability_file)[0] if isdefined(self.inputs.reliability_file) else None
        mag = load(self.inputs.mag_file)[0] if isdefined(self.inputs.mag_file) else None
        noise = load(self.inputs.noise_file)[0] if isdefined(self.inputs.noise_file) else None
        voxel_size, b0_dir = _geometry(img)
        chi, prov = pipeline.run_inversion(
            local, mask, voxel_size, b0_dir, self.inputs.method, weights=weights, mag=mag,
            log_label=self.inputs.log_label, noise_sd=noise,
            **_method_opts(self.inputs.method_options))
        self._results["chi_file"] = save(chi, img, os.path.join(runtime.cwd, "chi_unreferenced.nii"))
        self._results["provenance"] = prov
        return runtime


# --------------------------------------------------------------------------------------------
class _R2sInputSpec(BaseInterfaceInputSpec):
    mag_file = File(exists=True, mandatory=True, desc="4-D magnitude")
    mask_file = File(exists=True, mandatory=True, desc="brain mask")
    echo_times = traits.List(traits.Float, mandatory=True)
    method = traits.Str(default_method("relaxometry"), usedefault=True)
    method_options = traits.Dict(desc="options of the R2* method (e.g. field_correction)")
    field_file = File(exists=True, desc="total field (ppm), for field_correction='sinc'")
    b0 = traits.Float(desc="field strength (T), to convert the total field to Hz")


class _R2sOutputSpec(TraitedSpec):
    r2star_file = File(exists=True, desc="R2* (1/s)")
    t2star_file = File(exists=True, desc="T2* (s)")
    provenance = traits.Dict()


class R2StarMap(SimpleInterface):
    """R2* and T2* from the multi-echo magnitude (:func:`qsmprep.qsm.pipeline.run_r2star`)."""

    input_spec = _R2sInputSpec
    output_spec = _R2sOutputSpec

    def _run_interface(self, runtime):
        mag, img = load(self.inputs.mag_file)
        mask, mimg = load_mask(self.inputs.mask_file)
        field = load(self.inputs.field_file)[0] if isdefined(self.inputs.field_file) else None
        b0 = self.inputs.b0 if isdefined(self.inputs.b0) else None
        r2, t2, prov = pipeline.run_r2star(
            mag, self.inputs.echo_times, mask, method=self.inputs.method, field_ppm=field, b0=b0,
            voxel_size=_geometry(mimg)[0], **_method_opts(self.inputs.method_options))
        self._results["r2star_file"] = save(r2, mimg, os.path.join(runtime.cwd, "r2star.nii"))
        self._results["t2star_file"] = save(t2, mimg, os.path.join(runtime.cwd, "t2star.nii"))
        self._results["provenance"] = prov
        return runtime


# --------------------------------------------------------------------------------------------
class _RefInputSpec(BaseInterfaceInputSpec):
    chi_file = File(exists=True, mandatory=True)
    mask_file = File(exists=True, mandatory=True)
    ref_mask_file = File(exists=True, desc="reference region (e.g. CSF) on the same grid")
    mag_file = File(exists=True, desc="4-D magnitude (CSF mask from R2* when no ref_mask_file)")
    echo_times = traits.List(traits.Float)
    method = traits.Str(mandatory=True)


class _RefOutputSpec(TraitedSpec):
    chi_file = File(exists=True, desc="referenced susceptibility (ppm)")
    provenance = traits.Dict()


class ReferenceChi(SimpleInterface):
    """Susceptibility referencing (:func:`qsmprep.qsm.pipeline.run_referencing`).

    The magnitude file is read only when the method needs it (a reference mask derived from R2*
    when no ``ref_mask_file`` is given).
    """

    input_spec = _RefInputSpec
    output_spec = _RefOutputSpec

    def _run_interface(self, runtime):
        chi, img = load(self.inputs.chi_file)
        mask, _ = load_mask(self.inputs.mask_file)
        ref_mask = load_mask(self.inputs.ref_mask_file)[0] if isdefined(self.inputs.ref_mask_file) else None
        mag = (lambda: load(self.inputs.mag_file)[0]) if isdefined(self.inputs.mag_file) else None
        tes = list(self.inputs.echo_times) if isdefined(self.inputs.echo_times) else None
        chi_ref, prov = pipeline.run_referencing(chi, mask, self.inputs.method, ref_mask=ref_mask,
                                                 mag=mag, tes=tes, voxel_size=_geometry(img)[0])
        self._results["chi_file"] = save(chi_ref, img, os.path.join(runtime.cwd, "chi.nii"))
        self._results["provenance"] = prov
        return runtime


# --------------------------------------------------------------------------------------------
class _MergeProvInputSpec(BaseInterfaceInputSpec):
    provenance = traits.List(traits.Dict, mandatory=True)
    extra = traits.Dict(desc="static entries (EchoTime, MagneticFieldStrength, ...)")


class _MergeProvOutputSpec(TraitedSpec):
    sidecar = traits.Dict()
    sidecar_file = File(exists=True)


class MergeProvenance(SimpleInterface):
    """Merge per-step provenance dicts into one Chimap sidecar
    (:func:`qsmprep.qsm.pipeline.merge_provenance`).

    Keys of later steps win, except ``QualityFlags``: each step may return a list of
    ``{"step": str, "severity": "warning"|"error", "message": str}`` records under that key
    and the lists of all steps are concatenated (never overwritten) into the sidecar's
    ``QualityFlags``, so the sidecar, the log and the report list them all.
    """

    input_spec = _MergeProvInputSpec
    output_spec = _MergeProvOutputSpec

    def _run_interface(self, runtime):
        extra = dict(self.inputs.extra) if isdefined(self.inputs.extra) else {}
        out = pipeline.merge_provenance(self.inputs.provenance, extra)
        self._results["sidecar"] = json.loads(json.dumps(out, default=float))
        self._results["sidecar_file"] = write_json(out, os.path.join(runtime.cwd, "sidecar.json"))
        return runtime
