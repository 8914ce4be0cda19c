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


def test_group_level_never_imports_nipype(tmp_path):
    """``qsmprep BIDS OUT group`` runs without importing Nipype (its import was start-up cost of
    every group run, issue 14), and still writes the group tables and its log file.

    Fails if ``setup_logging`` imports Nipype for the group level, or if anything on the group
    path does: Nipype would then install its own stdout handler after qsmprep's logging set-up
    (messages printed twice)."""
    from tests._group_helpers import write_tree

    bids, out = write_tree(tmp_path, n_ms=3, n_hc=3)
    code = ("import sys\nfrom qsmprep.cli.run import run\n"
            f"code = run([{str(bids)!r}, {str(out)!r}, 'group', '-w', {str(tmp_path / 'work')!r}])\n"
            "print('nipype' in sys.modules)\nsys.exit(code)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == "False"
    assert (out / "group" / "lmm.tsv").exists() and list((out / "logs").glob("qsmprep_*.log"))
