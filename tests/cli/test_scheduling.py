"""The critical-path order of qsmprep's MultiProc (qsmprep.cli.scheduling)."""

from __future__ import annotations

import pytest
from nipype.interfaces.utility import Function
from nipype.pipeline import engine as pe

from qsmprep.cli.run import run_workflow
from qsmprep.cli.scheduling import (DEFAULT_COST_S, STEP_COST_S, CriticalPathMultiProcPlugin,
                                    node_cost, upward_ranks)


def test_node_cost_matches_names_without_session_tags():
    assert node_cost("bf_removal") == STEP_COST_S["bf_removal"]
    assert node_cost("gre_to_t1w_followup") == STEP_COST_S["gre_to_t1w"]
    # the longest key wins: labels_to_template is not labels_to_t1w
    assert node_cost("labels_to_template") == STEP_COST_S["labels_to_template"]
    assert node_cost("labels_to_t1w_ses_2") == STEP_COST_S["labels_to_t1w"]
    assert node_cost("ds_chimap") == DEFAULT_COST_S
    assert node_cost("bf_removal2") == DEFAULT_COST_S  # a prefix alone is not a match


def test_upward_ranks_is_the_longest_path_to_a_sink():
    # 0 -> 1 -> 3, 0 -> 2 -> 3, 4 alone
    succ = [[1, 2], [3], [3], [], []]
    rank = upward_ranks(succ, [1.0, 5.0, 2.0, 1.0, 4.0])
    assert rank == [7.0, 6.0, 3.0, 1.0, 4.0]
    with pytest.raises(ValueError, match="topological"):
        upward_ranks([[], [0]], [1.0, 1.0])


def _noop(x):
    return x


def _chain_workflow(base_dir):
    """Nipype's topological order starts the cheap chain first; its critical path is the
    costly one (bf_removal -> dipole_inversion)."""
    wf = pe.Workflow(name="order_wf", base_dir=str(base_dir))
    wf.config["execution"] = {"poll_sleep_duration": 0.05}
    names = ["ds_a", "ds_b", "ds_c", "bf_removal", "dipole_inversion"]
    nodes = {}
    for i, name in enumerate(names):
        nodes[name] = pe.Node(Function(input_names=["x"], output_names=["x"], function=_noop),
                              name=name)
        nodes[name].inputs.x = i
    wf.connect(nodes["ds_a"], "x", nodes["ds_b"], "x")
    wf.connect(nodes["ds_b"], "x", nodes["ds_c"], "x")
    wf.connect(nodes["bf_removal"], "x", nodes["dipole_inversion"], "x")
    return wf


def _start_order(wf, scheduler=None):
    started = []

    def callback(node, status):
        if status == "start":
            started.append(node.name)

    args = {"n_procs": 1, "status_callback": callback}
    if scheduler:
        args["scheduler"] = scheduler
    run_workflow(wf, {"plugin": "MultiProc", "plugin_args": args})
    return started


def test_ready_jobs_start_longest_remaining_path_first(tmp_path):
    order = _start_order(_chain_workflow(tmp_path / "cp"))
    assert order.index("bf_removal") < order.index("ds_a")
    assert order[:2] == ["bf_removal", "dipole_inversion"]
    # Nipype's own order, still available, is the topological one (the cheap chain first
    # here): the test above checks a real change of order
    tsort = _start_order(_chain_workflow(tmp_path / "ts"), scheduler="tsort")
    assert tsort.index("ds_a") < tsort.index("bf_removal")
    assert sorted(order) == sorted(tsort)


def test_run_workflow_uses_the_plugin_only_for_multiproc(monkeypatch):
    seen = {}

    class _WF:
        def run(self, plugin=None, plugin_args=None):
            seen["plugin"], seen["args"] = plugin, plugin_args

    run_workflow(_WF(), {"plugin": "Linear", "plugin_args": {}})
    assert seen["plugin"] == "Linear"
    run_workflow(_WF(), {"plugin": "MultiProc", "plugin_args": {"n_procs": 2}})
    assert isinstance(seen["plugin"], CriticalPathMultiProcPlugin)
    assert seen["plugin"].plugin_args["n_procs"] == 2
    assert seen["plugin"].plugin_args["scheduler"] == "critical_path"
