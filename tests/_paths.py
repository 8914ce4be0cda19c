"""Paths the tests share: the repository root and the read-only real data next to it.

``SHARED_DATA`` is ``../shared/data`` from the repository root; the ``QSMPREP_SHARED_DATA``
environment variable overrides it (CI machines that keep the data elsewhere). Tests import
these instead of counting ``Path(__file__).parents``, so a test module can move between the
folders of ``tests/`` (which mirror the package) without changing.
"""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("QSMPREP_SHARED_DATA") or REPO_ROOT.parent / "shared" / "data")
