"""qsmprep.derivatives.spec: the output specification and what reads it."""

import re

import pytest

from qsmprep.derivatives import spec
from qsmprep.derivatives.names import parse_entities
from tests._paths import REPO_ROOT

DOC = (REPO_ROOT / "docs" / "outputs.md").read_text(encoding="utf-8")


def _doc_table():
    """``{(level, key): (pattern, when)}`` from the table in docs/outputs.md."""
    rows = {}
    for line in DOC.splitlines():
        m = re.match(r"^\| (\w+) \| `(\w+)` \| `([^`]+)` \| ([^|]+) \|", line)
        if m:
            rows[(m.group(1), m.group(2))] = (m.group(3), m.group(4).strip())
    return rows


def test_docs_table_matches_spec():
    """Fails when docs/outputs.md lists a derivative the specification lacks, misses one, or
    shows another name or condition for it."""
    want = {(d.level, d.key): (d.pattern(), d.when) for d in spec.ALL}
    assert _doc_table() == want


def test_dataset_files_documented():
    """Fails when a dataset-level file of the specification is missing from the docs' tree."""
    for name in spec.DATASET_FILES:
        assert name.replace("<atlas>", "DGM") in DOC


def test_keys_unique_per_level():
    """Sink node names are ``ds_<key>`` inside one workflow: two records with one key would clash."""
    seen = [(d.level if d.level != "xfm" else "session", d.key) for d in spec.ALL]
    assert len(seen) == len(set(seen))


@pytest.mark.parametrize("d", spec.ALL, ids=lambda d: f"{d.level}-{d.key}")
def test_record_entities_round_trip(d):
    """Fails when a record's entities do not survive naming (a value with ``_`` or ``-`` would
    make the name unparseable, e.g. an inversion label taken verbatim as ``tv_admm``)."""
    values = {"inversion": "tvadmm", "atlas": "DGM", "atlas_space": "MNI152NLin2009cAsym"}
    name = d.name("sub-01_ses-a_echo-1_part-phase_MEGRE.nii.gz", **values)
    ents = parse_entities(name)
    for k, v in d.fill(**values).items():
        assert ents[k] == v
    assert name.endswith(f"_{d.suffix}{d.extension}")


def test_session_records_follow_registration_path():
    """The transform records a session gets depend on its T1w and the subject's path."""
    keys = lambda **kw: [d.key for d in spec.session_records(**kw) if d.level == "xfm"]  # noqa: E731
    assert keys(has_t1w=True, longitudinal=True) == ["xfm_gre_to_t1w", "xfm_t1w_to_template"]
    assert keys(has_t1w=True, longitudinal=False) == ["xfm_gre_to_t1w", "xfm_atlas_to_t1w"]
    assert keys(has_t1w=False, longitudinal=True) == ["xfm_atlas_to_gre"]
    assert [d.key for d in spec.subject_records(longitudinal=False, change=False)] == []


def test_subject_sidecars_name_the_template_path():
    """The template's own path is its SpatialReference (the BIDS validator requires it for
    ``space-individual``); fails when the sidecar and the published path disagree."""
    template = spec.by_key("template")
    ref = template.path("sub-07_T1w.nii.gz")
    side = spec.sidecar(spec.by_key("labels_template"), template_ref=ref, atlas="DGM")
    assert side["SpatialReference"] == ref == "sub-07/anat/sub-07_space-individual_desc-template_T1w.nii.gz"
    assert side["Description"].startswith("DGM atlas labels")
