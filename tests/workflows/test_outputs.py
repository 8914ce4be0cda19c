"""qsmprep.workflows.outputs: the sink workflows, built inside the real subject workflow.

The participant workflow of the example in ``tests/derivatives/test_names.py`` is built (not
run) and every ``DerivativesSink`` is read back: its name (source file, suffix, entities and the
extension the specification gives) must be one of the pinned names, its ``in_file`` must be
connected, and every sink output must reach the subject's ``publish`` node.
"""

from types import SimpleNamespace

import pytest

from qsmprep.derivatives import spec
from qsmprep.derivatives.names import build_name
from tests.derivatives.test_names import TODAY

VALUES = {"inversion": "tvadmm", "atlas": "DGM", "atlas_space": "MNI152NLin2009cAsym"}


def _session(tmp_path, sub, ses, t1w=True, acq=None):
    stem = f"sub-{sub}" + (f"_ses-{ses}" if ses else "") + (f"_acq-{acq}" if acq else "")

    def touch(name):
        p = tmp_path / name
        p.write_bytes(b"")
        return str(p)

    return {"subject": sub, "session": ses,
            "t1w": touch(f"{stem}_T1w.nii.gz") if t1w else None,
            "mag": [touch(f"{stem}_echo-{e}_part-mag_MEGRE.nii.gz") for e in (1, 2)],
            "phase": [touch(f"{stem}_echo-{e}_part-phase_MEGRE.nii.gz") for e in (1, 2)],
            "echo_times": [0.004, 0.008], "b0": 3.0, "phase_units": "rad", "parts": "mag-phase",
            "shape": (8, 8, 8), "sources": [f"bids:raw:sub-{sub}/anat/{stem}_echo-1_part-mag_MEGRE.nii.gz"],
            "warnings": []}


@pytest.fixture(scope="module")
def workflow(tmp_path_factory):
    from qsmprep.atlas import load_atlas
    from qsmprep.qsm.pipeline import QSMOptions
    from qsmprep.workflows.base import init_qsmprep_wf

    tmp = tmp_path_factory.mktemp("ds")
    selection = {"01": [_session(tmp, "01", "baseline"), _session(tmp, "01", "followup"),
                        _session(tmp, "01", "notone", t1w=False)],
                 "02": [_session(tmp, "02", None, acq="fast")]}
    config = SimpleNamespace(
        longitudinal=True, registration_resolution=None, syn_metric="CC", omp_nthreads=1,
        random_seed=1, roi_erosion=0, roi_min_reliability=None, output_dir=tmp / "out",
        mem_gb=4.0, nprocs=1,
        output_spaces=("MNI152NLin2009cAsym:res-2", "MNI152NLin2009cAsym"))
    return init_qsmprep_wf(selection=selection, config=config, atlas=load_atlas(None),
                           options=QSMOptions(inversion="tv_admm"))


def _sinks(wf):
    return [n for n in wf._get_all_nodes() if type(n.interface).__name__ == "DerivativesSink"]


def _ext(inputs):
    """The extension of the one specification record whose suffix and entities the sink has."""
    ents = dict(inputs.entities)
    found = {d.extension for d in spec.ALL if d.suffix == inputs.suffix
             and all(ents.get(k) == v for k, v in d.fill(**VALUES).items())}
    assert len(found) == 1, (inputs.suffix, ents, found)
    return found.pop()


def test_sink_names_unchanged(workflow):
    """Fails when the built workflow names any output differently from the pinned list, or
    writes one more or one less."""
    names = sorted(build_name(n.inputs.source_file, n.inputs.suffix, _ext(n.inputs),
                              **n.inputs.entities) for n in _sinks(workflow))
    assert names == TODAY


def test_every_sink_fed_and_published(workflow):
    """Fails when a sink has no input file wired, or when its output does not reach ``publish``
    (it would be named but never published)."""
    from copy import deepcopy

    from nipype.pipeline.engine.utils import generate_expanded_graph

    graph = generate_expanded_graph(deepcopy(workflow._create_flat_graph()))
    sinks = [n for n in graph.nodes() if type(n.interface).__name__ == "DerivativesSink"]
    assert len(sinks) == len(TODAY)
    for node in sinks:
        fed = {dst for _, _, d in graph.in_edges(node, data=True) for _, dst in d["connect"]}
        assert "in_file" in fed, node.fullname
        downstream = {n.name for n in _descendants(graph, node)}
        assert "publish" in downstream, node.fullname


def _descendants(graph, node):
    import networkx as nx

    return [graph.nodes[n]["node"] if "node" in graph.nodes[n] else n
            for n in nx.descendants(graph, node)]


def test_static_sidecars(workflow):
    """The sidecars given at build time: grid and sources on the mask, the template path on
    the template-space images (fails when a record's sidecar is lost in the wiring)."""
    sub = workflow.get_node("sub_01_wf")
    mask = sub.get_node("ds_baseline_wf").get_node("ds_mask")
    assert mask.inputs.sidecar["Type"] == "Brain"
    assert mask.inputs.sidecar["SpatialReference"].startswith("bids:raw:sub-01/")
    assert mask.inputs.sidecar["Sources"] == [mask.inputs.sidecar["SpatialReference"]]
    dseg = sub.get_node("ds_baseline_wf").get_node("ds_dseg")
    assert dseg.inputs.sidecar["RegistrationPath"] == "longitudinal"
    labels = sub.get_node("ds_subject_wf").get_node("ds_labels_template")
    assert labels.inputs.sidecar["SpatialReference"] == (
        "sub-01/anat/sub-01_space-individual_desc-template_T1w.nii.gz")
    r2 = sub.get_node("ds_baseline_wf").get_node("ds_r2starmap")
    assert r2.inputs.sidecar["Units"] == "1/s" and "SpatialReference" not in r2.inputs.sidecar
