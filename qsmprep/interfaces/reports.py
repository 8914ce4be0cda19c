"""Thin interface around :func:`qsmprep.reports.participant.build_report`."""

from __future__ import annotations

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from ..reports.participant import build_report


def _get(values, k):
    if not isdefined(values) or k >= len(values):
        return None
    return values[k] or None


class _ReportInputSpec(BaseInterfaceInputSpec):
    subject = traits.Str(mandatory=True)
    session_ids = traits.List(traits.Str, mandatory=True)
    chi = InputMultiObject(File(exists=True), mandatory=True)
    mask = InputMultiObject(File(exists=True), mandatory=True, desc="final QSM masks")
    brain_mask = InputMultiObject(File(exists=True), mandatory=True, desc="masks before erosion")
    mag = InputMultiObject(File(exists=True), mandatory=True, desc="RSS magnitude per session")
    labels = InputMultiObject(File(exists=True), mandatory=True)
    stats = InputMultiObject(File(exists=True), mandatory=True)
    sidecars = traits.List(traits.Dict, mandatory=True)
    change = File(exists=True)
    t1w = traits.List(traits.Str, desc="T1w per session ('' if none)")
    labels_t1w = traits.List(traits.Str, desc="labels on each session's T1w grid ('' if none)")
    template = traits.Str(desc="within-subject template ('' on the cross-sectional path)")
    labels_template = traits.Str(desc="labels in template space")
    label_table = File(exists=True, desc="atlas label table (colours)")
    registration_mode = traits.Str()
    extra_figures = traits.List(traits.Str, desc="QC figures made elsewhere")
    warnings = traits.List(traits.Str)
    n_threads = traits.Int(1, usedefault=True, desc="threads drawing the figures (the node's n_procs)")


class _ReportOutputSpec(TraitedSpec):
    out_report = File(exists=True)
    figures = traits.List(File(exists=True))


class ParticipantReport(SimpleInterface):
    """Assemble the self-contained participant HTML report of one subject.

    Calls :func:`qsmprep.reports.participant.build_report` with one session record per entry
    of ``session_ids`` (the list inputs are in that order).

    Inputs
    ------
    subject, session_ids : the subject label and its session ids
    chi, mask, brain_mask, mag, labels, stats, sidecars : per session, the referenced Chimap,
        the final and the pre-erosion mask, the RSS magnitude, the labels on the GRE grid, the
        ROI table and the Chimap sidecar (dict)
    t1w, labels_t1w : per session, the T1w and the labels on its grid ('' if none)
    template, labels_template : within-subject template and its labels ('' cross-sectional)
    change, label_table, registration_mode, extra_figures, warnings : optional, as in
        ``build_report``
    n_threads : threads drawing the figures; give the node the same ``n_procs``

    Outputs
    -------
    out_report : the ``sub-<label>.html`` page (in the node's working directory)
    figures : always empty (every figure is inline SVG)
    """

    input_spec = _ReportInputSpec
    output_spec = _ReportOutputSpec

    def _run_interface(self, runtime):
        sessions = []
        for k, ses in enumerate(self.inputs.session_ids):
            sessions.append({
                "session": ses,
                "chi": self.inputs.chi[k],
                "mask": self.inputs.mask[k],
                "brain_mask": self.inputs.brain_mask[k],
                "mag": self.inputs.mag[k],
                "labels": self.inputs.labels[k],
                "stats": self.inputs.stats[k],
                "sidecar": self.inputs.sidecars[k],
                "t1w": _get(self.inputs.t1w, k),
                "labels_t1w": _get(self.inputs.labels_t1w, k),
            })
        report, figures = build_report(
            self.inputs.subject,
            sessions,
            runtime.cwd,
            extra_figures=self.inputs.extra_figures if isdefined(self.inputs.extra_figures) else (),
            change_tsv=self.inputs.change if isdefined(self.inputs.change) else None,
            warnings=self.inputs.warnings if isdefined(self.inputs.warnings) else (),
            template=self.inputs.template if isdefined(self.inputs.template) else None,
            labels_template=self.inputs.labels_template if isdefined(self.inputs.labels_template) else None,
            label_table=self.inputs.label_table if isdefined(self.inputs.label_table) else None,
            registration_mode=self.inputs.registration_mode if isdefined(self.inputs.registration_mode) else None,
            n_threads=self.inputs.n_threads,
        )
        self._results["out_report"] = report
        self._results["figures"] = figures
        return runtime
