"""Readers of the participant outputs (qsmprep.derivatives.readers) on trees written by the
real participant-level writers (tests/_group_helpers.py)."""

import json

import pandas as pd
import pytest

from qsmprep.derivatives.readers import (
    collect_provenance,
    find_stats_tables,
    parse_entities,
    participant_reports,
    read_stats_tables,
    read_tsv,
)
from qsmprep.errors import UsageError
from tests._group_helpers import real_sidecars, write_tree


@pytest.fixture(scope="module")
def sidecars(tmp_path_factory):
    """Chimap sidecars of the real QSM workflow (computed once per test session)."""
    return real_sidecars(tmp_path_factory.mktemp("qsm"))


def test_entities_and_discovery(tmp_path):
    """Fails if the reader cannot parse the names the participant level builds (build_name) or misses a
    ROI table of the tree."""
    ent = parse_entities("sub-01_ses-baseline_atlas-DGM_desc-dgm_stats.tsv")
    assert ent == {"sub": "01", "ses": "baseline", "atlas": "DGM"}
    bids, out = write_tree(tmp_path)
    found = find_stats_tables(out)
    assert len(found) == 17 and found[0][:3] == ("sub-01", "ses-baseline", "DGM")


def test_provenance_reads_the_keys_the_pipeline_writes(tmp_path, sidecars):
    """Fails if the reader looks for keys the pipeline does not write (the old fixture used
    ``Reference: {"Method": ...}`` and ``lambda``): referencing then vanished from the methods."""
    side = sidecars["mean"]
    bids, out = write_tree(tmp_path, sidecar=side)
    prov = collect_provenance(out)
    assert prov["n_files"] == 17
    assert list(prov["Reference"]) == ["whole_brain_mean"]  # measured value_ppm/n_voxels left out
    inv = side["DipoleInversion"]
    assert list(prov["DipoleInversion"])[0].startswith(inv["Method"] + " (")
    for key, val in inv["Parameters"].items():
        assert f"{key}={val}" in list(prov["DipoleInversion"])[0]
    # every step with a method is summarised by one setting (measured volumes differ per session)
    assert all(len(prov[k]) == 1 for k in ("BrainMask", "BackgroundFieldRemoval", "DipoleInversion"))
    assert "StoppedBy" not in list(prov["DipoleInversion"])[0]


def test_solver_outcome_is_not_a_setting(tmp_path, sidecars):
    """Sessions whose solver stopped differently (tolerance / iteration cap) with the same
    settings are one setting, not a cohort of mixed settings."""
    side = json.loads(json.dumps(sidecars["mean"]))
    bids, out = write_tree(tmp_path, sidecar=side)
    files = sorted(out.glob("sub-*/**/*_Chimap.json"))
    for i, f in enumerate(files):
        s = json.loads(f.read_text())
        s["DipoleInversion"]["StoppedBy"] = "tolerance" if i % 2 else "iteration cap"
        f.write_text(json.dumps(s))
    assert len(collect_provenance(out)["DipoleInversion"]) == 1


def test_read_stats_tables_equals_reading_each_file(tmp_path):
    """The batched reader (one parse per header) returns what reading each file returns."""
    bids, out = write_tree(tmp_path, flagged=(("03", "followup"),))
    extra = out / "sub-99" / "ses-x" / "anat"
    extra.mkdir(parents=True)
    (extra / "sub-99_ses-x_atlas-DGM_desc-dgm_stats.tsv").write_text(
        "index\tname\tstructure\themisphere\tmean_ppb\n1\tLeft_Caudate\tcaudate\tleft\tn/a\n")
    paths = [f[3] for f in find_stats_tables(out)]
    for path, got in zip(paths, read_stats_tables(paths)):
        pd.testing.assert_frame_equal(got, read_tsv(path), check_dtype=False)


def test_several_atlases_need_a_choice(tmp_path):
    """Fails if tables of two atlases are silently mixed (labels of different atlases would be
    averaged as one structure) or if ``atlas=`` does not select one of them."""
    bids, out = write_tree(tmp_path, missing=(), drop_label=None)
    first = sorted(out.glob("sub-01/ses-baseline/anat/*_stats.tsv"))[0]
    other = first.with_name(first.name.replace("atlas-DGM", "atlas-Other"))
    other.write_text(first.read_text())
    with pytest.raises(UsageError, match="several atlases") as exc:
        find_stats_tables(out)
    assert exc.value.exit_code == 64
    assert [f[3] for f in find_stats_tables(out, atlas="Other")] == [other]
    assert len(find_stats_tables(out, atlas="DGM")) == 18


def test_provenance_skips_template_space_copies_and_unselected_sessions(tmp_path, sidecars):
    """A ``_space-`` copy of a Chimap sidecar (``--output-spaces``) must not count twice, and a
    session left out of the analysis must not count at all; fails if either is counted."""
    bids, out = write_tree(tmp_path, sidecar=sidecars["mean"], missing=(), drop_label=None)
    chimap = sorted(out.glob("sub-01/ses-baseline/anat/*_Chimap.json"))[0]
    chimap.with_name(chimap.name.replace("_desc-", "_space-MNI152NLin2009cAsym_desc-")).write_text(chimap.read_text())
    assert collect_provenance(out)["n_files"] == 18
    assert collect_provenance(out, subjects={"sub-01", "sub-02"})["n_files"] == 4
    assert collect_provenance(out, sessions={("sub-01", "ses-baseline")})["n_files"] == 1


def test_participant_reports_are_linked_relative_to_the_group_folder(tmp_path):
    """Fails if a link is absolute (breaks when the output folder moves) or points to a missing page."""
    (tmp_path / "sub-01.html").write_text("<html></html>")
    got = participant_reports(tmp_path, ["sub-01", "sub-02"], tmp_path / "group")
    assert got == [{"participant_id": "sub-01", "href": "../sub-01.html"}, {"participant_id": "sub-02", "href": None}]


def test_stats_tables_stack_columns_and_row_tests(tmp_path):
    """``StatsTables`` (what the group level reads with): ``stack`` equals concatenating the
    tables (one header: rows taken from the parsed frame; several headers, a header-only or an
    empty file: the concatenation itself), ``columns``/``n_rows`` describe each table and
    ``any_row`` equals testing each table. Fails if the fast stack drops, reorders or retypes a
    row or column."""
    from qsmprep.group.inputs import session_flag

    bids, out = write_tree(tmp_path, flagged=(("03", "followup"), ("05", "baseline")))
    paths = [f[3] for f in find_stats_tables(out)]
    extra = out / "sub-99" / "ses-x" / "anat"
    extra.mkdir(parents=True)
    other = extra / "sub-99_ses-x_atlas-DGM_desc-dgm_stats.tsv"
    other.write_text("index\tname\tstructure\themisphere\tmean_ppb\n1\tLeft_Caudate\tcaudate\tleft\tn/a\n")
    head = extra / "sub-99_ses-y_atlas-DGM_desc-dgm_stats.tsv"
    head.write_text("index\tname\tstructure\themisphere\tmean_ppb\n")
    empty = extra / "sub-99_ses-z_atlas-DGM_desc-dgm_stats.tsv"
    empty.write_text("")
    tabs = read_stats_tables(paths + [other, head, empty])
    n = len(paths)
    assert len(tabs) == n + 3
    for pick in (list(range(n)), [0, 5, 2, 9, 9], [n - 1], list(range(n + 3)), [n, 1, n + 1], [n + 2, 0]):
        want = pd.concat([tabs[i] for i in pick], ignore_index=True)
        pd.testing.assert_frame_equal(tabs.stack(pick), want)
    for i in range(n + 3):
        assert tabs.columns(i) == list(tabs[i].columns) and tabs.n_rows(i) == len(tabs[i])
    flags = tabs.any_row("qc_flagged", lambda c: pd.to_numeric(c, errors="coerce") == 1)
    assert flags.tolist() == [session_flag(tabs[i])[0] for i in range(n + 3)] and flags.sum() == 2
    assert [type(t) for t in tabs[-3:]] == [pd.DataFrame] * 3 and len(tabs[-1].columns) == 0
