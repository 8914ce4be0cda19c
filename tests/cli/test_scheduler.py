"""qsmprep's MultiProc scheduler wakes when a node finishes (qsmprep/cli/scheduler.py)."""

from __future__ import annotations

import gc
import time

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe
from nipype.pipeline.plugins import base as plugin_base

from qsmprep.cli import scheduler


def _add_one(x):
    return x + 1


def _first_times_ten(v):
    return v[0] * 10


def _chain(base_dir):
    """worker node -> Merge in the scheduler's process -> worker node -> worker node."""
    wf = pe.Workflow(name="chain", base_dir=str(base_dir))
    a = pe.Node(niu.Function(function=_add_one, input_names=["x"], output_names=["out"]), name="a")
    a.inputs.x = 1
    merge = pe.Node(niu.Merge(1), name="merge", run_without_submitting=True)
    b = pe.Node(niu.Function(function=_first_times_ten, input_names=["v"], output_names=["out"]),
                name="b")
    c = pe.Node(niu.Function(function=_add_one, input_names=["x"], output_names=["out"]), name="c")
    wf.connect([(a, merge, [("out", "in1")]), (merge, b, [("out", "v")]), (b, c, [("out", "x")])])
    return wf


def test_loop_wakes_when_a_node_finishes(tmp_path):
    """With a 60 s poll, Nipype's loop would sleep a whole poll after each level (at least 3
    minutes for this chain); woken by each finished node the run takes seconds, and computes
    the same."""
    wf = _chain(tmp_path)
    wf.config["execution"] = {"poll_sleep_duration": 60, "stop_on_first_crash": True}
    settings = scheduler.plugin_settings({"plugin": "MultiProc",
                                          "plugin_args": {"n_procs": 2, "memory_gb": 1}})
    plugin = settings["plugin"]
    assert isinstance(plugin, scheduler.MultiProcPlugin)
    start = time.monotonic()
    graph = wf.run(**settings)
    elapsed = time.monotonic() - start
    result = {n.name: n.result.outputs for n in graph.nodes()}
    assert result["c"].out == 21
    assert elapsed < 50, f"the loop slept a whole poll ({elapsed:.0f} s)"
    assert plugin.wakeups >= 3
    assert plugin_base.sleep is time.sleep  # Nipype's module is left as it was
    assert gc.get_freeze_count() == 0  # what the run froze is unfrozen


def test_other_plugins_are_passed_through():
    s = {"plugin": "SLURM", "plugin_args": {"sbatch_args": "--cpus-per-task=1"}}
    assert scheduler.plugin_settings(s) is s
    assert scheduler.MultiProcPlugin.__name__ == "MultiProcPlugin"  # Nipype records "MultiProc"
