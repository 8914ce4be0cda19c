"""Small participant-level output trees for the group-level tests, written by the real writers.

Nothing the group level reads is hand-written here:

* ROI tables come from :func:`qsmprep.roi.roi_statistics` on a small label image whose voxel
  values give the wanted label means (plus :func:`qsmprep.roi.add_qc_columns` with the verdict
  of :func:`qsmprep.registration_qc.assess` for registration QC), written by :func:`qsmprep.interfaces.roi.write_tsv` (the writer of the ``ROIStats`` node);
  labels come from the default atlas label table (:func:`qsmprep.atlas.label_table`);
* Chimap sidecars come from the real QSM workflow (:func:`real_sidecars`);
* file names come from :func:`qsmprep.interfaces.derivatives.build_name`, completion markers from
  :func:`qsmprep.publish.mark_complete`.

So a reader that looks for a key, column or name the pipeline does not write fails here (the
bug class of issue 10: a fixture wrote ``"Reference": {"Method": ...}`` and ``lambda`` while the
pipeline writes ``reference`` and ``lam``).
"""

import base64
import json
import re

import nibabel as nb
import numpy as np
import pandas as pd

from qsmprep.atlas import label_table
from qsmprep.group import DEFAULT_STRUCTURES
from qsmprep.derivatives.names import build_name
from qsmprep.interfaces.roi import write_tsv
from qsmprep.publish import mark_complete
from qsmprep.registration_qc import assess
from qsmprep.roi import add_qc_columns, roi_statistics

STRUCTS = tuple(DEFAULT_STRUCTURES)
BASE = {"caudate": 55.0, "putamen": 45.0, "pallidum": 130.0, "thalamus": 5.0}
HOSTILE = "<img src=x onerror=alert(1)>"
#: registration QC metric of the flagged sessions, and the reason the real assessment gives
QC_METRIC = "t1w_to_template_ncc"
QC_REASON = assess({QC_METRIC: 0.2})[1][0]

_SIDECARS = {}


def real_sidecars(tmp_root):
    """Chimap sidecars of the real QSM workflow (``init_qsm_wf`` on a small simulated session).

    Default referencing (``'mean'``) and, rerun from the same work folder with only the
    reference step changed, ``'none'``.  Computed once per test session (cached by process).

    Returns
    -------
    dict
        ``{reference: sidecar dict}``.
    """
    if _SIDECARS:
        return _SIDECARS
    from qsmprep.qsm.pipeline import QSMOptions
    from qsmprep.simulate import simulate_session
    from qsmprep.workflows.qsm import init_qsm_wf

    d = simulate_session(preset="small", seed=3)
    mags, phases = [], []
    for e in range(d.mag.shape[-1]):
        m, p = tmp_root / f"mag{e}.nii.gz", tmp_root / f"phase{e}.nii.gz"
        nb.Nifti1Image(d.mag[..., e].astype(np.float32), d.affine).to_filename(m)
        nb.Nifti1Image(d.phase[..., e].astype(np.float32), d.affine).to_filename(p)
        mags.append(str(m))
        phases.append(str(p))
    o = QSMOptions()
    for ref in (o.reference, "none"):
        wf = init_qsm_wf(echo_times=list(d.tes), b0=3.0, masking=o.masking, combination=o.combination,
                         unwrapping=o.unwrapping, bf_removal=o.bf_removal, inversion=o.inversion, reference=ref,
                         phase_units="rad")
        wf.base_dir = str(tmp_root / "work")
        wf.inputs.inputnode.mag_files = mags
        wf.inputs.inputnode.phase_files = phases
        graph = wf.run(plugin="Linear")
        node = next(n for n in graph.nodes() if n.name == "chimap_sidecar")
        _SIDECARS[ref] = node.result.outputs.sidecar
    return _SIDECARS


def roi_table(means, r2star=None, drop=None, structure_names=None):
    """A ROI table computed by :func:`qsmprep.roi.roi_statistics`.

    Parameters
    ----------
    means : dict
        ``(structure, hemisphere) -> mean (ppb)`` for the labels of :data:`STRUCTS`.
    r2star : dict, optional
        ``(structure, hemisphere) -> mean R2* (1/s)``; adds the ``r2star_*`` columns.
    drop : str, optional
        Label name (``Left_Thalamus``) left out of the label table (a missing label row).
    structure_names : sequence of str, optional
        Replacement ``structure`` names, one per structure of :data:`STRUCTS`.

    Returns
    -------
    pandas.DataFrame
        Two voxels per label (value +/- 1 ppb), so the label mean and median are the value given.
    """
    table = label_table(dentate=False)
    table = table[table["structure"].isin(STRUCTS)].reset_index(drop=True)
    keys = list(zip(table["structure"], table["hemisphere"]))
    if structure_names is not None:
        table["structure"] = table["structure"].map(dict(zip(STRUCTS, structure_names)))
    n = len(table)
    labels = np.repeat(table["index"].to_numpy(), 2).reshape(2 * n, 1, 1)
    chi = np.array([[means[k] + 1.0, means[k] - 1.0] for k in keys]).reshape(2 * n, 1, 1) / 1000.0
    r2 = None
    if r2star is not None:
        r2 = np.array([[r2star[k] + 0.5, r2star[k] - 0.5] for k in keys]).reshape(2 * n, 1, 1)
    if drop is not None:
        table = table[table["name"] != drop].reset_index(drop=True)
    return roi_statistics(chi, labels, table, (1.0, 1.0, 1.0), r2star=r2)


def source_name(sub, ses):
    """Name of a raw multi-echo GRE file, the source every derived name is built from."""
    return f"sub-{sub}_ses-{ses}_echo-1_part-mag_MEGRE.nii.gz"


def write_tree(tmp_path, sidecar=None, n_ms=5, n_hc=4, sessions=("baseline", "followup"),
               missing=(("01", "followup"),), drop_label=("02", "baseline", "Left_Thalamus"), seed=0,
               groups=("MS", "HC"), struct_names=None, sidecar_for=None, flagged=(), r2star=True,
               extra_participants=()):
    """A BIDS folder (``participants.tsv``) and a participant-level output folder.

    Participants ``01..`` (the first ``n_ms`` in ``groups[0]``, then ``n_hc`` in ``groups[1]``);
    susceptibility ``BASE + subject effect + 8 (groups[0]) + 3 * session index + noise``.

    Parameters
    ----------
    tmp_path : Path
        Root; ``bids/`` and ``out/`` are created in it.
    sidecar : dict, optional
        Chimap sidecar written for every session.
    sidecar_for : callable, optional
        ``(sub, ses) -> sidecar`` instead of ``sidecar``.
    missing : iterable of (sub, ses)
        Sessions without outputs.
    drop_label : (sub, ses, label name), optional
        One label row left out of one ROI table.
    flagged : iterable of (sub, ses)
        Sessions flagged by registration QC (every table gets the QC columns when given).
    r2star : bool
        Write the R2* columns.
    extra_participants : list of dict
        Rows added to ``participants.tsv`` without outputs.

    Returns
    -------
    bids, out : Path
    """
    rng = np.random.default_rng(seed)
    bids, out = tmp_path / "bids", tmp_path / "out"
    bids.mkdir()
    parts = []
    for i in range(n_ms + n_hc):
        sub = f"{i + 1:02d}"
        grp = groups[0] if i < n_ms else groups[1]
        parts.append({"participant_id": f"sub-{sub}", "group": grp, "age": 30 + 3 * i + (i % 3),
                      "sex": "F" if i % 2 else "M"})
        u = rng.normal(0, 5)
        for t, ses in enumerate(sessions):
            if (sub, ses) in missing:
                continue
            drop = drop_label[2] if drop_label and drop_label[:2] == (sub, ses) else None
            means, r2 = {}, {}
            for s in STRUCTS:
                for h in ("left", "right"):
                    means[s, h] = BASE[s] + u + (8 if grp == groups[0] else 0) + 3 * t + rng.normal(0, 1)
                    r2[s, h] = 20.0 + 0.1 * BASE[s] + 0.5 * t + rng.normal(0, 0.5)
            df = roi_table(means, r2 if r2star else None, drop, struct_names)
            if flagged:
                bad = (sub, ses) in flagged
                metrics = {QC_METRIC: 0.2 if bad else 0.95}
                df = add_qc_columns(df, metrics, *assess(metrics))
            d = out / f"sub-{sub}" / f"ses-{ses}" / "anat"
            d.mkdir(parents=True)
            src = source_name(sub, ses)
            write_tsv(df, d / build_name(src, "stats", ".tsv", atlas="DGM", desc="dgm"))
            side = sidecar_for(sub, ses) if sidecar_for else sidecar
            if side is not None:
                desc = side.get("DipoleInversion", {}).get("Method", "qsm")
                (d / build_name(src, "Chimap", ".json", desc=desc)).write_text(json.dumps(side))
    parts += list(extra_participants)
    pd.DataFrame(parts).to_csv(bids / "participants.tsv", sep="\t", index=False)
    for p in parts:
        if (out / p["participant_id"]).exists():
            mark_complete(out, p["participant_id"])  # group level reads completed subjects only
    return bids, out


def svgs(html):
    """The SVG documents embedded as data URIs in an HTML page, decoded."""
    return [base64.b64decode(m).decode() for m in re.findall(r"data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)", html)]
