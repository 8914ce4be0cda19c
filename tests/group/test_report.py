"""Group report (qsmprep.group.report): escaping, methods text from the real provenance, figures."""

import re

import numpy as np
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
    """Fails if any module turns Jinja2 autoescaping off (every label in the report would then be
    injected as raw HTML)."""
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


_SVG = "{http://www.w3.org/2000/svg}"
_XLINK = "{http://www.w3.org/1999/xlink}href"


def _plotted(svg_text):
    """Points of each scatter collection of a Matplotlib SVG, in data units (pixel heights mapped
    through the labelled y ticks), and every text of the figure."""
    import xml.etree.ElementTree as ET

    root = ET.fromstring(svg_text)
    groups = {g.get("id"): g for g in root.iter(f"{_SVG}g") if g.get("id")}
    ticks = []
    for gid, g in groups.items():
        if gid.startswith("ytick_"):
            mark, text = next(g.iter(f"{_SVG}use")), next(g.iter(f"{_SVG}text"), None)
            if text is not None:  # panels sharing the y axis carry no tick labels
                label = "".join(text.itertext()).replace("\u2212", "-")
                ticks.append((float(mark.get("y")), float(label)))
    ys, vals = np.array(ticks).T
    slope, icpt = np.polyfit(ys, vals, 1)
    points = [sorted(slope * float(u.get("y")) + icpt for u in g.iter(f"{_SVG}use"))
              for gid, g in sorted(groups.items(), key=lambda kv: int(kv[0].split("_")[-1]) if kv[0].startswith("PathCollection_") else 0)
              if gid.startswith("PathCollection_")]
    texts = ["".join(t.itertext()) for t in root.iter(f"{_SVG}text")]
    return points, texts


def test_boxplot_figure_shows_every_value_at_its_height(tmp_path):
    """Parse the box/strip SVG: one point per participant and session, at the height of its
    chi_ppb (read back through the y-axis ticks), in the collection of its group and session,
    with the group and session labels.  Fails if a participant is dropped from the figure, a
    value is plotted at the wrong height or in the wrong cell, or a label is missing (which a
    "file is large and contains <svg" check cannot see)."""
    bids, out = write_tree(tmp_path, n_ms=4, n_hc=3)
    res = run_group(bids, out, structures=("caudate", "thalamus"))
    table = pd.read_csv(res["dgm_analysis"], sep="\t", na_values="n/a")
    groups = ["HC", "MS"]  # control-like label first
    sessions = ["ses-baseline", "ses-followup"]
    for struct in ("caudate", "thalamus"):
        fig = next(p for p in res["figures"] if p.name.endswith(f"{struct}_boxplot.svg"))
        points, texts = _plotted(fig.read_text())
        sub = table[table["structure"] == struct]
        cells = [sorted(sub.loc[(sub["group"] == g) & (sub["session_id"] == s), "chi_ppb"].dropna())
                 for g in groups for s in sessions]
        cells = [c for c in cells if c]
        assert len(points) == len(cells), struct
        for got, want in zip(points, cells):
            np.testing.assert_allclose(got, want, atol=0.05)
        assert {"HC", "MS", "baseline", "followup", f"{struct}: group x session"} <= set(texts)
    # thalamus: sub-02 has no left thalamus at baseline -> no bilateral value, one point fewer
    n_thal = sum(len(p) for p in _plotted(next(p for p in res["figures"] if "thalamus_boxplot" in p.name).read_text())[0])
    assert n_thal == int(table.loc[table["structure"] == "thalamus", "chi_ppb"].notna().sum()) == 12


def test_spaghetti_figure_titles_count_each_group(tmp_path):
    """The spaghetti panels are titled ``<group> (n=<participants>)``; fails if a panel is
    missing or counts the wrong participants."""
    bids, out = write_tree(tmp_path, n_ms=4, n_hc=3)
    res = run_group(bids, out, structures=("caudate",))
    fig = next(p for p in res["figures"] if p.name.endswith("caudate_spaghetti.svg"))
    texts = _plotted(fig.read_text())[1]
    assert {"HC (n=3)", "MS (n=4)", "caudate: individual change"} <= set(texts)
