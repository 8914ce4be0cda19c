"""Critical-path job order for Nipype's MultiProc scheduler.

Nipype's MultiProc starts the ready jobs in the graph's topological order. With two CPUs and a
subject whose work splits into two long chains (each session's QSM reconstruction; the
within-subject template -> brain extraction -> atlas SyN -> label resampling chain), that order
often fills both CPUs with one chain while the other waits, and the run ends on a serial tail
(label resampling, ROI statistics, report) with one CPU idle. Measured on the 1 mm simulator
(2 sessions, ``--nprocs 2``): the label resampling that could have run at 150 s waited until
195 s behind the dipole inversions, and the last 30 s of the run used one CPU.

:class:`CriticalPathMultiProcPlugin` keeps everything of MultiProc (worker pool, resource
accounting, callbacks) and only changes which ready job goes first: the one with the longest
remaining path to the end of the run, counting each node's typical cost (:data:`STEP_COST_S`).
This is the classic list-scheduling heuristic (HLFET: highest level first with estimated
times; Adam TL, Chandy KM, Dickson JR. A comparison of list schedules for parallel processing
systems. Commun ACM 1974;17:685-690). Ties keep Nipype's topological order. The order of
execution never changes a result: every node sees the same inputs.

``--plugin-args '{"scheduler": "tsort"}'`` (or ``"mem_thread"``) gives Nipype's own order back.
"""

from __future__ import annotations

import logging

from nipype.pipeline.plugins.multiproc import MultiProcPlugin

LOGGER = logging.getLogger("qsmprep.scheduling")

__all__ = ["STEP_COST_S", "DEFAULT_COST_S", "SCHEDULER", "CriticalPathMultiProcPlugin",
           "node_cost", "upward_ranks"]

#: name of this order in ``plugin_args["scheduler"]`` (the default of qsmprep's MultiProc)
SCHEDULER = "critical_path"

#: typical run time (s) of a node, keyed by its name without the session tag (a name matches
#: a key when it equals it or starts with ``key + "_"``). Only the ratios matter: they rank
#: the ready jobs. Measured per node on the 1 mm simulator, 2 sessions, ``--nprocs 2``
#: (``benchmarks/participant.py``, ninth session); other data sizes scale these together.
STEP_COST_S: dict[str, float] = {
    "load_gre": 8.0,
    "brain_mask": 9.0,
    "total_field": 8.0,
    "bf_removal": 44.0,
    "dipole_inversion": 22.0,
    "r2star": 1.0,
    "subject_template": 33.0,
    "template_brain_extraction": 30.0,
    "atlas_to_template": 65.0,
    "t1w_brain_extraction": 30.0,
    "atlas_to_t1w": 65.0,
    "atlas_to_gre": 65.0,
    "t1w_to_template": 4.0,
    "t1w_brain_mask": 2.0,
    "gre_to_t1w": 10.0,
    "labels_to_template": 2.0,
    "labels_to_t1w": 3.0,
    "labels_to_gre": 2.5,
    "roi_stats": 2.0,
    "report": 9.0,
}
#: cost of any other node (sinks, merges, sidecars): about one scheduler pass
DEFAULT_COST_S = 0.2

_KEYS = sorted(STEP_COST_S, key=len, reverse=True)


def node_cost(name: str) -> float:
    """Typical cost (s) of a node from its (short) name.

    Parameters
    ----------
    name : str
        The node's name, e.g. ``"gre_to_t1w_baseline"``.

    Returns
    -------
    float
        :data:`STEP_COST_S` of the longest matching key, else :data:`DEFAULT_COST_S`.

    Examples
    --------
    >>> node_cost("bf_removal"), node_cost("gre_to_t1w_followup"), node_cost("ds_chimap")
    (44.0, 10.0, 0.2)
    """
    for key in _KEYS:
        if name == key or name.startswith(key + "_"):
            return STEP_COST_S[key]
    return DEFAULT_COST_S


def upward_ranks(successors, costs) -> list[float]:
    """Longest path (sum of costs, the node's own included) from each node to a sink.

    Parameters
    ----------
    successors : sequence of sequence of int
        ``successors[i]``: the nodes that depend on node ``i``. Indices must be in topological
        order (every successor index is larger than its predecessor's).
    costs : sequence of float
        Cost of each node.

    Returns
    -------
    list of float
        ``rank[i] = costs[i] + max(rank[j] for j in successors[i])`` (0 for no successor).

    Examples
    --------
    >>> upward_ranks([[1, 2], [3], [3], []], [1.0, 5.0, 2.0, 1.0])
    [7.0, 6.0, 3.0, 1.0]
    """
    n = len(costs)
    rank = [0.0] * n
    for i in range(n - 1, -1, -1):
        succ = successors[i]
        if any(j <= i for j in succ):
            raise ValueError("upward_ranks: node indices are not in topological order")
        rank[i] = float(costs[i]) + max((rank[j] for j in succ), default=0.0)
    return rank


class CriticalPathMultiProcPlugin(MultiProcPlugin):
    """Nipype's MultiProc with ready jobs started longest-remaining-path first.

    Parameters
    ----------
    plugin_args : dict, optional
        MultiProc's arguments. ``scheduler``: ``"critical_path"`` (default) or Nipype's
        ``"tsort"``/``"mem_thread"``.

    Notes
    -----
    The ranks are computed once per run from the execution graph, before any job starts
    (:meth:`_generate_dependency_list`), so jobs finishing do not change them.
    """

    def __init__(self, plugin_args=None):
        args = dict(plugin_args or {})
        args.setdefault("scheduler", SCHEDULER)
        super().__init__(plugin_args=args)
        self._rank: list[float] = []

    def _generate_dependency_list(self, graph):
        super()._generate_dependency_list(graph)
        index = {node: i for i, node in enumerate(self.procs)}
        successors = [sorted(index[s] for s in graph.successors(node)) for node in self.procs]
        costs = [node_cost(str(getattr(node, "name", ""))) for node in self.procs]
        self._rank = upward_ranks(successors, costs)
        if self._rank:
            LOGGER.debug("critical path: %.0f s of %.0f s of estimated work",
                         max(self._rank), sum(costs))

    def _sort_jobs(self, jobids, scheduler=SCHEDULER):
        if scheduler != SCHEDULER or not self._rank:
            return super()._sort_jobs(jobids, scheduler=scheduler)
        # stable: equal ranks keep the topological order Nipype gave
        return sorted(jobids, key=lambda j: -self._rank[j])
