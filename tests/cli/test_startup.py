"""Start-up cost: the CLI parser is built from method names read without importing numerics."""

import importlib
import subprocess
import sys

import pytest

from qsmprep.cli.parser import METHOD_OPTIONS
from qsmprep.qsm import registry


@pytest.mark.parametrize("module", sorted(set(METHOD_OPTIONS.values())))
def test_registry_matches_the_modules(module):
    """The source-read names/default equal those of the imported module (fails when a module's
    ``METHODS`` changes in a way the reader misses)."""
    mod = importlib.import_module(f"qsmprep.qsm.{module}")
    choices, default = registry.method_choices(module)
    assert list(choices) == list(mod.METHODS)
    assert default == (getattr(mod, "DEFAULT", None) or list(mod.METHODS)[0])


def test_dynamic_registry_falls_back_to_the_import():
    """A ``METHODS`` changed after its literal cannot be read from source: reader says so."""
    src = "METHODS = {'a': 1}\nDEFAULT = 'a'\nMETHODS['b'] = 2\n"
    assert registry._literal_registry(src) == (None, None)
    src = "METHODS = {'a': 1}\nMETHODS.update(b=2)\n"
    assert registry._literal_registry(src) == (None, None)
    assert registry._literal_registry("METHODS = {'x': f, 'y': g}\nDEFAULT = 'y'\n") == (
        ["x", "y"], "y")


def test_help_imports_no_numerics():
    """``qsmprep --help`` must not import numba/scipy/nipype (they cost seconds at start-up)."""
    code = ("import sys\nfrom qsmprep.cli.parser import get_parser\nget_parser().format_help()\n"
            "print(','.join(m for m in ('numba', 'scipy', 'nipype', 'pandas', 'numpy') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
