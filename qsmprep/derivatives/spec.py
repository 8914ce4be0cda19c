"""The output specification: every derivative qsmprep writes, in one table.

Each :class:`Derivative` record says what a file is (suffix, entities, extension), at which
level it is written (``session``, ``space``, ``subject``) and when, and its static sidecar.
Readers of the table:

* the sink workflows (:func:`qsmprep.workflows.outputs.init_ds_session_wf`,
  :func:`~qsmprep.workflows.outputs.init_ds_subject_wf`) make one ``DerivativesSink`` per
  record, named ``ds_<key>``;
* ``docs/outputs.md`` lists every record's :meth:`Derivative.pattern` (checked by
  ``tests/derivatives/test_spec.py``);
* the completion marker (:func:`qsmprep.publish.publish_subject`) records what the sinks
  published; :func:`expected_names` gives the names one subject's marker must list.

Entity values in braces are filled per run: ``{inversion}`` (the inversion method's ``desc``
label), ``{atlas}`` (atlas name), ``{atlas_space}`` (the atlas template's space). Names are made
by :func:`qsmprep.derivatives.names.build_name` from the session's first phase image (session
outputs) or ``sub-<label>_T1w.nii.gz`` (subject outputs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from .names import build_name, derivative_path

__all__ = ["Derivative", "SESSION", "XFM", "SPACE", "SUBJECT", "DATASET_FILES", "ALL",
           "by_key", "expected_names"]


def _frozen(d):
    return MappingProxyType(dict(d)) if d is not None else None


@dataclass(frozen=True)
class Derivative:
    """One kind of output file.

    Parameters
    ----------
    key : str
        Short name; the sink node is ``ds_<key>`` and the sink workflow's input field is ``key``.
    level : str
        ``session`` (GRE grid), ``xfm`` (per-session transform), ``space`` (template space,
        ``--output-spaces``) or ``subject``.
    suffix : str
        BIDS suffix.
    extension : str
        Extension of the published file (NIfTI is always published gzip-compressed).
    entities : mapping
        Entities added to the source's (``{placeholder}`` values filled per run).
    sidecar : mapping or None
        Static JSON sidecar content; ``None`` when the sidecar comes from the producing node
        (or there is none).
    description : str
        One line for ``docs/outputs.md``.
    when : str
        When the file is written (``always``, ``longitudinal``, ``T1w``, ``no T1w``, ...).
    output_field : str
        The producing workflow's output field when it differs from ``key`` (the transforms:
        ``xfm_atlas_to_session`` feeds both ``xfm_atlas_to_t1w`` and ``xfm_atlas_to_gre``).
    """

    key: str
    level: str
    suffix: str
    extension: str
    entities: Mapping = field(default_factory=dict)
    sidecar: Mapping | None = None
    description: str = ""
    when: str = "always"
    output_field: str = ""

    def __post_init__(self):
        object.__setattr__(self, "entities", _frozen(self.entities))
        object.__setattr__(self, "sidecar", _frozen(self.sidecar))
        if not self.output_field:
            object.__setattr__(self, "output_field", self.key)

    def fill(self, **values) -> dict:
        """The entities with ``{placeholders}`` filled.

        Parameters
        ----------
        **values
            ``inversion``, ``atlas``, ``atlas_space`` as needed.

        Returns
        -------
        dict

        Examples
        --------
        >>> by_key("stats").fill(atlas="DGM")
        {'atlas': 'DGM', 'desc': 'dgm'}
        """
        return {k: v.format(**values) for k, v in self.entities.items()}

    def name(self, source_file, **values) -> str:
        """The file name of this output for ``source_file`` (:func:`~.names.build_name`).

        Parameters
        ----------
        source_file : str or path-like
            The raw image whose entities name the output.
        **values
            Placeholder values (:meth:`fill`).

        Returns
        -------
        str
        """
        return build_name(source_file, self.suffix, self.extension, **self.fill(**values))

    def path(self, source_file, **values) -> str:
        """Output-relative path (folder and name) of this output (:func:`~.names.derivative_path`).

        Parameters
        ----------
        source_file : str or path-like
        **values
            Placeholder values (:meth:`fill`).

        Returns
        -------
        str
        """
        return derivative_path(source_file, self.suffix, self.extension, **self.fill(**values))

    def pattern(self) -> str:
        """The name with placeholders, as ``docs/outputs.md`` lists it.

        Returns
        -------
        str
            E.g. ``sub-<label>[_ses-<label>]_desc-<inversion>_Chimap.nii.gz``.

        Examples
        --------
        >>> by_key("chimap").pattern()
        'sub-<label>[_ses-<label>]_desc-<inversion>_Chimap.nii.gz'
        """
        ents = self.fill(inversion="<inversion>", atlas="<atlas>", atlas_space="<atlas_space>")
        if self.level == "space":
            ents = {"space": "<space>", "res": "<N>", **ents}
        src = "sub-<label>_T1w.nii.gz" if self.level == "subject" else "sub-<label>_MEGRE.nii.gz"
        name = build_name(src, self.suffix, self.extension, **ents)
        if self.level != "subject":
            name = name.replace("sub-<label>", "sub-<label>[_ses-<label>]", 1)
        if self.level == "space":
            name = name.replace("_res-<N>", "[_res-<N>]")
        return name


_MASK_SIDECAR = {"Type": "Brain", "Description":
                 "Final QSM mask (after background field removal erosion); the support of the Chimap "
                 "and of the ROI statistics."}

#: Per-session outputs on the GRE grid (:func:`~qsmprep.workflows.outputs.init_ds_session_wf`).
SESSION = (
    Derivative("chimap", "session", "Chimap", ".nii.gz", {"desc": "{inversion}"},
               description="susceptibility, ppm (sidecar from the QSM workflow)"),
    Derivative("mask", "session", "mask", ".nii.gz", {"desc": "brain"}, _MASK_SIDECAR,
               description="final (eroded) QSM mask"),
    Derivative("local_field", "session", "field", ".nii.gz", {"desc": "local"},
               {"Units": "ppm", "Description":
                "Local field after background field removal, relative to B0 (ppm). Non-standard "
                "name, listed in .bidsignore."},
               description="local field, ppm (non-standard name)"),
    Derivative("r2starmap", "session", "R2starmap", ".nii.gz", {"desc": "loglinear"},
               {"Units": "1/s", "SkullStripped": True, "Description":
                "R2* from a magnitude^2-weighted log-linear fit of the multi-echo magnitude "
                "against echo time, inside the brain mask (qsmprep.qsm.relaxometry)."},
               description="R2*, 1/s (multi-echo magnitude fit)"),
    Derivative("t2starmap", "session", "T2starmap", ".nii.gz", {"desc": "loglinear"},
               {"Units": "s", "SkullStripped": True, "Description":
                "T2* = 1/R2* (0 where R2* is 0), inside the brain mask."},
               description="T2* = 1/R2*, s"),
    Derivative("dseg", "session", "dseg", ".nii.gz", {"atlas": "{atlas}"},
               description="atlas labels on the GRE grid, inside the mask (sidecar: registration)"),
    Derivative("stats", "session", "stats", ".tsv", {"atlas": "{atlas}", "desc": "dgm"},
               description="per-structure statistics, ppb (sidecar from the ROI step)"),
)

#: Per-session registration transforms (ANTs files, BIDS-like names; sidecars hold the
#: registration quality metrics).
XFM = (
    Derivative("xfm_gre_to_t1w", "xfm", "xfm", ".mat",
               {"from": "MEGRE", "to": "T1w", "mode": "image"},
               description="GRE magnitude -> session T1w (rigid)", when="T1w"),
    Derivative("xfm_t1w_to_template", "xfm", "xfm", ".mat",
               {"from": "T1w", "to": "individual", "mode": "image"},
               description="session T1w -> subject template (rigid)", when="T1w, longitudinal"),
    Derivative("xfm_atlas_to_t1w", "xfm", "xfm", ".h5",
               {"from": "{atlas_space}", "to": "T1w", "mode": "image"},
               description="atlas template -> session T1w (SyN)", when="T1w, cross-sectional",
               output_field="xfm_atlas_to_session"),
    Derivative("xfm_atlas_to_gre", "xfm", "xfm", ".h5",
               {"from": "{atlas_space}", "to": "MEGRE", "mode": "image"},
               description="atlas template -> GRE magnitude (SyN)", when="no T1w",
               output_field="xfm_atlas_to_session"),
)

#: Per-session template-space outputs (``--output-spaces``); ``space``/``res`` come from the
#: requested space, the sidecar from the resampling node.
SPACE = (
    Derivative("chimap", "space", "Chimap", ".nii.gz", {"desc": "{inversion}"},
               description="susceptibility resampled once into the template space",
               when="--output-spaces"),
    Derivative("mask", "space", "mask", ".nii.gz", {"desc": "brain"},
               description="QSM mask resampled once into the template space",
               when="--output-spaces"),
)

#: 'individual' is not a standard template: every image in it names its reference image (the
#: template itself, a dataset-relative path), as the BIDS validator requires
_TEMPLATE_REF = "{template_ref}"

#: Per-subject outputs (:func:`~qsmprep.workflows.outputs.init_ds_subject_wf`).
SUBJECT = (
    Derivative("template", "subject", "T1w", ".nii.gz",
               {"space": "individual", "desc": "template"},
               {"Description": "Unbiased within-subject T1w template (iterative rigid average of "
                              "all sessions).",
                "SpatialReference": _TEMPLATE_REF, "SkullStripped": False},
               description="within-subject template", when="longitudinal"),
    Derivative("labels_template", "subject", "dseg", ".nii.gz",
               {"space": "individual", "atlas": "{atlas}"},
               {"Description": "{atlas} atlas labels in the within-subject template space.",
                "SpatialReference": _TEMPLATE_REF},
               description="atlas labels in template space", when="longitudinal"),
    Derivative("xfm_atlas_to_template", "subject", "xfm", ".h5",
               {"from": "{atlas_space}", "to": "individual", "mode": "image"},
               description="atlas template -> subject template (SyN)", when="longitudinal"),
    Derivative("xfm_template_to_atlas", "subject", "xfm", ".h5",
               {"from": "individual", "to": "{atlas_space}", "mode": "image"},
               description="subject template -> atlas template (SyN)", when="longitudinal"),
    Derivative("dgmchange", "subject", "stats", ".tsv", {"atlas": "{atlas}", "desc": "dgmchange"},
               description="follow-up minus baseline per structure (ppb)", when="two sessions"),
)

#: Dataset-level files (:mod:`qsmprep.derivatives.dataset`), outside ``sub-*``.
DATASET_FILES = ("dataset_description.json", "README.md", ".bidsignore",
                 "atlas-<atlas>_description.json", "atlas-<atlas>_dseg.tsv")

#: Every per-subject derivative record.
ALL = SESSION + XFM + SPACE + SUBJECT


def by_key(key: str, level: str | None = None) -> Derivative:
    """The record named ``key`` (first match; ``level`` disambiguates ``chimap``/``mask``).

    Parameters
    ----------
    key : str
    level : str or None

    Returns
    -------
    Derivative

    Raises
    ------
    KeyError
        No such record.
    """
    for d in ALL:
        if d.key == key and (level is None or d.level == level):
            return d
    raise KeyError(f"no derivative {key!r}" + (f" at level {level!r}" if level else ""))


def sidecar(d: Derivative, **values) -> dict | None:
    """The static sidecar of ``d`` with ``{placeholders}`` filled (``None`` when it has none).

    Parameters
    ----------
    d : Derivative
    **values
        ``atlas``, ``template_ref``, ... as the sidecar needs.

    Returns
    -------
    dict or None
    """
    if d.sidecar is None:
        return None
    return {k: v.format(**values) if isinstance(v, str) and "{" in v else v
            for k, v in d.sidecar.items()}


def session_records(*, has_t1w: bool, longitudinal: bool) -> tuple:
    """The session-level and transform records written for one session, in sink order.

    Parameters
    ----------
    has_t1w : bool
        The session has a T1w image.
    longitudinal : bool
        The subject takes the longitudinal (within-subject template) path.

    Returns
    -------
    tuple of Derivative
    """
    if has_t1w:
        xfm = (by_key("xfm_gre_to_t1w"),
               by_key("xfm_t1w_to_template") if longitudinal else by_key("xfm_atlas_to_t1w"))
    else:
        xfm = (by_key("xfm_atlas_to_gre"),)
    return SESSION + xfm


def subject_records(*, longitudinal: bool, change: bool) -> tuple:
    """The subject-level records written for one subject, in sink order.

    Parameters
    ----------
    longitudinal : bool
        The subject takes the longitudinal path (template, its labels and transforms).
    change : bool
        The subject has two sessions or more (change table).

    Returns
    -------
    tuple of Derivative
    """
    keys = (("template", "labels_template", "xfm_atlas_to_template", "xfm_template_to_atlas")
            if longitudinal else ())
    return tuple(by_key(k, "subject") for k in keys) + ((by_key("dgmchange"),) if change else ())


def expected_names(subject, sessions, *, inversion, atlas, atlas_space, longitudinal,
                   spaces=()) -> list[str]:
    """Output-relative paths of every derivative one subject's participant level publishes.

    Reports and figures are not included (:mod:`qsmprep.reports`), nor JSON sidecars.

    Parameters
    ----------
    subject : str
        Label without ``sub-``.
    sessions : list of (str, bool)
        ``(source_file, has_t1w)`` per session: the session's first phase image.
    inversion : str
        The inversion method's ``desc`` label.
    atlas, atlas_space : str
        Atlas name and template space.
    longitudinal : bool
        The subject takes the longitudinal path.
    spaces : sequence
        :class:`qsmprep.spaces.OutputSpace` entries (``--output-spaces``).

    Returns
    -------
    list of str
        In publication order.
    """
    values = {"inversion": inversion, "atlas": atlas, "atlas_space": atlas_space}
    out = []
    for source_file, has_t1w in sessions:
        for d in session_records(has_t1w=has_t1w, longitudinal=longitudinal):
            out.append(d.path(source_file, **values))
        for space in spaces:
            for d in SPACE:
                out.append(derivative_path(source_file, d.suffix, d.extension,
                                           **{**space.entities, **d.fill(**values)}))
    src = f"sub-{subject}_T1w.nii.gz"
    for d in subject_records(longitudinal=longitudinal, change=len(sessions) >= 2):
        out.append(d.path(src, **values))
    return out
