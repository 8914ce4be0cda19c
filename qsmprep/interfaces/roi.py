"""Thin Nipype interfaces around :mod:`qsmprep.roi` (load files, call one function, save TSV)."""

from __future__ import annotations

import json
import logging
import os

import pandas as pd
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from .. import roi
from ..qsm.kernels import voxel_size_from_affine
from ._io import load, load_mask, write_json

LOGGER = logging.getLogger("qsmprep.roi")


def write_tsv(df: pd.DataFrame, fname) -> str:
    """Write a ROI table as BIDS TSV: tab-separated, UTF-8, ``n/a`` for missing values.

    Parameters
    ----------
    df : pandas.DataFrame
        Table to write (floats with 4 decimals).
    fname : path
        Output file.

    Returns
    -------
    str
        Absolute path of ``fname``.
    """
    fname = os.path.abspath(str(fname))
    df.to_csv(fname, sep="\t", index=False, na_rep="n/a", float_format="%.4f")
    return fname


def read_stats_tsv(fname) -> pd.DataFrame:
    """Read a ROI table written by :func:`write_tsv` (``n/a`` -> NaN, nothing else).

    Parameters
    ----------
    fname : path
        TSV file.

    Returns
    -------
    pandas.DataFrame
    """
    return pd.read_csv(fname, sep="\t", na_values=["n/a"], keep_default_na=False)


def _read_label_table(fname) -> pd.DataFrame:
    from ..atlas import read_label_table

    return read_label_table(fname)


class _ROIStatsInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="susceptibility map (ppm)")
    labels = File(exists=True, mandatory=True, desc="atlas labels on the same grid")
    label_table = File(exists=True, mandatory=True, desc="atlas-<Name>_dseg.tsv")
    mask = File(exists=True, desc="final QSM mask")
    reliability = File(exists=True, desc="multi-echo reliability map (0..1)")
    r2star = File(exists=True, desc="R2* map (1/s): adds r2star_mean/median/sd columns")
    erode_vox = traits.Either(
        traits.Enum("auto"), traits.Int(), default="auto", usedefault=True,
        desc="per-label erosion (voxels), or 'auto' (1 at <= 1.5 mm voxels, else 0)")
    min_reliability = traits.Float(desc="exclude voxels below this reliability")
    reference = traits.Str("n/a", usedefault=True, desc="susceptibility reference region")
    atlas_name = traits.Str("DGM", usedefault=True)
    qc_file = File(exists=True, desc="session registration quality verdict (RegistrationQC)")
    orientation_file = File(exists=True, desc="B0 direction in the atlas frame (B0Orientation): "
                            "adds the b0_* columns")


class _ROIStatsOutputSpec(TraitedSpec):
    out_tsv = File(exists=True, desc="per-label statistics (ppb)")
    out_json = File(exists=True, desc="data dictionary")


class ROIStats(SimpleInterface):
    """Per-label susceptibility statistics (:func:`qsmprep.roi.roi_statistics`)."""

    input_spec = _ROIStatsInputSpec
    output_spec = _ROIStatsOutputSpec

    def _run_interface(self, runtime):
        chi, img = load(self.inputs.in_file)
        labels, _ = load(self.inputs.labels, dtype="int32")
        mask = load_mask(self.inputs.mask)[0] if isdefined(self.inputs.mask) else None
        rel = load(self.inputs.reliability)[0] if isdefined(self.inputs.reliability) else None
        min_rel = self.inputs.min_reliability if isdefined(self.inputs.min_reliability) else None
        r2star = load(self.inputs.r2star)[0] if isdefined(self.inputs.r2star) else None
        voxel_size = voxel_size_from_affine(img.affine)
        erode = roi.resolve_erosion(self.inputs.erode_vox, voxel_size)
        df = roi.roi_statistics(
            chi,
            labels,
            _read_label_table(self.inputs.label_table),
            voxel_size,
            mask=mask,
            erode_vox=erode,
            reliability=rel,
            min_reliability=min_rel,
            r2star=r2star,
        )
        sidecar = roi.roi_sidecar(
            reference=self.inputs.reference,
            atlas_name=self.inputs.atlas_name,
            erode_vox=erode,
            min_reliability=min_rel,
            masked=mask is not None,
            erosion_mode="auto" if self.inputs.erode_vox == "auto" else "fixed",
            r2star=r2star is not None,
        )
        if isdefined(self.inputs.qc_file):
            from ..registration_qc import column_dictionary

            qc = json.loads(open(self.inputs.qc_file).read())
            df = roi.add_qc_columns(df, qc["Metrics"], qc["Flagged"], qc["Reasons"])
            sidecar.update(column_dictionary(qc["Metrics"]))
            sidecar["RegistrationQuality"] = qc
        if isdefined(self.inputs.orientation_file):
            orient = json.loads(open(self.inputs.orientation_file).read())
            df = roi.add_b0_columns(df, orient)
            sidecar.update(roi.b0_dictionary())
            sidecar["B0Orientation"] = orient
        self._results["out_tsv"] = write_tsv(df, os.path.join(runtime.cwd, "stats.tsv"))
        self._results["out_json"] = write_json(sidecar, os.path.join(runtime.cwd, "stats.json"))
        return runtime


class _ChangeInputSpec(BaseInterfaceInputSpec):
    in_files = InputMultiObject(File(exists=True), mandatory=True, desc="stats TSV per session")
    session_ids = traits.List(traits.Str, mandatory=True, desc="session of each TSV")
    baseline = traits.Str(mandatory=True)
    followup = traits.Str(mandatory=True)
    atlas_name = traits.Str("DGM", usedefault=True)
    subject = traits.Str("", usedefault=True, desc="subject label, named in the log")
    angle_file = File(exists=True, desc="B0Change JSON: the measured angle between the two "
                      "sessions' B0 directions (else from the tables' b0_* columns)")


class _ChangeOutputSpec(TraitedSpec):
    out_tsv = File(exists=True)
    out_json = File(exists=True)


class LongitudinalChange(SimpleInterface):
    """Follow-up minus baseline per label (:func:`qsmprep.roi.longitudinal_change`)."""

    input_spec = _ChangeInputSpec
    output_spec = _ChangeOutputSpec

    def _run_interface(self, runtime):
        files = list(self.inputs.in_files)
        if len(files) != len(self.inputs.session_ids):
            raise ValueError("one stats TSV per session id is required")
        stats = {s: read_stats_tsv(f) for s, f in zip(self.inputs.session_ids, files)}
        angle = None
        if isdefined(self.inputs.angle_file):
            angle = float(json.loads(open(self.inputs.angle_file).read())["B0AngleDeg"])
        df = roi.longitudinal_change(stats, self.inputs.baseline, self.inputs.followup,
                                     b0_angle_deg=angle)
        has_b0 = "b0_angle_deg" in df.columns
        if has_b0 and df["orientation_flagged"].any():
            from ..b0_orientation import ANGLE_WARN_DEG

            names = ", ".join(df.loc[df["orientation_flagged"] == 1, "name"].astype(str))
            LOGGER.warning(
                "%s: the head's orientation to B0 changed by %.1f degrees between ses-%s and "
                "ses-%s (above %g): the change of %s may carry an orientation bias of a few ppb "
                "(orientation_flagged = 1 in the change table; docs/validation.md)",
                f"sub-{self.inputs.subject}" if self.inputs.subject else "this subject",
                float(df["b0_angle_deg"].iloc[0]), self.inputs.baseline, self.inputs.followup,
                ANGLE_WARN_DEG, names)
        self._results["out_tsv"] = write_tsv(df, os.path.join(runtime.cwd, "change.tsv"))
        self._results["out_json"] = write_json(
            roi.roi_sidecar(atlas_name=self.inputs.atlas_name, change=True, b0=has_b0),
            os.path.join(runtime.cwd, "change.json"),
        )
        return runtime
