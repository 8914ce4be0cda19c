"""qsmprep.derivatives.dataset: dataset-level files of the derivatives folder."""

import json
import os

from qsmprep.derivatives import dataset as qd
from tests._bids_helpers import make_dataset


def test_derivatives_description_and_bidsignore(tmp_path, monkeypatch):
    root = make_dataset(tmp_path / "ds")
    out = tmp_path / "out"
    monkeypatch.setenv("QSMPREP_CONTAINER", "qsmprep:0.1.0")
    monkeypatch.setenv("QSMPREP_CONTAINER_TYPE", "docker")
    monkeypatch.delenv("APPTAINER_CONTAINER", raising=False)
    monkeypatch.delenv("SINGULARITY_CONTAINER", raising=False)
    qd.write_derivatives_description(out, root)
    text = (out / "dataset_description.json").read_text()
    desc = json.loads(text)
    assert desc["DatasetType"] == "derivative"
    gen = desc["GeneratedBy"][0]
    assert gen["Name"] == "qsmprep" and gen["CodeURL"].startswith("https://")
    assert gen["Container"] == {"Type": "docker", "Tag": "qsmprep:0.1.0"}
    assert desc["SourceDatasets"] == [{"URL": "bids:raw:"}]
    # the raw dataset is linked by a relative path that resolves from the output folder,
    # and no absolute path of this machine is recorded anywhere in the description
    assert desc["DatasetLinks"]["raw"] == "../ds"
    assert (out / desc["DatasetLinks"]["raw"]).resolve() == root.resolve()
    assert str(tmp_path) not in text and "file:" not in text
    # the same image run under Apptainer is recorded as such
    # a README is written once; one the user edited is kept on the next run
    assert "qsmprep" in (out / "README.md").read_text()
    (out / "README.md").write_text("my notes")
    qd.write_derivatives_description(out, root)
    assert (out / "README.md").read_text() == "my notes"
    monkeypatch.setenv("APPTAINER_CONTAINER", "/images/qsmprep.sif")
    assert qd.container_info()["Type"] == "singularity"
    monkeypatch.delenv("QSMPREP_CONTAINER")
    assert qd.container_info() is None
    qd.write_bidsignore(out, extra=["*_custom.nii.gz"])
    qd.write_bidsignore(out)
    lines = (out / ".bidsignore").read_text().splitlines()
    for patt in ("*_stats.tsv", "figures", "*.html", "/logs", "/group", "*_xfm.*", "*_custom.nii.gz"):
        assert lines.count(patt) == 1
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]


def test_atlas_description_from_atlas_sources(tmp_path):
    """atlas-<Name>_description.json carries the atlas's name, licence and every source's
    citation (the BIDS validator requires AtlasName and License)."""
    from types import SimpleNamespace

    adir = tmp_path / "atlas"
    adir.mkdir()
    (adir / "dataset_description.json").write_text(json.dumps({
        "Name": "test atlas", "License": "CC BY 4.0",
        "Sources": [{"Name": "A", "License": "CC0", "Citation": "Author A. J 2020."},
                    {"Name": "B", "Citation": "Author B. J 2021.", "File": "/abs/b.nii.gz"}]}))
    atlas = SimpleNamespace(directory=adir, name="Foo", space="MNI152NLin2009cAsym")
    (tmp_path / "out").mkdir()
    path = qd.write_atlas_description(tmp_path / "out", atlas)
    desc = json.loads(path.read_text())
    assert path.name == "atlas-Foo_description.json"
    assert desc["AtlasName"] == "Foo" and desc["License"] == "CC BY 4.0"
    assert desc["ReferencesAndLinks"] == ["Author A. J 2020.", "Author B. J 2021."]
    assert "/abs/" not in path.read_text()  # file paths of the atlas sources are not copied
