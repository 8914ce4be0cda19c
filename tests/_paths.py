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


def load_script(relpath):
    """Import a repository script that is not part of a package (``scripts/``, ``workflows/``).

    Parameters
    ----------
    relpath : str
        Path of the ``.py`` file relative to :data:`REPO_ROOT`.

    Returns
    -------
    module
        The executed module, named after the file (not added to ``sys.modules``, and
        ``sys.path`` is left alone).

    Example
    -------
    >>> verify = load_script("workflows/ci/verify_checksums.py")  # doctest: +SKIP
    """
    import importlib.util

    path = REPO_ROOT / relpath
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
