"""Tiny BIDS datasets for the input-layer tests (``tests/bids/``, ``tests/derivatives/``)."""

import json
from pathlib import Path

import nibabel as nb
import numpy as np

from qsmprep.bids.layout import build_layout


AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])

def nii(path: Path, shape=(4, 4, 4), affine=AFFINE, dtype=np.float32):
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(0).random(shape).astype(dtype)
    nb.Nifti1Image(data, affine).to_filename(str(path))

def write_json(path: Path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))

def make_dataset(root: Path, subjects=("01",), sessions=("baseline",), echoes=(1, 2, 3),
                 tes=None, b0=3.0, t1w=True, parts=("mag", "phase"), inherit=False,
                 units="rad", string_numbers=False):
    """Tiny BIDS MEGRE dataset (4x4x4 voxels). Returns the root."""
    write_json(root / "dataset_description.json", {"Name": "tiny", "BIDSVersion": "1.10.0"})
    (root / "participants.tsv").write_text(
        "participant_id\tgroup\n" + "".join(f"sub-{s}\tHC\n" for s in subjects))
    tes = tes or {e: 0.004 * e for e in echoes}
    if inherit:
        write_json(root / "MEGRE.json", {"MagneticFieldStrength": b0})
    for sub in subjects:
        for ses in sessions:
            sdir = f"sub-{sub}" + (f"/ses-{ses}" if ses else "")
            stem = f"sub-{sub}" + (f"_ses-{ses}" if ses else "")
            anat = root / sdir / "anat"
            if t1w:
                nii(anat / f"{stem}_T1w.nii.gz")
            for e in echoes:
                for part in parts:
                    base = anat / f"{stem}_echo-{e}_part-{part}_MEGRE"
                    nii(base.with_name(base.name + ".nii.gz"))
                    te = str(tes[e]) if string_numbers else tes[e]
                    meta = {"EchoTime": te}
                    if not inherit and b0 is not None:
                        meta["MagneticFieldStrength"] = str(b0) if string_numbers else b0
                    if part == "phase" and units is not None:
                        meta["Units"] = units
                    write_json(base.with_name(base.name + ".json"), meta)
    return root

def layout_of(root, **kw):
    kw.setdefault("validate", False)
    return build_layout(root, **kw)

def make_ds000221_like(root: Path, subject="010002", session="01"):
    """Single-echo GRE named like OpenNeuro ds000221 (acq-mag_GRE / acq-phase_GRE)."""
    write_json(root / "dataset_description.json", {"Name": "LEMON-like", "BIDSVersion": "1.0.2"})
    anat = root / f"sub-{subject}/ses-{session}/anat"
    stem = f"sub-{subject}_ses-{session}"
    for acq in ("mag", "phase"):
        nii(anat / f"{stem}_acq-{acq}_GRE.nii.gz", dtype=np.int16 if acq == "phase" else np.float32)
        write_json(anat / f"{stem}_acq-{acq}_GRE.json",
              {"EchoTime": 0.0249, "MagneticFieldStrength": 3, "RepetitionTime": 0.0345,
               "Manufacturer": "Siemens", "FlipAngle": 12})
    nii(anat / f"{stem}_acq-mp2rage_T1w.nii.gz")
    return root

DS221_FILTERS = {"megre": {"suffix": "GRE", "mag": {"acquisition": "mag"},
                           "phase": {"acquisition": "phase"}}}
