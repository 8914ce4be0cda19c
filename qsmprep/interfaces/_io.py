"""Small NIfTI I/O helpers shared by the thin interfaces (no algorithm code here)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nb
import numpy as np


def load(fname, dtype=np.float32):
    """Return ``(array, image)`` with the array cast to ``dtype`` (NaNs kept)."""
    img = nb.load(str(fname))
    return np.asarray(img.dataobj, dtype=dtype), img


def load_mask(fname):
    img = nb.load(str(fname))
    return np.asarray(img.dataobj) > 0, img


def save(arr, ref_img, fname, dtype=np.float32):
    """Save ``arr`` with the geometry of ``ref_img`` (no scaling) and return the absolute path."""
    arr = np.asarray(arr)
    if arr.dtype == bool:
        dtype = np.uint8
    hdr = ref_img.header.copy()
    hdr.set_data_dtype(dtype)
    out = nb.Nifti1Image(arr.astype(dtype), ref_img.affine, hdr)
    out.header.set_slope_inter(1.0, 0.0)
    if arr.ndim == 3:
        out.header.set_data_shape(arr.shape)
    fname = os.path.abspath(str(fname))
    out.to_filename(fname)
    return fname


def write_json(obj, fname):
    fname = os.path.abspath(str(fname))
    Path(fname).write_text(json.dumps(obj, indent=2, sort_keys=True, default=_default))
    return fname


def _default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")
