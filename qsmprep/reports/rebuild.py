"""``--reports-only``: rebuild participant reports from the outputs already in OUTPUT_DIR.

fMRIPrep's meaning: nothing is recomputed, no workflow runs and the work directory is not read.
Everything a report shows is read back from the published derivatives:

* per session (``sub-X[/ses-Y]/anat/``): ``*_desc-<method>_Chimap.nii.gz`` and its sidecar,
  ``*_desc-brain_mask.nii.gz`` (final QSM mask), ``*_atlas-<A>_dseg.nii.gz`` (+ sidecar, for the
  registration path) and ``*_atlas-<A>_desc-dgm_stats.tsv``;
* per subject (``sub-X/anat/``): the within-subject template and its labels, the change table;
* ``atlas-<A>_dseg.tsv`` at the top of OUTPUT_DIR (label names and colours);
* the magnitude images from the input dataset, through the Chimap sidecar's ``Sources``
  (``bids:raw:`` URIs) resolved against BIDS_DIR (the mask figure needs them).

Figures that need intermediate files not kept as outputs (atlas labels on the session T1w
grid, the mask before background-removal erosion) are left out of a rebuilt report.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from .participant import build_report

LOGGER = logging.getLogger("qsmprep")


def _one(folder: Path, pattern: str, exclude: str | None = None) -> Path | None:
    hits = sorted(p for p in folder.glob(pattern) if not (exclude and exclude in p.name))
    return hits[0] if hits else None


def _echo_number(path: Path) -> int:
    m = re.search(r"_echo-(\d+)", path.name)
    return int(m.group(1)) if m else 0


def _magnitudes(sidecar: dict, bids_dir: Path | None, anat_dir: Path | None) -> list[str]:
    """Magnitude files of the session: from the sidecar's Sources, else by name in BIDS_DIR."""
    files = []
    for uri in sidecar.get("Sources") or []:
        if isinstance(uri, str) and uri.startswith("bids:raw:") and "part-mag" in uri:
            if bids_dir is not None and (bids_dir / uri[len("bids:raw:"):]).is_file():
                files.append(bids_dir / uri[len("bids:raw:"):])
    if not files and anat_dir is not None and anat_dir.is_dir():
        files = list(anat_dir.glob("*_part-mag_MEGRE.nii*"))
    return [str(p) for p in sorted(files, key=_echo_number)]


def session_inputs(output_dir, subject: str, bids_dir=None) -> list[dict]:
    """What :func:`~qsmprep.reports.participant.build_report` needs, per published session.

    Parameters
    ----------
    output_dir : str or Path
        The derivatives folder.
    subject : str
        Subject label without ``sub-``.
    bids_dir : str or Path, optional
        The input dataset, where the magnitude images named in the Chimap sidecar's
        ``Sources`` are read (the mask figure is left out without them).

    Returns
    -------
    list of dict
        One ``build_report`` session record per ``sub-<label>[/ses-*]/anat`` folder holding a
        Chimap (``session``, ``chi``, ``mask``, ``mag``, ``labels``, ``stats``, ``sidecar``,
        ``labels_sidecar``; ``brain_mask``, ``t1w``, ``labels_t1w`` are None: not published);
        empty when the subject has none.
    """
    out = Path(output_dir)
    bids = Path(bids_dir) if bids_dir else None
    sub = out / f"sub-{subject}"
    folders = sorted(p for p in sub.glob("ses-*") if (p / "anat").is_dir())
    if not folders and (sub / "anat").is_dir():
        folders = [sub]
    sessions = []
    for folder in folders:
        anat = folder / "anat"
        chi = _one(anat, "*_desc-*_Chimap.nii*")
        if chi is None:
            continue
        ses = folder.name[4:] if folder.name.startswith("ses-") else "single"
        sidecar = {}
        side_file = Path(re.sub(r"\.nii(\.gz)?$", ".json", str(chi)))
        if side_file.is_file():
            sidecar = json.loads(side_file.read_text())
        dseg = _one(anat, "*_atlas-*_dseg.nii*", exclude="space-")
        raw_anat = (bids / f"sub-{subject}" / (f"ses-{ses}" if ses != "single" else "") / "anat"
                    if bids else None)
        sessions.append({
            "session": ses,
            "chi": str(chi),
            "mask": str(_one(anat, "*_desc-brain_mask.nii*") or ""),
            "brain_mask": None,
            "mag": _magnitudes(sidecar, bids, raw_anat),
            "labels": str(dseg or ""),
            "labels_sidecar": str(dseg).replace(".nii.gz", ".json") if dseg else "",
            "stats": str(_one(anat, "*_desc-dgm_stats.tsv") or ""),
            "sidecar": sidecar,
            "t1w": None,
            "labels_t1w": None,
        })
    return sessions


def rebuild_report(output_dir, subject: str, bids_dir=None) -> str:
    """Rewrite ``OUTPUT_DIR/sub-<subject>.html`` from the published outputs only.

    Parameters
    ----------
    output_dir : str or Path
        The derivatives folder (nothing in the work folder is read).
    subject : str
        Subject label without ``sub-``.
    bids_dir : str or Path, optional
        The input dataset (magnitude images for the mask figure).

    Returns
    -------
    str
        Path of the rewritten report.

    Raises
    ------
    FileNotFoundError
        The subject has no ``*_Chimap.nii.gz`` under ``output_dir``.
    """
    out = Path(output_dir)
    sessions = session_inputs(out, subject, bids_dir)
    if not sessions:
        raise FileNotFoundError(
            f"No qsmprep outputs for sub-{subject} in {out} (no sub-{subject}/[ses-*/]anat/"
            "*_Chimap.nii.gz): run the participant level first, without --reports-only.")
    mode = None
    for s in sessions:
        if s["labels_sidecar"] and Path(s["labels_sidecar"]).is_file():
            mode = json.loads(Path(s["labels_sidecar"]).read_text()).get("RegistrationPath")
            break
    subj_anat = out / f"sub-{subject}" / "anat"
    template = _one(subj_anat, "*_space-individual_desc-template_T1w.nii*")
    labels_template = _one(subj_anat, "*_space-individual_atlas-*_dseg.nii*")
    change = _one(subj_anat, "*_desc-dgmchange_stats.tsv")
    table = _one(out, "atlas-*_dseg.tsv")
    report, _ = build_report(
        subject, sessions, out,
        change_tsv=str(change) if change else None,
        template=str(template) if template else None,
        labels_template=str(labels_template) if labels_template else None,
        label_table=str(table) if table else None,
        registration_mode=mode,
    )
    return report


def subjects_with_outputs(output_dir) -> list[str]:
    """The subjects ``--reports-only`` can rebuild.

    Parameters
    ----------
    output_dir : str or Path
        The derivatives folder.

    Returns
    -------
    list of str
        Sorted labels (without ``sub-``) of the subjects with at least one Chimap.
    """
    out = Path(output_dir)
    return sorted(p.name[4:] for p in out.glob("sub-*") if p.is_dir()
                  and any(p.glob("**/anat/*_Chimap.nii*")))
