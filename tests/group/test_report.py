"""Group report (qsmprep.group.report): escaping, methods text from the real provenance, figures."""

import re

import pandas as pd
import pytest

from qsmprep.group import run_group
from tests._group_helpers import HOSTILE, real_sidecars, svgs, write_tree
from tests._paths import REPO_ROOT


@pytest.fixture(scope="module")
def sidecars(tmp_path_factory):
    """Chimap sidecars of the real QSM workflow (computed once per test session)."""
    return real_sidecars(tmp_path_factory.mktemp("qsm"))


def test_mixed_reference_settings_are_warned(tmp_path, sidecars):
    """Half of the sessions referenced with 'none' (real sidecars of both runs): the methods text
    names both and warns; with the old reader referencing was invisible and nothing warned."""
    def pick(sub, ses):
        return sidecars["none" if int(sub) % 2 else "mean"]

    bids, out = write_tree(tmp_path, sidecar_for=pick)
    res = run_group(bids, out, figures=False)
    html = res["report"].read_text()
    assert "whole_brain_mean" in html and "none [" in html
    assert re.search(r"cohort mixes different settings for [^<]*susceptibility referencing", html)


def test_hostile_labels_are_escaped_everywhere(tmp_path):
    """Group, structure and participants.tsv labels holding HTML: no raw tag in the page or in the
    SVG figures, the text still readable (escaped), and the LMM does not crash on it."""
    structs = (HOSTILE, "putamen", "a$b$ (x)", "thalamus")
    bids, out = write_tree(tmp_path, groups=(HOSTILE, "HC(a)"), struct_names=structs, n_ms=4, n_hc=4,
                            extra_participants=[{"participant_id": "sub-99" + HOSTILE, "group": "HC(a)"}])
    excl = tmp_path / "excl.tsv"
    excl.write_text(f"participant_id\tsession_id\treason\n03\tbaseline\t{HOSTILE}\n")
    res = run_group(bids, out, structures=(HOSTILE, "putamen", "a$b$ (x)"), exclude_file=excl)
    html = res["report"].read_text()
    assert "<img src=x" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    for svg in svgs(html):
        assert "<img" not in svg
    assert any("&lt;img src=x onerror=alert(1)&gt;" in svg for svg in svgs(html))
    lmm = pd.read_csv(res["lmm"], sep="\t")
    # 'HC(a)' crashed the formula before; levels are safe-coded and mapped back ('<' sorts first,
    # so the hostile label is the reference group)
    assert {"group[HC(a)]", "group[HC(a)]:time[ses-followup]"} <= set(lmm["term"])
    assert all(p.name.startswith("structure-") and "<" not in p.name for p in res["figures"])


def test_autoescape_is_never_disabled():
    root = REPO_ROOT / "qsmprep"
    needle = "autoescape" + "=False"  # spelled apart so this test file does not match itself
    offenders = [str(p) for p in root.rglob("*.py") if needle in p.read_text().replace(" ", "")]
    assert offenders == []


def test_reconstruction_quality_flags_are_listed(tmp_path, sidecars):
    """Contract 1: QualityFlags records of the Chimap sidecars appear in the report (escaped)."""
    def pick(sub, ses):
        side = dict(sidecars["mean"])
        if (sub, ses) == ("02", "followup"):
            side["QualityFlags"] = [{"step": "DipoleInversion", "severity": "warning",
                                     "message": f"stopped at the iteration cap {HOSTILE}"}]
        return side

    bids, out = write_tree(tmp_path, sidecar_for=pick)
    res = run_group(bids, out, figures=False)
    html = res["report"].read_text()
    assert "stopped at the iteration cap &lt;img" in html and "<img src=x" not in html
    assert re.search(r"<td>sub-02</td><td>ses-followup</td><td>DipoleInversion</td><td>warning</td>", html)
