"""Start-up cost: the CLI parser is built from the method registry without importing numerics."""

import subprocess
import sys


def test_help_imports_no_numerics():
    """``qsmprep --help`` must not import numba/scipy/nipype (they cost seconds at start-up).

    Fails when the method registry (``qsmprep.qsm.methods``), the configuration or the parser
    imports a numerical module, e.g. a record holding a function object instead of its
    ``"module:function"`` string."""
    code = ("import sys\nfrom qsmprep.cli.parser import get_parser\nget_parser().format_help()\n"
            "print(','.join(m for m in ('numba', 'scipy', 'nipype', 'pandas', 'numpy') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_help_lists_every_method_with_its_summary():
    """The ``--help`` text of each step lists every registered method and its one-line summary
    (fails if the parser stops reading the records)."""
    from qsmprep.cli.parser import get_parser
    from qsmprep.qsm import methods

    text = "".join(get_parser().format_help().split())  # argparse re-wraps lines (at hyphens too)
    for m in methods.REGISTRY:
        if m.step in methods.CLI_STEPS:
            assert "".join(f"{m.name}: {m.summary}".split()) in text, m.name
