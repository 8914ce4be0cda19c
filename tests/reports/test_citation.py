"""logs/CITATION.md and CITATION.bib cite every method and tool that ran."""

import importlib
import itertools
import re

import pytest

from qsmprep.atlas import validate_atlas_dir
from qsmprep.qsm import methods
from qsmprep.qsm.pipeline import QSMOptions
from qsmprep.reports import citation as C

REGISTRIES = {step: importlib.import_module(f"qsmprep.qsm.{methods.STEP_MODULES[step]}")
              for step in methods.CLI_STEPS}


def test_every_reference_key_exists():
    """A method record (or tool/atlas entry) citing a key missing from REFERENCES fails here;
    every command-line step's record is in the methods text's table."""
    for m in methods.REGISTRY:
        if m.step in methods.CLI_STEPS:
            assert C.METHOD_REFERENCES[(m.step, m.name)] == list(m.references), m.name
    for keys in list(C.METHOD_REFERENCES.values()) + list(C.TOOL_REFERENCES.values()) + list(
            C.ATLAS_REFERENCES.values()):
        for k in keys:
            assert k in C.REFERENCES, k


def test_reference_years_match_the_method_docstrings():
    """The records and the step modules' docstrings name the same papers (first author, year)."""
    import inspect

    for (step, name), keys in C.METHOD_REFERENCES.items():
        doc = inspect.getsource(REGISTRIES[step])
        for k in keys:
            _, f = C.REFERENCES[k]
            first = re.sub(r"[{}\\']", "", f["author"].split(",")[0])
            if first.startswith("QSM Consensus"):
                continue
            assert first.split()[-1] in doc.replace("\u00e1", "a") and f["year"] in doc, (name, k)


@pytest.fixture(scope="module")
def default_atlas(tmp_path_factory):
    from qsmprep.atlas import build_dgm_atlas

    return validate_atlas_dir(build_dgm_atlas(tmp_path_factory.mktemp("a") / "atlas-DGM"))


@pytest.mark.parametrize("inv,bg,uw,ref", list(itertools.islice(itertools.product(
    methods.names("inversion"), methods.names("bf_removal"), methods.names("unwrapping"),
    methods.names("reference")), 0, None, 7)))
def test_every_selected_reference_appears(tmp_path, default_atlas, inv, bg, uw, ref):
    opts = QSMOptions(inversion=inv, bf_removal=bg, unwrapping=uw, reference=ref)
    md_path, bib_path = C.write_citation(tmp_path, opts, default_atlas)
    md, bib = md_path.read_text(), bib_path.read_text()
    expected = set(C.REFERENCES) & {k for step in REGISTRIES
                                    for k in C.METHOD_REFERENCES[(step, getattr(opts, step))]}
    expected |= {"qsmconsensus2024", "avants2008syn", "tustison2021antsx", "gorgolewski2011nipype",
                 "fonov2011icbm",
                 "pauli2018cit168", "najdenovska2018thalamus"}
    for k in expected:
        _, f = C.REFERENCES[k]
        assert f"@article{{{k}," in bib, k
        assert f["doi"] in md, k
    # nothing cited that did not run: exactly the expected BibTeX keys
    assert set(re.findall(r"@article\{([^,]+),", bib)) == expected
    for step in REGISTRIES:
        assert f"`{getattr(opts, step)}`" in md


def test_user_atlas_cited_from_its_description(tmp_path, default_atlas):
    import json
    import shutil

    user = tmp_path / "myatlas"
    shutil.copytree(default_atlas.directory, user)
    desc = {"Name": "my atlas", "Sources": [{"Name": "X", "Citation": "Doe J. My <atlas>. 2020."}]}
    (user / "dataset_description.json").write_text(json.dumps(desc))
    md_path, bib_path = C.write_citation(tmp_path / "out", QSMOptions(), validate_atlas_dir(user))
    assert "Doe J. My <atlas>. 2020." in md_path.read_text()
    assert "pauli2018cit168" not in bib_path.read_text()
    assert "note = {Doe J. My <atlas>. 2020.}" in bib_path.read_text()


def test_write_citation_still_importable_from_cli_run():
    from qsmprep.cli.run import write_citation

    assert write_citation is C.write_citation


def test_auto_background_removal_is_explained_in_the_methods_text(tmp_path, default_atlas):
    """``auto`` alone tells a reader nothing: the methods text states the voxel-size rule."""
    md_path, _ = C.write_citation(tmp_path, QSMOptions(bf_removal="auto"), default_atlas)
    line = next(ln for ln in md_path.read_text().splitlines()
                if ln.startswith("- background field removal"))
    assert "`auto` (PDF at voxels up to 2.5 mm, V-SHARP for coarser voxels" in line
    md_path, _ = C.write_citation(tmp_path, QSMOptions(bf_removal="pdf"), default_atlas)
    assert "- background field removal: `pdf` [" in md_path.read_text()


def test_l1_data_fidelity_cites_l1_qsm():
    """The L1 data term of MEDI/TV-ADMM (method option data_fidelity='l1') adds its paper."""
    plain = C.method_keys(QSMOptions())
    assert "milovic2022l1qsm" not in plain["inversion"]
    l1 = C.method_keys(QSMOptions(method_options={"inversion": {"data_fidelity": "l1"}}))
    assert l1["inversion"] == plain["inversion"] + ["milovic2022l1qsm"]
    assert "Milovic" in C.format_reference("milovic2022l1qsm")
