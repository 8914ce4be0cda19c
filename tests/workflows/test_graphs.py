"""Every workflow graph qsmprep builds, checked without running Nipype.

The inputs are real: one simulated subject (``qsmprep.simulate``, preset ``small``, seed 0,
two sessions) read by the same functions the participant level uses
(:func:`qsmprep.bids.collect_data`, :meth:`qsmprep.config.RunConfig.from_args`,
:func:`qsmprep.atlas.load_atlas`). Each graph is flattened the way ``Workflow.run`` flattens it
(``wf._create_flat_graph()``) and checked for

* every mandatory input of every node being set or connected to a source that provides it
  (an ``IdentityInterface`` field provides a value only if it is itself set or fed);
* every slot of every ``Merge`` node fed (an empty slot gives ``None`` to the next step);
* no field of any ``outputnode`` left unfed;
* every derivative sink reaching the subject's ``publish`` node, no two sinks naming the same
  file, and the sink names matching the file names listed in ``docs/outputs.md``.

Nothing here runs a node: the module takes seconds (most of it the simulation).
"""

from __future__ import annotations

import re
import shutil

import networkx as nx
import pytest
from nipype.interfaces import utility as niu
from nipype.interfaces.base import isdefined
from nipype.pipeline import engine as pe

from tests._paths import REPO_ROOT

pytest.importorskip("ants")

from qsmprep.atlas import load_atlas  # noqa: E402
from qsmprep.bids import build_layout, collect_data, collect_participants  # noqa: E402
from qsmprep.cli.parser import parse_args  # noqa: E402
from qsmprep.cli.run import qsm_options  # noqa: E402
from qsmprep.config import RunConfig  # noqa: E402
from qsmprep.derivatives.names import build_name  # noqa: E402
from qsmprep.interfaces.derivatives import DerivativesSink  # noqa: E402
from qsmprep.workflows.base import init_qsmprep_wf, init_single_subject_wf  # noqa: E402
from qsmprep.workflows.longitudinal import OUTPUT_FIELDS, init_longitudinal_wf  # noqa: E402
from qsmprep.workflows.qsm import init_qsm_wf  # noqa: E402

SPACE = "MNI152NLin2009cAsym:res-2"  # the --output-spaces value docs/outputs.md lists


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def bids(tmp_path_factory):
    from qsmprep.simulate.cohort import simulate_cohort

    return simulate_cohort(tmp_path_factory.mktemp("graphs") / "bids", n_subjects=1,
                           n_sessions=2, preset="small", seed=0)


@pytest.fixture(scope="module")
def bids_no_t1w(bids, tmp_path_factory):
    """The same dataset with the follow-up T1w removed (a session without T1w)."""
    root = tmp_path_factory.mktemp("graphs_no_t1w") / "bids"
    shutil.copytree(bids, root)
    for f in root.glob("sub-01/ses-followup/anat/*_T1w.*"):
        f.unlink()
    return root


@pytest.fixture(scope="module")
def atlas():
    return load_atlas()


def _config(bids_dir, out, *options):
    argv = [str(bids_dir), str(out / "out"), "participant", "-w", str(out / "work"),
            "--nprocs", "1", *options]
    return RunConfig.from_args(parse_args(argv))


def _selection(config):
    layout = build_layout(config.bids_dir, validate=False)
    chosen = collect_participants(layout, config.participant_label, config.session_label)
    return {sub: [collect_data(layout, sub, ses) for ses in sessions]
            for sub, sessions in chosen.items()}


def _build(bids_dir, tmp_path, atlas, *options):
    config = _config(bids_dir, tmp_path, *options)
    selection = _selection(config)
    wf = init_qsmprep_wf(selection=selection, config=config, atlas=atlas,
                         options=qsm_options(config))
    return config, selection, wf


# ------------------------------------------------------------------ graph checks
def _is_identity(node):
    return isinstance(node.interface, niu.IdentityInterface)


def _src_field(field):
    """Output name of a connection source (``(name, function, args)`` for modified ones)."""
    return field[0] if isinstance(field, tuple) else field


def _incoming(graph, node):
    """``{input field: (source node, source field)}`` of ``node`` in a flat graph."""
    out = {}
    for src, _, data in graph.in_edges(node, data=True):
        for src_field, dest_field in data["connect"]:
            out[dest_field] = (src, _src_field(src_field))
    return out


def _provided(graph, node, field, _seen=None):
    """Whether output ``field`` of ``node`` will hold a value when the graph runs.

    Computing interfaces provide their outputs; an IdentityInterface passes on only what it
    is given (statically or through a connection).
    """
    if not _is_identity(node):
        return True
    if isdefined(getattr(node.inputs, field)):
        return True
    src = _incoming(graph, node).get(field)
    return src is not None and _provided(graph, *src)


def _satisfied(graph, node, field, incoming):
    if isdefined(getattr(node.inputs, field)):
        return True
    return field in incoming and _provided(graph, *incoming[field])


def graph_problems(wf):
    """Every unmet input of a workflow, as ``'<node>.<field>: <why>'`` lines (empty: none)."""
    graph = wf._create_flat_graph()
    problems = []
    if not nx.is_directed_acyclic_graph(graph):
        problems.append(f"{wf.name}: not a DAG")
    for node in graph.nodes():
        incoming = _incoming(graph, node)
        where = node.fullname
        if _is_identity(node):
            if node.name == "outputnode":
                problems += [f"{where}.{f}: outputnode field never fed"
                             for f in node.inputs.copyable_trait_names()
                             if not _satisfied(graph, node, f, incoming)]
            continue
        if isinstance(node.interface, niu.Merge):
            problems += [f"{where}.in{k}: empty Merge slot"
                         for k in range(1, node.interface._numinputs + 1)
                         if not _satisfied(graph, node, f"in{k}", incoming)]
        for field, trait in node.inputs.traits(mandatory=True).items():
            group = [field, *(trait.xor or [])]
            if not any(_satisfied(graph, node, f, incoming) for f in group):
                problems.append(f"{where}.{field}: mandatory input neither set nor provided")
    return problems


def _sinks(wf):
    """``{sink node name: file stem}`` of every DerivativesSink of a (sub-)workflow."""
    out = {}
    for name in wf.list_node_names():
        node = wf.get_node(name)
        if isinstance(node.interface, DerivativesSink):
            i = node.inputs
            ents = dict(i.entities) if isdefined(i.entities) else {}
            out[name] = build_name(i.source_file, i.suffix, "", **ents)
    return out


def _documented_stems(inversion):
    """Stems of the per-subject files of the output trees in docs/outputs.md (sub-01)."""
    text = (REPO_ROOT / "docs" / "outputs.md").read_text()
    blocks = re.findall(r"```\n(.*?)```", text, flags=re.S)
    names = set()
    for block in blocks:
        names |= set(re.findall(r"(sub-01_[^\s()]+?)\.(?:nii\.gz|tsv|h5|mat)\b", block))
    return {n.replace("<inversion>", inversion) for n in names}


def _stems_as_documented(stems):
    """The docs list ses-baseline only: name every session's file as ses-baseline's."""
    return {re.sub(r"_ses-[^_]+_", "_ses-baseline_", s) for s in stems}


def check_subject(wf, subject):
    """Graph checks shared by every participant case; returns the subject's sink stems."""
    assert graph_problems(wf) == []
    sub_wf = wf.get_node(f"sub_{subject}_wf")
    sinks = _sinks(sub_wf)
    stems = list(sinks.values())
    assert len(stems) == len(set(stems)), "two sinks would write the same file"
    # every sink (and the report) feeds the all-or-nothing publish node
    graph = sub_wf._create_flat_graph()  # the sinks live in nested ds_*_wf workflows
    publish = next(n for n in graph.nodes() if n.name == "publish")
    upstream = {n.fullname.split(".", 1)[1] for n in nx.ancestors(graph, publish)}
    missing = [n for n in sinks if n not in upstream]
    assert missing == [], f"sinks not published: {missing}"
    assert "report" in upstream
    return set(stems)


# ------------------------------------------------------------------ the checker can fail
def test_checker_finds_unfed_inputs():
    """The checks above report each kind of gap (else every graph test below would pass blindly)."""
    wf = pe.Workflow(name="broken")
    inputnode = pe.Node(niu.IdentityInterface(fields=["x"]), name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=["y", "z"]), name="outputnode")
    merge = pe.Node(niu.Merge(2), name="merge")
    sink = pe.Node(DerivativesSink(source_file="sub-01_T1w.nii.gz"), name="ds")  # suffix unset
    wf.connect([(inputnode, sink, [("x", "in_file")]), (inputnode, merge, [("x", "in1")]),
                (merge, outputnode, [("out", "y")])])
    problems = graph_problems(wf)
    assert "broken.ds.in_file: mandatory input neither set nor provided" in problems  # x unset
    assert "broken.ds.suffix: mandatory input neither set nor provided" in problems
    assert "broken.merge.in1: empty Merge slot" in problems
    assert "broken.merge.in2: empty Merge slot" in problems
    assert "broken.outputnode.z: outputnode field never fed" in problems
    assert "broken.outputnode.y: outputnode field never fed" not in problems  # Merge provides
    wf.get_node("inputnode").inputs.x = "/some/file.nii.gz"
    sink.inputs.suffix = "T1w"
    assert "broken.ds.in_file: mandatory input neither set nor provided" not in graph_problems(wf)


# ------------------------------------------------------------------ building blocks
@pytest.mark.parametrize("parts", ["mag-phase", "real-imag"])
def test_qsm_wf(bids, tmp_path, parts):
    """init_qsm_wf alone: fails if a step's input is unwired or an output is never produced."""
    config = _config(bids, tmp_path)
    data = _selection(config)["01"][0]
    options = qsm_options(config)
    wf = init_qsm_wf(echo_times=data["echo_times"], b0=data["b0"], masking=options.masking,
                     combination=options.combination, unwrapping=options.unwrapping,
                     bf_removal=options.bf_removal, inversion=options.inversion,
                     reference=options.reference, method_options=options.method_options,
                     parts=parts)
    assert any("mag_files" in p for p in graph_problems(wf))  # inputs not yet given
    wf.inputs.inputnode.mag_files = data["mag"]
    wf.inputs.inputnode.phase_files = data["phase"]
    assert graph_problems(wf) == []
    names = {n for n in wf.list_node_names()}
    assert {"load_gre", "brain_mask", "total_field", "bf_removal", "dipole_inversion",
            "reference", "r2star", "chimap_sidecar"} <= names
    sidecar = wf.get_node("chimap_sidecar").inputs.extra
    assert sidecar["EchoTime"] == data["echo_times"] and sidecar["Units"] == "ppm"


def test_qsm_wf_refuses_unknown_method_options():
    """A misspelt method option or step fails when the workflow is built, not in a node (nor
    silently ignored); a valid option (L1 data fidelity) is accepted."""
    kw = dict(echo_times=[0.004, 0.008], b0=3.0, masking="phase-quality", combination="nonlinear",
              unwrapping="romeo", bf_removal="vsharp", inversion="medi", reference="mean")
    with pytest.raises(ValueError, match=r"'n_iters' for the dipole inversion method 'medi'"):
        init_qsm_wf(**kw, method_options={"inversion": {"n_iters": 10}})
    with pytest.raises(ValueError, match=r"unknown step\(s\) 'inversions'"):
        init_qsm_wf(**kw, method_options={"inversions": {"n_iter": 10}})
    with pytest.raises(ValueError, match=r"'radius' for the background field removal method"):
        init_qsm_wf(**kw, method_options={"bf_removal": {"radius": 5}})
    wf = init_qsm_wf(**kw, method_options={"inversion": {"data_fidelity": "l1"},
                                           "bf_removal": {"radii_mm": [4.0]}})
    assert wf.get_node("dipole_inversion").inputs.method_options == {"data_fidelity": "l1"}


@pytest.mark.parametrize("case", ["longitudinal", "cross-sectional", "one session",
                                  "followup without T1w"])
def test_longitudinal_wf(bids, tmp_path, atlas, case):
    """init_longitudinal_wf on the real atlas: every registration step is wired and every
    OUTPUT_FIELDS entry is produced (or set) on each path.

    Fails if a path leaves an outputnode field unfed, which the sinks would read as missing.
    """
    data = _selection(_config(bids, tmp_path))["01"]
    ses = ["baseline", "followup"]
    kwargs = {"session_ids": ses, "atlas": atlas}
    if case == "cross-sectional":
        kwargs["longitudinal"] = False
    elif case == "one session":
        kwargs["session_ids"], data = ses[:1], data[:1]
    elif case == "followup without T1w":
        kwargs["sessions_without_t1w"] = ["followup"]
    wf = init_longitudinal_wf(**kwargs)
    assert set(wf.get_node("outputnode").inputs.copyable_trait_names()) == set(OUTPUT_FIELDS)
    wf.inputs.inputnode.t1w = [d["t1w"] for d in data]
    wf.inputs.inputnode.gre_mag = [d["mag"][0] for d in data]
    wf.inputs.inputnode.qsm_mask = [d["mag"][0] for d in data]
    wf.inputs.inputnode.gre_brain_mask = [d["mag"][0] for d in data]
    assert graph_problems(wf) == []


# ------------------------------------------------------------------ the participant workflow
def test_two_sessions_longitudinal_with_output_spaces(bids, tmp_path, atlas):
    """The full case of docs/outputs.md: its sinks are exactly the files the docs list.

    Fails if a documented output is no longer written, an undocumented one appears, or a
    file is renamed (entities, order, suffix) on either side.
    """
    config, selection, wf = _build(bids, tmp_path, atlas, "--output-spaces", SPACE)
    assert [d["session"] for d in selection["01"]] == ["baseline", "followup"]
    stems = check_subject(wf, "01")
    inversion = config.inversion.replace("_", "")
    documented = _documented_stems(inversion)
    only_other_paths = {  # the docs list these for the cross-sectional / no-T1w paths
        "sub-01_ses-baseline_from-MNI152NLin2009cAsym_to-T1w_mode-image_xfm",
        "sub-01_ses-baseline_from-MNI152NLin2009cAsym_to-MEGRE_mode-image_xfm",
    }
    assert _stems_as_documented(stems) == documented - only_other_paths
    # each session has its own files: 9 per session + 2 in the template space, 5 per subject
    assert sum("_ses-followup_" in s for s in stems) == 11
    assert sum("_ses-" not in s for s in stems) == 5
    sub_wf = wf.get_node("sub_01_wf")
    assert sub_wf.get_node("qsm_baseline_wf.outputnode") is not None
    assert sub_wf.get_node("dgm_change").inputs.baseline == "baseline"
    assert sub_wf.get_node("dgm_change").inputs.followup == "followup"


def test_one_session(bids, tmp_path, atlas):
    """One session with a T1w: cross-sectional atlas path, no subject-level files, no change.

    Fails if the single-session path wires a longitudinal output or a change table.
    """
    config, selection, wf = _build(bids, tmp_path, atlas, "--session-label", "baseline")
    assert [d["session"] for d in selection["01"]] == ["baseline"]
    stems = check_subject(wf, "01")
    inv = config.inversion.replace("_", "")
    assert stems == {
        f"sub-01_ses-baseline_desc-{inv}_Chimap", "sub-01_ses-baseline_desc-brain_mask",
        "sub-01_ses-baseline_desc-local_field", "sub-01_ses-baseline_desc-loglinear_R2starmap",
        "sub-01_ses-baseline_desc-loglinear_T2starmap", "sub-01_ses-baseline_atlas-DGM_dseg",
        "sub-01_ses-baseline_atlas-DGM_desc-dgm_stats",
        "sub-01_ses-baseline_from-MEGRE_to-T1w_mode-image_xfm",
        "sub-01_ses-baseline_from-MNI152NLin2009cAsym_to-T1w_mode-image_xfm",
    }
    assert _stems_as_documented(stems) <= _documented_stems(inv)
    sub_wf = wf.get_node("sub_01_wf")
    assert sub_wf.get_node("dgm_change") is None


def test_two_sessions_cross_sectional(bids, tmp_path, atlas):
    """--no-longitudinal: one SyN per session, no template files, a change table all the same."""
    config, _, wf = _build(bids, tmp_path, atlas, "--no-longitudinal")
    stems = check_subject(wf, "01")
    assert not any("individual" in s for s in stems)
    assert "sub-01_atlas-DGM_desc-dgmchange_stats" in stems
    assert {s for s in stems if s.endswith("to-T1w_mode-image_xfm") and "MNI" in s} == {
        "sub-01_ses-baseline_from-MNI152NLin2009cAsym_to-T1w_mode-image_xfm",
        "sub-01_ses-followup_from-MNI152NLin2009cAsym_to-T1w_mode-image_xfm",
    }
    assert _stems_as_documented(stems) <= _documented_stems(config.inversion.replace("_", ""))


def test_session_without_t1w(bids_no_t1w, tmp_path, atlas):
    """A follow-up without T1w: its labels come template -> GRE, the baseline goes
    cross-sectional, and --output-spaces still resamples both sessions.

    Fails if the T1w-less session gets a T1w transform, or its output-space chain is unwired.
    """
    config, selection, wf = _build(bids_no_t1w, tmp_path, atlas, "--output-spaces", SPACE)
    assert [bool(d["t1w"]) for d in selection["01"]] == [True, False]
    stems = check_subject(wf, "01")
    followup = {s for s in stems if "_ses-followup_" in s}
    assert "sub-01_ses-followup_from-MNI152NLin2009cAsym_to-MEGRE_mode-image_xfm" in followup
    assert not any("to-T1w" in s for s in followup)
    assert sum("space-MNI152NLin2009cAsym_res-2" in s for s in followup) == 2
    assert not any("individual" in s for s in stems)  # only one T1w: no subject template
    assert _stems_as_documented(stems) <= _documented_stems(config.inversion.replace("_", ""))
    sub_wf = wf.get_node("sub_01_wf")
    chain = sub_wf.get_node("chain_to_atlas_followup")
    assert chain.interface._numinputs == 1  # GRE -> atlas inverse warp only


def test_single_subject_wf_direct(bids, tmp_path, atlas):
    """init_single_subject_wf called directly equals the sub-workflow init_qsmprep_wf holds."""
    config = _config(bids, tmp_path)
    selection = _selection(config)
    direct = init_single_subject_wf(subject="01", sessions=selection["01"], config=config,
                                    atlas=atlas, options=qsm_options(config))
    nested = init_qsmprep_wf(selection=selection, config=config, atlas=atlas,
                             options=qsm_options(config)).get_node("sub_01_wf")
    assert direct.name == "sub_01_wf"
    assert sorted(direct.list_node_names()) == sorted(nested.list_node_names())
    assert _sinks(direct) == _sinks(nested)
    assert direct.get_node("publish").inputs.output_dir == str(config.output_dir)


@pytest.mark.parametrize("nprocs", [1, 3])
def test_report_node_holds_the_slots_of_its_threads(bids, tmp_path, atlas, nprocs):
    """The report draws its figures in min(2, --nprocs) threads and asks the scheduler for as
    many slots (fails if the threads and the node's n_procs disagree, or exceed --nprocs)."""
    from qsmprep.workflows.base import REPORT_THREADS

    config, _, wf = _build(bids, tmp_path, atlas, "--session-label", "baseline",
                           "--nprocs", str(nprocs))
    assert config.nprocs == nprocs
    report = wf.get_node("sub_01_wf").get_node("report")
    assert report.inputs.n_threads == report.n_procs == min(REPORT_THREADS, nprocs)
