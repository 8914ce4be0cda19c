"""Write a simulated longitudinal cohort as a BIDS dataset with its ground truth.

Layout (``sub-01`` shown; sessions ``baseline``, ``followup``)::

    OUT/dataset_description.json  README  participants.tsv/.json
    OUT/sub-01/sub-01_sessions.tsv
    OUT/sub-01/ses-baseline/anat/sub-01_ses-baseline_T1w.nii.gz (+ .json)
    OUT/sub-01/ses-baseline/anat/sub-01_ses-baseline_echo-1_part-mag_MEGRE.nii.gz (+ .json)
    OUT/sub-01/ses-baseline/anat/sub-01_ses-baseline_echo-1_part-phase_MEGRE.nii.gz (+ .json)
    OUT/derivatives/qsmprep-truth/dataset_description.json  README.md  planted.tsv  simulation.json
    OUT/derivatives/qsmprep-truth/sub-01/sub-01_desc-truth_xfm.json      (anatomy warp parameters)
    OUT/derivatives/qsmprep-truth/sub-01/sub-01_desc-truthwarp_xfm.nii.gz (displacement grid, mm)
    OUT/derivatives/qsmprep-truth/sub-01/ses-baseline/anat/
        sub-01_ses-baseline_desc-truth_Chimap.nii.gz      (ppm, brain only, GRE grid)
        sub-01_ses-baseline_desc-truthhead_Chimap.nii.gz  (ppm, whole head + air, GRE grid)
        sub-01_ses-baseline_desc-truth_dseg.nii.gz        (atlas labels, GRE grid)
        sub-01_ses-baseline_desc-truth_mask.nii.gz        (brain, GRE grid)
        sub-01_ses-baseline_space-T1w_desc-truth_dseg.nii.gz / _mask.nii.gz
        sub-01_ses-baseline_desc-truth_stats.tsv          (per-label truth, ppb)
        sub-01_ses-baseline_desc-truth_motion.json        (rigid head position)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from .. import __version__
from ..roi import COLUMNS as ROI_COLUMNS
from ..roi import roi_sidecar
from . import config as C
from .core import make_protocol, make_subject, roi_table, simulate_session
from .phantom import build_head_model

BIDS_VERSION = "1.10.0"
TRUTH = Path("derivatives") / "qsmprep-truth"

#: What the truth table's columns mean where it differs from a measured ROI table; the columns
#: themselves are :data:`qsmprep.roi.COLUMNS` (:func:`truth_stats_sidecar`).
TRUTH_DESCRIPTIONS = {
    "index": {"Description": "Atlas label index"},
    "name": {"Description": "Atlas label name"},
    "structure": {"Description": "Structure (both hemispheres)"},
    "hemisphere": {"Description": "left, right or bilateral"},
    "mean_ppb": {"Description": "Mean true susceptibility in the label (GRE grid), "
                 "relative to water", "Units": "ppb"},
    "median_ppb": {"Description": "Median true susceptibility", "Units": "ppb"},
    "sd_ppb": {"Description": "Standard deviation within the label", "Units": "ppb"},
    "n_voxels": {"Description": "Voxels of the label on the GRE grid"},
    "volume_mm3": {"Description": "Label volume", "Units": "mm^3"},
}


def assign_groups(n_subjects: int, n_ms: int | None = None) -> list[str]:
    """Groups for subjects 1..n: HC and MS interleaved (HC first) until the HC run out.

    Default ``n_ms``: three quarters of the cohort (the seed study's 120 MS : 40 HC), at least one
    HC when there are two subjects or more.

    Parameters
    ----------
    n_subjects : int
        Cohort size.
    n_ms : int, optional
        Number of MS subjects.

    Returns
    -------
    list of str
        ``"HC"`` or ``"MS"`` for subjects 1..n.

    Raises
    ------
    ValueError
        When ``n_ms`` is not between 0 and ``n_subjects``.

    Examples
    --------
    >>> assign_groups(4)
    ['HC', 'MS', 'MS', 'MS']
    """
    if n_ms is None:
        n_ms = 0 if n_subjects < 2 else min(n_subjects - 1, max(1, round(0.75 * n_subjects)))
    if not 0 <= n_ms <= n_subjects:
        raise ValueError(f"n_ms={n_ms} must lie between 0 and n_subjects={n_subjects}.")
    n_hc = n_subjects - n_ms
    out, hc, ms = [], n_hc, n_ms
    while hc or ms:
        if hc:
            out.append("HC")
            hc -= 1
        if ms:
            out.append("MS")
            ms -= 1
    return out


def _save(arr, affine, path: Path, dtype=None):
    arr = np.asarray(arr if dtype is None else arr.astype(dtype))
    img = nib.Nifti1Image(arr, affine)
    img.set_qform(affine, 1)
    img.set_sform(affine, 1)
    img.header.set_xyzt_units("mm", "sec")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.to_filename(path)


def _json(obj, path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=_jsonable) + "\n")


def _jsonable(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, (set, tuple)):
        return list(o)
    raise TypeError(type(o))


def phase_to_integer(phase: np.ndarray) -> np.ndarray:
    """Radians in [-pi, pi) -> int16 in -4096..4095 (Siemens-style 'arbitrary' units).

    Parameters
    ----------
    phase : ndarray
        Wrapped phase (rad).

    Returns
    -------
    ndarray of int16

    Examples
    --------
    >>> phase_to_integer(np.array([-np.pi, 0.0, np.pi / 2])).tolist()
    [-4096, 0, 2048]
    """
    return np.clip(np.rint(phase / np.pi * 4096.0), -4096, 4095).astype(np.int16)


def write_session(root: Path, sub: str, ses: str, data, config: C.SimulationConfig):
    """Write raw images, sidecars and the truth of one session.

    Parameters
    ----------
    root : pathlib.Path
        BIDS root.
    sub, ses : str
        Labels without ``sub-``/``ses-``.
    data : SessionData
        From :func:`~qsmprep.simulate.core.simulate_session`.
    config : SimulationConfig
        Field strength, echo times, phase format.

    Returns
    -------
    pandas.DataFrame
        The truth ROI table written to ``*_desc-truth_stats.tsv``
        (:func:`~qsmprep.simulate.core.roi_table`).
    """
    anat = root / f"sub-{sub}" / f"ses-{ses}" / "anat"
    base = f"sub-{sub}_ses-{ses}"
    _save(data.t1w, data.t1w_affine, anat / f"{base}_T1w.nii.gz", np.float32)
    _json({"Modality": "MR", "MagneticFieldStrength": config.b0, "MRAcquisitionType": "3D",
           "RepetitionTime": 2.3, "InversionTime": 0.9, "FlipAngle": 9,
           "Manufacturer": "qsmprep-simulate"}, anat / f"{base}_T1w.json")
    common = {"Modality": "MR", "MagneticFieldStrength": config.b0, "MRAcquisitionType": "3D",
              "RepetitionTime": float(max(config.echo_times)) + 0.006, "FlipAngle": 15,
              "Manufacturer": "qsmprep-simulate", "ImageType": ["ORIGINAL", "PRIMARY"]}
    for e, te in enumerate(data.tes, start=1):
        ename = f"{base}_echo-{e}"
        _save(data.mag[..., e - 1], data.affine, anat / f"{ename}_part-mag_MEGRE.nii.gz",
              np.float32)
        _json({**common, "EchoTime": float(te), "EchoNumber": e},
              anat / f"{ename}_part-mag_MEGRE.json")
        if config.integer_phase:
            _save(phase_to_integer(data.phase[..., e - 1]), data.affine,
                  anat / f"{ename}_part-phase_MEGRE.nii.gz")
            units = "arbitrary"
        else:
            _save(data.phase[..., e - 1], data.affine, anat / f"{ename}_part-phase_MEGRE.nii.gz",
                  np.float32)
            units = "rad"
        _json({**common, "EchoTime": float(te), "EchoNumber": e, "Units": units},
              anat / f"{ename}_part-phase_MEGRE.json")

    tdir = root / TRUTH / f"sub-{sub}" / f"ses-{ses}" / "anat"
    src = [f"bids:raw:sub-{sub}/ses-{ses}/anat/{base}_echo-1_part-phase_MEGRE.nii.gz"]
    _save(data.chi, data.affine, tdir / f"{base}_desc-truth_Chimap.nii.gz", np.float32)
    _json({"Units": "ppm", "Description": "True susceptibility inside the brain relative to "
           "water (CSF = 0); 0 outside the brain. Same grid as the MEGRE images.",
           "Sources": src, "SkullStripped": True}, tdir / f"{base}_desc-truth_Chimap.json")
    _save(data.chi_head, data.affine, tdir / f"{base}_desc-truthhead_Chimap.nii.gz", np.float32)
    _json({"Units": "ppm", "AirSusceptibility": config.chi_ppm["air"],
           "Description": "Susceptibility of the whole field of view relative to water (air, "
           "sinus, skull, scalp included). The simulated total field is "
           "forward_field(chi - AirSusceptibility, voxel_size, b0_dir, pad=PaddingVoxels).",
           "PaddingVoxels": data.pad_vox, "B0Direction": data.b0_dir.tolist(),
           "MagneticFieldStrength": data.b0, "Sources": src},
          tdir / f"{base}_desc-truthhead_Chimap.json")
    _save(data.labels, data.affine, tdir / f"{base}_desc-truth_dseg.nii.gz", np.int16)
    _save(data.brain_mask, data.affine, tdir / f"{base}_desc-truth_mask.nii.gz", np.uint8)
    _save(data.t1w_labels, data.t1w_affine, tdir / f"{base}_space-T1w_desc-truth_dseg.nii.gz",
          np.int16)
    _save(data.t1w_brain_mask, data.t1w_affine,
          tdir / f"{base}_space-T1w_desc-truth_mask.nii.gz", np.uint8)
    stats = roi_table(data.chi, data.labels, data.label_table, data.voxel_size)
    stats.to_csv(tdir / f"{base}_desc-truth_stats.tsv", sep="\t", index=False, na_rep="n/a",
                 float_format="%.4f")
    _json(truth_stats_sidecar(), tdir / f"{base}_desc-truth_stats.json")
    _json({**data.motion.to_dict(),
           "Description": "Rigid head position of this session: w = c + R (p - c) + t maps the "
           "subject head frame p to scanner world w (mm); head_to_scanner is that 4x4 matrix.",
           "GREAffine": data.affine.tolist(), "T1wAffine": data.t1w_affine.tolist(),
           "HeadTouchesFOV": data.info["head_touches_fov"]},
          tdir / f"{base}_desc-truth_motion.json")
    return stats


def truth_stats_sidecar() -> dict:
    """Data dictionary of ``*_desc-truth_stats.tsv``.

    One entry per column of :data:`qsmprep.roi.COLUMNS`, in that order: the truth wording of
    :data:`TRUTH_DESCRIPTIONS` where there is one, else the entry of
    :func:`qsmprep.roi.roi_sidecar`; a column added to the ROI table contract therefore
    appears here without an edit.

    Returns
    -------
    dict
        Column name -> ``{"Description": ..., "Units": ...}``.
    """
    measured = roi_sidecar(masked=False)
    return {col: TRUTH_DESCRIPTIONS.get(col, measured[col]) for col in ROI_COLUMNS}


def _write_subject_truth(root: Path, sub: str, subject):
    sdir = root / TRUTH / f"sub-{sub}"
    w = subject.warp
    _save(w.disp, w.disp_affine, sdir / f"sub-{sub}_desc-truthwarp_xfm.nii.gz", np.float32)
    _json({**w.to_dict(), "Description": "Anatomy transform q = c + L (p - c) + u(p) from the "
           "subject head frame p to template (atlas) world q, mm. u is trilinearly interpolated "
           "from the displacement grid in sub-<label>_desc-truthwarp_xfm.nii.gz (last axis x, y, "
           "z; its affine maps grid indices to p).", "Group": subject.group,
           "RandomEffectsPpb": subject.random_effects_ppb},
          sdir / f"sub-{sub}_desc-truth_xfm.json")


def _dataset_files(root: Path, seed, preset, config, n_subjects, n_sessions):
    _json({"Name": f"qsmprep simulated longitudinal cohort (seed {seed}, preset {preset})",
           "BIDSVersion": BIDS_VERSION, "DatasetType": "raw", "License": "CC0",
           "Authors": ["qsmprep-simulate"],
           "GeneratedBy": [{"Name": "qsmprep-simulate", "Version": __version__}]},
          root / "dataset_description.json")
    (root / "README").write_text(
        "Simulated multi-echo GRE + T1w longitudinal cohort written by qsmprep-simulate "
        f"(qsmprep {__version__}), seed {seed}, preset '{preset}', {n_subjects} subjects x "
        f"{n_sessions} sessions. Ground truth in derivatives/qsmprep-truth/.\n")
    _json({"participant_id": {"Description": "Participant label"},
           "group": {"Description": "Diagnostic group", "Levels": {
               "HC": "healthy control", "MS": "multiple sclerosis"}},
           "age": {"Description": "Age at baseline", "Units": "year"},
           "sex": {"Description": "Sex", "Levels": {"F": "female", "M": "male"}}},
          root / "participants.json")
    troot = root / TRUTH
    _json({"Name": "qsmprep-simulate ground truth", "BIDSVersion": BIDS_VERSION,
           "DatasetType": "derivative",
           "GeneratedBy": [{"Name": "qsmprep-simulate", "Version": __version__}],
           "DatasetLinks": {"raw": "../../"}}, troot / "dataset_description.json")
    _json({"seed": seed, "preset": preset, "n_subjects": n_subjects, "n_sessions": n_sessions,
           "config": config.to_dict()}, troot / "simulation.json")
    (troot / "README.md").write_text(
        "Ground truth of the simulated cohort. `planted.tsv`: susceptibility assigned to each "
        "structure per participant and session (ppb, before the smooth texture). "
        "`*_desc-truth_stats.tsv`: measured truth per atlas label on the GRE grid (ppb). "
        "`*_desc-truth_Chimap`: ppm relative to water inside the brain. Transforms: see the "
        "Description fields of `*_desc-truth_xfm.json` and `*_desc-truth_motion.json`.\n")


def simulate_cohort(out_dir, n_subjects: int = 2, n_sessions: int = 2, preset: str = "small",
                    seed: int = 0, config: C.SimulationConfig | None = None,
                    n_ms: int | None = None, atlas_dir=None, overwrite: bool = False,
                    integer_phase: bool | None = None, oblique: bool | None = None) -> Path:
    """Simulate ``n_subjects`` x ``n_sessions`` into a BIDS dataset at ``out_dir``.

    Parameters
    ----------
    out_dir : path
        BIDS root to write (empty or absent unless ``overwrite``).
    n_subjects, n_sessions : int, default 2
        Cohort size.
    preset : {"small", "1mm", "1mm-aniso"}, default "small"
        Acquisition geometry (:data:`~qsmprep.simulate.config.PRESETS`).
    seed : int, default 0
        Cohort seed (subject k is the same whatever ``n_subjects``).
    config : SimulationConfig, optional
        Settings and planted effects.
    n_ms : int, optional
        Number of MS subjects (:func:`assign_groups`).
    atlas_dir : path, optional
        Atlas of the head model (default atlas when ``None``).
    overwrite : bool, default False
        Replace a non-empty ``out_dir``.
    integer_phase, oblique : bool, optional
        Override the config (oblique: 15 degree tilt about x).

    Returns
    -------
    pathlib.Path
        ``out_dir``.

    Raises
    ------
    ValueError
        Unknown preset or sizes below 1.
    FileExistsError
        ``out_dir`` is not empty and ``overwrite`` is false.
    """
    config = config or C.SimulationConfig()
    if integer_phase is not None:
        config = config.with_(integer_phase=bool(integer_phase))
    if oblique is not None:
        config = config.with_(oblique_deg=15.0 if oblique else 0.0)
    if preset not in C.PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; choose from {sorted(C.PRESETS)}.")
    if n_subjects < 1 or n_sessions < 1:
        raise ValueError("n_subjects and n_sessions must be >= 1.")
    root = Path(out_dir)
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{root} exists and is not empty (use overwrite=True).")
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    pre = C.PRESETS[preset]
    model = build_head_model(pre.model_mm, atlas_dir=atlas_dir, sinus=config.sinus)
    protocol = make_protocol(model, pre, config)
    groups = assign_groups(n_subjects, n_ms)
    sessions = C.session_names(n_sessions)
    width = max(2, len(str(n_subjects)))
    parts, planted = [], []
    _dataset_files(root, seed, preset, config, n_subjects, n_sessions)
    for i, grp in enumerate(groups, start=1):
        sub = f"{i:0{width}d}"
        subject = make_subject(i, grp, seed, config, model)
        parts.append({"participant_id": f"sub-{sub}", "group": grp, "age": subject.age,
                      "sex": subject.sex})
        _write_subject_truth(root, sub, subject)
        srows = []
        for s, ses in enumerate(sessions):
            data = simulate_session(subject, s, preset=pre, seed=seed, config=config,
                                    model=model, protocol=protocol)
            write_session(root, sub, ses, data, config)
            for st, v in data.planted_ppm.items():
                planted.append({"participant_id": f"sub-{sub}", "session_id": f"ses-{ses}",
                                "group": grp, "structure": st, "chi_ppb": round(v * 1000, 4)})
            srows.append({"session_id": f"ses-{ses}", "years_since_baseline": 2.0 * s})
            del data
        pd.DataFrame(srows).to_csv(root / f"sub-{sub}" / f"sub-{sub}_sessions.tsv", sep="\t",
                                   index=False)
    pd.DataFrame(parts).to_csv(root / "participants.tsv", sep="\t", index=False)
    pd.DataFrame(planted).to_csv(root / TRUTH / "planted.tsv", sep="\t", index=False)
    _json({"participant_id": {"Description": "Participant label"},
           "session_id": {"Description": "Session label"},
           "group": {"Description": "Diagnostic group"},
           "structure": {"Description": "Atlas structure (both hemispheres share the value)"},
           "chi_ppb": {"Description": "Planted susceptibility before the smooth texture",
                       "Units": "ppb"}}, root / TRUTH / "planted.json")
    return root
