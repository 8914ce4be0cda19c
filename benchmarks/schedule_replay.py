"""How much could a different job order of Nipype's MultiProc save? A replay of measured runs.

Rebuilds the participant workflow of a BIDS dataset exactly as ``qsmprep participant`` does,
expands it into Nipype's execution graph, and replays a measured run through a model of
MultiProc's loop: every ``--poll`` seconds finished jobs are collected, the ready jobs are
ordered, and as many start as there are free CPUs (one per job); nodes Nipype runs in the
scheduler's own process (``run_without_submitting``) finish within the pass. Each node takes
the wall time it took in the measured run (``participant.py --save`` JSON) plus ``--overhead``
seconds. Orders compared:

* ``tsort``: Nipype's (the graph's topological order; qsmprep's default);
* ``longest_path``: longest remaining path first, with the run's own node times as costs (an
  oracle version of HLFET list scheduling, Adam, Chandy & Dickson, Commun ACM 1974);
* ``quick_first``: nodes of at most 5 s first, then longest remaining path.

Prints, per run: the total node work / CPUs (a lower bound of any order) and each order's
makespan. Only the order differs between the rows; start-up (pre-flight, workflow build) and
the per-node costs outside the measured wall time are not modelled, so compare rows, not the
measured whole-run time.

Usage::

    .venv/bin/python benchmarks/schedule_replay.py BIDS_DIR run1.json [run2.json ...]
        [--nprocs 2] [--poll 0.2] [--overhead 0.15]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nipype.pipeline.engine.utils import generate_expanded_graph, topological_sort  # noqa: E402

from qsmprep.atlas import load_atlas  # noqa: E402
from qsmprep.bids import build_layout, collect_data, collect_participants  # noqa: E402
from qsmprep.cli.parser import parse_args  # noqa: E402
from qsmprep.cli.run import qsm_options  # noqa: E402
from qsmprep.config import RunConfig  # noqa: E402
from qsmprep.workflows.base import init_qsmprep_wf  # noqa: E402

QUICK_S = 5.0


def execution_graph(bids_dir: Path, nprocs: int):
    """Nipype's expanded execution graph of the participant workflow of ``bids_dir``."""
    tmp = Path(tempfile.mkdtemp(prefix="qsmprep_replay_"))
    argv = [str(bids_dir), str(tmp / "out"), "participant", "-w", str(tmp / "work"),
            "--nprocs", str(nprocs)]
    config = RunConfig.from_args(parse_args(argv))
    layout = build_layout(config.bids_dir, validate=False)
    chosen = collect_participants(layout, config.participant_label, config.session_label)
    selection = {sub: [collect_data(layout, sub, ses) for ses in sessions]
                 for sub, sessions in chosen.items()}
    wf = init_qsmprep_wf(selection=selection, config=config, atlas=load_atlas(),
                         options=qsm_options(config))
    wf.base_dir = str(tmp / "work")
    flat = wf._create_flat_graph()
    wf._set_needed_outputs(flat)
    return generate_expanded_graph(copy.deepcopy(flat))


def upward_ranks(succ, cost):
    rank = [0.0] * len(cost)
    for i in range(len(cost) - 1, -1, -1):  # topological order: successors come later
        rank[i] = cost[i] + max((rank[j] for j in succ[i]), default=0.0)
    return rank


def replay(graph, wall: dict, order: str, nprocs: int, poll: float, overhead: float):
    procs, _ = topological_sort(graph)
    index = {n: i for i, n in enumerate(procs)}
    succ = [[index[s] for s in graph.successors(n)] for n in procs]
    waiting = [len(list(graph.predecessors(n))) for n in procs]
    in_master = [bool(n.run_without_submitting) for n in procs]
    dur = [wall.get(n.fullname, 0.0) + overhead for n in procs]
    rank = upward_ranks(succ, dur)
    key = {
        "tsort": lambda j: j,
        "longest_path": lambda j: -rank[j],
        "quick_first": lambda j: (dur[j] > QUICK_S, -rank[j]),
    }[order]
    started, done = [False] * len(procs), 0
    running: dict[int, float] = {}
    t = 0.0

    def finish(i):
        nonlocal done
        done += 1
        for j in succ[i]:
            waiting[j] -= 1

    while done < len(procs):
        for i, end in list(running.items()):
            if end <= t:
                del running[i]
                finish(i)
        ready = sorted((i for i in range(len(procs)) if not started[i] and waiting[i] == 0), key=key)
        free = nprocs - len(running)
        ran_here = []
        for i in ready:
            if in_master[i]:
                started[i] = True
                ran_here.append(i)
            elif free > 0:
                started[i] = True
                running[i] = t + dur[i]
                free -= 1
        for i in ran_here:  # their successors become ready at the next pass, as in Nipype
            finish(i)
        t += poll
    work = sum(d for d, m in zip(dur, in_master) if not m)
    return t, work


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bids_dir", type=Path)
    ap.add_argument("runs", type=Path, nargs="+", help="participant.py --save JSON files")
    ap.add_argument("--nprocs", type=int, default=2)
    ap.add_argument("--poll", type=float, default=0.2, help="MultiProc poll (qsmprep: 0.2 s)")
    ap.add_argument("--overhead", type=float, default=0.15,
                    help="seconds added to each node (worker start, result pickling)")
    args = ap.parse_args(argv)
    graph = execution_graph(args.bids_dir, args.nprocs)
    orders = ("tsort", "longest_path", "quick_first")
    print(f"# {graph.number_of_nodes()} nodes, {args.nprocs} CPUs, poll {args.poll} s, "
          f"+{args.overhead} s per node; makespans in s (node work only, no start-up)")
    print(f"{'run':24s} {'work/CPUs':>9s} " + " ".join(f"{o:>12s}" for o in orders))
    for run in args.runs:
        nodes = json.loads(run.read_text())["nodes"]
        wall = {n["node"].replace("/", "."): float(n["wall_s"]) for n in nodes}
        spans = []
        for order in orders:
            span, work = replay(graph, wall, order, args.nprocs, args.poll, args.overhead)
            spans.append(span)
        print(f"{run.stem:24s} {work / args.nprocs:9.1f} " + " ".join(f"{s:12.1f}" for s in spans))


if __name__ == "__main__":
    main()
