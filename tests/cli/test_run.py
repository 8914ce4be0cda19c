"""The ``qsmprep`` entry point in-process: logs/, config.toml round trip, run-control options,
progress lines and heartbeat, crash-file location.

Runs that would compute use ``--boilerplate-only`` (inputs checked, workflow built, nothing run);
the progress monitor and crash files are tested on tiny Nipype workflows of plain functions.
"""

from __future__ import annotations

import io
import logging
import os
import re
import time

import pytest

from qsmprep import __version__
from qsmprep.cli.logs import setup_logging
from qsmprep.cli.parser import get_parser, parse_args
from qsmprep.cli.progress import ProgressMonitor
from qsmprep.cli.run import configure_nipype, main
from qsmprep.config import METHOD_OPTIONS, RunConfig, total_memory_gb

RUN_ID = re.compile(r"^\d{8}-\d{6}_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@pytest.fixture(scope="module")
def bids(tmp_path_factory):
    from qsmprep.simulate.cohort import simulate_cohort

    return simulate_cohort(tmp_path_factory.mktemp("cli") / "bids", n_subjects=1, n_sessions=1,
                           preset="small", seed=0)


@pytest.fixture
def restore_nipype():
    """configure_nipype changes Nipype's global configuration: put it back afterwards."""
    from nipype import config as ncfg
    from nipype import logging as nlogging

    saved = {s: dict(ncfg._config.items(s, raw=True)) for s in ncfg._config.sections()}
    monitor = bool(ncfg._resource_monitor)
    yield ncfg
    for section, items in saved.items():
        for key, value in items.items():
            ncfg._config.set(section, key, value)
    ncfg.resource_monitor = monitor
    nlogging.update_logging(ncfg)


def _main(argv):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    return exc.value.code


def _argv(bids, tmp_path, *extra):
    return [bids, tmp_path / "out", "participant", "-w", tmp_path / "work", "--nprocs", "1",
            *extra]


# ------------------------------------------------------------------ logs/ and config.toml
def test_each_run_writes_log_file_and_config(bids, tmp_path, restore_nipype, capsys):
    """Fails if a run leaves no per-run log file / config.toml, or if two runs share a file."""
    argv = _argv(bids, tmp_path, "--boilerplate-only", "--inversion", "tkd")
    assert _main(argv) == 0
    assert _main(argv) == 0
    logs = tmp_path / "out" / "logs"
    # in the order the runs wrote them: two runs in the same second share the run ID's
    # timestamp, and their random UUID parts do not sort by time
    runs = [p.name[len("qsmprep_"):-len(".log")]
            for p in sorted(logs.glob("qsmprep_*.log"), key=lambda p: p.stat().st_mtime_ns)]
    assert len(runs) == 2 and all(RUN_ID.match(r) for r in runs), runs
    assert {p.name for p in logs.glob("config_*.toml")} == {f"config_{r}.toml" for r in runs}
    text = (logs / f"qsmprep_{runs[-1]}.log").read_text()
    # every line of the file is timestamped (ISO date and time) and at INFO or above
    first = text.splitlines()[0]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3} \| INFO ", first), first
    assert f"run {runs[-1]}" in text and "--boilerplate-only" in text
    latest = (logs / "config.toml").read_text()
    assert runs[-1] in latest and 'inversion = "tkd"' in latest
    # the console shows qsmprep's INFO lines at default verbosity
    assert "--boilerplate-only: methods text" in capsys.readouterr().err


def test_config_toml_round_trip_and_override(bids, tmp_path, restore_nipype):
    """config.toml -> --config-file gives the identical RunConfig; the command line wins.

    Fails if an option is missing from the dump, written in a form the parser reads back
    differently, or if the file overrides the command line.
    """
    options = ["--participant-label", "01", "--inversion", "tkd", "--roi-erosion", "2",
               "--no-longitudinal", "--mem-mb", "2000", "--plugin-args", '{"x": 1}',
               "--covariates", "age", "sex", "--syn-metric", "mattes", "--random-seed", "7",
               "--resource-monitor", "--boilerplate-only"]
    argv = [str(a) for a in _argv(bids, tmp_path, *options)]
    original = RunConfig.from_args(parse_args(argv))
    assert _main(argv) == 0
    toml = tmp_path / "out" / "logs" / "config.toml"
    positional = argv[:3]
    again = RunConfig.from_args(parse_args([*positional, "--config-file", str(toml)]))
    assert again == original
    # a value on the command line beats the file; the rest still comes from the file
    mixed = RunConfig.from_args(parse_args([*positional, "--config-file", str(toml),
                                            "--inversion", "medi", "--roi-erosion", "auto"]))
    assert mixed.inversion == "medi" and mixed.roi_erosion == "auto"
    assert mixed.longitudinal is False and mixed.mem_gb == 2.0 and mixed.covariates == ("age", "sex")


def test_config_file_errors(bids, tmp_path, capsys):
    """A bad --config-file exits 64 (unknown key, rejected value) or 66 (missing) and says why."""
    base = [bids, tmp_path / "out", "participant"]
    bad = tmp_path / "bad.toml"
    bad.write_text('[qsm]\ninversion = "magic"\n')
    assert _main([*base, "--config-file", bad]) == 64
    assert "inversion = 'magic' is not one of" in capsys.readouterr().err
    bad.write_text('[qsm]\ninversersion = "tkd"\n')
    assert _main([*base, "--config-file", bad]) == 64
    assert "[qsm] has no option 'inversersion'" in capsys.readouterr().err
    assert _main([*base, "--config-file", tmp_path / "none.toml"]) == 66
    assert not (tmp_path / "out").exists()  # nothing created before the configuration is valid


def test_toml_dumps_every_option(tmp_path):
    """Every parser option is a RunConfig field, and config.toml holds every field (a value, or
    its name in the 'not set' header): fails when an option bypasses RunConfig or is dropped
    from the dump."""
    import tomllib
    from dataclasses import fields

    from qsmprep.config import DERIVED_FIELDS

    dests = {a.dest for a in get_parser()._actions if a.dest not in ("help", "version", "config_file")}
    names = {f.name for f in fields(RunConfig)}
    assert dests <= names, dests - names
    assert names - dests == set(DERIVED_FIELDS)
    (tmp_path / "bids").mkdir()
    cfg = RunConfig.from_args(parse_args([str(tmp_path / "bids"), str(tmp_path / "out"), "group"]))
    text = cfg.to_toml("x")
    doc = tomllib.loads(text)
    written = {k for section, table in doc.items() if section != "run" for k in table}
    header = " ".join(line for line in text.splitlines() if line.startswith("#"))
    unset = {n for n in names - written if re.search(rf"\b{n}\b", header)}
    assert written | unset == dests
    assert unset == {n for n in dests if getattr(cfg, n) is None}


# ------------------------------------------------------------------ run-control options
def test_boilerplate_only_and_write_graph(bids, tmp_path, restore_nipype):
    """--boilerplate-only writes CITATION.md and runs no node; --write-graph writes the graph."""
    assert _main(_argv(bids, tmp_path, "--boilerplate-only", "--write-graph", "--inversion", "tkd")) == 0
    logs = tmp_path / "out" / "logs"
    assert "tkd" in (logs / "CITATION.md").read_text()  # the methods text of this run
    graph = (logs / "workflow_graph.dot").read_text()
    assert "dipole_inversion" in graph and "atlas_to_t1w" in graph
    assert not list((tmp_path / "out").glob("sub-*"))
    assert not list((tmp_path / "work").rglob("result_*.pklz"))  # nothing ran


def test_notrack_and_resource_monitor(bids, tmp_path, restore_nipype, monkeypatch):
    """--notrack sets NIPYPE_NO_ET=1; --resource-monitor turns Nipype's monitor on (and off
    again on a run without it)."""
    monkeypatch.delenv("NIPYPE_NO_ET", raising=False)
    ncfg = restore_nipype
    assert _main(_argv(bids, tmp_path, "--boilerplate-only", "--notrack", "--resource-monitor")) == 0
    assert os.environ.get("NIPYPE_NO_ET") == "1"
    assert ncfg.resource_monitor is True
    assert ncfg.get("monitoring", "sample_frequency") == "0.5"
    monkeypatch.delenv("NIPYPE_NO_ET")
    assert _main(_argv(bids, tmp_path, "--boilerplate-only")) == 0
    assert "NIPYPE_NO_ET" not in os.environ and ncfg.resource_monitor is False


def test_clean_workdir(bids, tmp_path, restore_nipype, capsys):
    """--clean-workdir empties the work folder, and refuses one that holds the outputs."""
    stale = tmp_path / "work" / "qsmprep_wf" / "stale.txt"
    stale.parent.mkdir(parents=True)
    stale.write_text("old")
    assert _main(_argv(bids, tmp_path, "--boilerplate-only")) == 0
    assert stale.exists()  # not without the option
    assert _main(_argv(bids, tmp_path, "--boilerplate-only", "--clean-workdir")) == 0
    assert not stale.exists() and not (tmp_path / "work" / "qsmprep_wf").exists()
    code = _main([bids, tmp_path / "w2" / "out", "participant", "-w", tmp_path / "w2",
                  "--clean-workdir"])
    assert code == 64 and "would delete the output folder" in capsys.readouterr().err


def test_memory_options(bids, tmp_path, capsys):
    """--mem/--mem-mb are megabytes (units allowed), --mem-gb gigabytes; too much or too little
    is refused with exit 64 before anything is created."""
    base = [str(bids), str(tmp_path / "out"), "participant"]
    assert parse_args([*base, "--mem", "4000"]).mem_gb == 4.0
    assert parse_args([*base, "--mem-mb", "2G"]).mem_gb == 2.0
    assert parse_args([*base, "--mem_mb", "1500MB"]).mem_gb == 1.5
    assert parse_args([*base, "--mem-gb", "3"]).mem_gb == 3.0
    assert _main([*base, "--mem-gb", "3", "--mem", "3000"]) == 64  # one or the other
    capsys.readouterr()
    too_much = f"{int(total_memory_gb() * 1000) + 10_000}"
    assert _main([*base, "--mem-mb", too_much]) == 64
    assert "more than this machine has" in capsys.readouterr().err
    assert _main([*base, "--mem", "16"]) == 64  # 16 MB: a unit mistake
    assert "--mem 16G" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_help_shows_real_defaults(tmp_path):
    """No "(default: None)" / "(default: True)"; the method defaults shown are the ones a run
    without the option uses (fails if --help and RunConfig disagree)."""
    text = " ".join(get_parser().format_help().split())
    assert "(default: None)" not in text and "(default: True)" not in text
    assert "(default: False)" not in text and "(default: [])" not in text
    (tmp_path / "bids").mkdir()
    cfg = RunConfig.from_args(parse_args([str(tmp_path / "bids"), str(tmp_path / "o"), "group"]))
    for opt in METHOD_OPTIONS:
        flag = f"--{opt.replace('_', '-')} "
        start = text.index(flag + "{", text.index("QSM reconstruction:"))
        assert f"(default: {getattr(cfg, opt)})" in text[start:start + 200], opt


def test_simulate_version(capsys):
    from qsmprep.simulate.cli import main as simulate_main

    with pytest.raises(SystemExit) as exc:
        simulate_main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"qsmprep-simulate {__version__}"


# ------------------------------------------------------------------ console verbosity
@pytest.mark.parametrize("verbose", [0, 1, 2])
def test_verbosity(verbose, tmp_path, capsys):
    """Default: qsmprep INFO on the console, Nipype's INFO only in the file; -v shows Nipype's
    workflow INFO (the bug: Nipype's own handler swallowed it); -vv shows DEBUG."""
    import nipype  # noqa: F401  (installs Nipype's own stdout handler)

    stream = io.StringIO()
    log_file = tmp_path / "run.log"
    nipype_logger = logging.getLogger("nipype")
    nipype_handlers = list(nipype_logger.handlers)
    setup = setup_logging(verbose, log_file, stream=stream)
    try:
        logging.getLogger("qsmprep.test").info("qsmprep-info")
        logging.getLogger("nipype.workflow").info("nipype-info")
        logging.getLogger("nipype.workflow").debug("nipype-debug")
        logging.getLogger("nipype.interface").warning("nipype-warning")
        logging.getLogger("nipype.utils").warning(
            'Could not retrieve profiling information for node "%s" (mapflow 1/1).', "n")
    finally:
        setup.close()
    console, logged = stream.getvalue(), log_file.read_text()
    assert "qsmprep-info" in console and "nipype-warning" in console
    assert ("nipype-info" in console) == (verbose >= 1)
    assert ("nipype-debug" in console) == (verbose >= 2)
    assert "qsmprep-info" in logged and "nipype-info" in logged
    # a cached rerun's resource-monitor warnings: in the file, on the console only with -v
    assert "Could not retrieve profiling" in logged
    assert ("Could not retrieve profiling" in console) == (verbose >= 1)
    assert console.count("nipype-warning") == 1  # not printed twice
    assert "nipype-" not in capsys.readouterr().out  # Nipype's stdout handler was off
    assert nipype_logger.handlers == nipype_handlers  # and is back


# ------------------------------------------------------------------ progress
def _sleep_then(x, seconds=0.0):
    import time as _time

    _time.sleep(seconds)
    return x


def _fail(x):
    raise ValueError("boom in a test node")


def _tiny_workflow(base_dir, fail=False):
    """qsmprep_wf > sub_01_wf > qsm_baseline_wf: the node names the real workflows use."""
    from nipype.interfaces import utility as niu
    from nipype.pipeline import engine as pe

    def fn(name, seconds=0.0):
        node = pe.Node(niu.Function(input_names=["x", "seconds"], output_names=["out"],
                                    function=_sleep_then), name=name)
        node.inputs.seconds = seconds
        return node

    qsm = pe.Workflow(name="qsm_baseline_wf")
    load, inv = fn("load_gre"), fn("dipole_inversion", 1.2)
    load.inputs.x = 1
    merge = pe.Node(niu.Merge(1), name="merge_provenance")  # plumbing: not a step
    qsm.connect([(load, inv, [("out", "x")]), (inv, merge, [("out", "in1")])])
    sub = pe.Workflow(name="sub_01_wf")
    roi = fn("roi_stats_baseline")
    qc = fn("registration_qc_baseline")  # not in STEPS: shown under its own name
    if fail:
        qc = pe.Node(niu.Function(input_names=["x"], output_names=["out"], function=_fail),
                     name="registration_qc_baseline")
    sub.connect([(qsm, roi, [("dipole_inversion.out", "x")]),
                 (qsm, qc, [("dipole_inversion.out", "x")])])
    top = pe.Workflow(name="qsmprep_wf", base_dir=str(base_dir))
    top.add_nodes([sub])
    return top


def _lines(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "qsmprep.progress"]


def test_progress_lines_from_a_real_run(tmp_path, caplog, restore_nipype):
    """One line per finished step with subject, session, step, method, seconds and counter;
    plumbing nodes are not counted; a rerun reports the steps as cached."""
    caplog.set_level(logging.INFO, logger="qsmprep.progress")
    wf = _tiny_workflow(tmp_path / "work")
    options = {"inversion": "medi", "masking": "phase-quality"}
    monitor = ProgressMonitor(wf, {"01": ["baseline"]}, options=options)
    assert monitor.total == 4
    with monitor:
        wf.run(plugin="Linear", plugin_args={"status_callback": monitor})
    lines = _lines(caplog)
    assert lines[0] == "sub-01 ses-baseline load GRE echoes <1 s [1/4]"
    assert re.fullmatch(r"sub-01 ses-baseline dipole inversion \(medi\) [12] s \[2/4\]", lines[1])
    assert sorted(lines[2:]) == ["sub-01 ses-baseline ROI statistics <1 s [4/4]",
                                 "sub-01 ses-baseline registration qc <1 s [3/4]"] or sorted(
        lines[2:]) == ["sub-01 ses-baseline ROI statistics <1 s [3/4]",
                       "sub-01 ses-baseline registration qc <1 s [4/4]"]
    caplog.clear()
    wf = _tiny_workflow(tmp_path / "work")
    monitor = ProgressMonitor(wf, {"01": ["baseline"]}, options=options)
    with monitor:
        wf.run(plugin="Linear", plugin_args={"status_callback": monitor})
    assert _lines(caplog)[1] == "sub-01 ses-baseline dipole inversion (medi) cached [2/4]"


def test_crash_file_goes_to_output_logs_and_failure_is_logged(bids, tmp_path, caplog,
                                                              restore_nipype):
    """With the run configuration applied, a failing node's crash file lands in
    OUTPUT_DIR/logs/ (where docs/usage.md sends the user), and the progress line says FAILED."""
    caplog.set_level(logging.INFO, logger="qsmprep.progress")
    cfg = RunConfig.from_args(parse_args([str(bids), str(tmp_path / "out"), "participant",
                                          "-w", str(tmp_path / "work"), "--nprocs", "1",
                                          "--plugin", "Linear"]))
    configure_nipype(cfg)
    wf = _tiny_workflow(tmp_path / "work", fail=True)
    monitor = ProgressMonitor(wf, {"01": ["baseline"]}, options=cfg.to_dict())
    with monitor, pytest.raises(RuntimeError):
        wf.run(**cfg.plugin_settings(status_callback=monitor))
    crashes = list((tmp_path / "out" / "logs").glob("crash-*registration_qc_baseline*.txt"))
    assert len(crashes) == 1 and "boom in a test node" in crashes[0].read_text()
    assert not list((tmp_path / "work").rglob("crash-*"))
    assert any(re.fullmatch(r"sub-01 ses-baseline registration qc FAILED after .* \[\d/4\]; "
                            r"the crash file is in the logs folder", line) for line in _lines(caplog))


def test_heartbeat_names_running_steps(tmp_path, caplog):
    """Nothing finishes for longer than the interval: a heartbeat names the running step."""
    caplog.set_level(logging.INFO, logger="qsmprep.progress")
    wf = _tiny_workflow(tmp_path / "work")
    monitor = ProgressMonitor(wf, {"01": ["baseline"]}, options={"inversion": "medi"},
                              heartbeat_s=0.2)
    node = wf.get_node("sub_01_wf").get_node("qsm_baseline_wf").get_node("dipole_inversion")
    node._hierarchy = "qsmprep_wf.sub_01_wf.qsm_baseline_wf"  # as in the flattened graph
    with monitor:
        monitor(node, "start")
        time.sleep(0.7)
        beats = [line for line in _lines(caplog) if line.startswith("still running")]
        monitor(node, "end")
        caplog.clear()
        time.sleep(0.1)  # a line was just printed: no heartbeat right after it
        assert not [line for line in _lines(caplog) if line.startswith("still running")]
    assert beats, _lines(caplog)
    assert re.fullmatch(r"still running after <1 s: sub-01 ses-baseline dipole inversion \(medi\) "
                        r"for <1 s \[0/4 done\]", beats[0]), beats[0]
    assert 2 <= len(beats) <= 4  # about one per interval, not one per poll


def test_progress_bars_only_when_asked(tmp_path):
    """display=True draws a per-subject bar (steps done/total, elapsed, ETA); False draws none."""
    for display in (True, False):
        wf = _tiny_workflow(tmp_path / f"work{display}")
        stream = io.StringIO()
        monitor = ProgressMonitor(wf, {"01": ["baseline"]}, display=display, stream=stream)
        with monitor:
            wf.run(plugin="Linear", plugin_args={"status_callback": monitor})
        text = stream.getvalue()
        if display:
            assert "sub-01" in text and "4/4 steps" in text and "<" in text
        else:
            assert text == ""



def test_heartbeat_without_step_reports(tmp_path, caplog):
    """With a plugin that calls no status callback (SLURM), the heartbeat still proves the run
    is alive and says why no step lines come."""
    caplog.set_level(logging.INFO, logger="qsmprep.progress")
    monitor = ProgressMonitor(_tiny_workflow(tmp_path / "work"), {"01": ["baseline"]},
                              heartbeat_s=0.2, reports_steps=False, display=True,
                              stream=io.StringIO())
    with monitor:
        time.sleep(0.5)
    beats = _lines(caplog)
    assert beats and all("reports no per-step progress" in line for line in beats)
    assert monitor.display is False  # no bar that could never move


def test_option_missing_from_sections_goes_to_other(tmp_path, monkeypatch):
    """An option field that no TOML section lists (e.g. added by a later change) is still
    dumped, under [other], and read back: fails if such an option silently drops out."""
    import qsmprep.config as config_module

    sections = dict(config_module.TOML_SECTIONS)
    sections["atlas"] = tuple(n for n in sections["atlas"] if n != "syn_metric")
    monkeypatch.setattr(config_module, "TOML_SECTIONS", sections)
    (tmp_path / "bids").mkdir()
    argv = [str(tmp_path / "bids"), str(tmp_path / "out"), "participant", "--syn-metric", "mattes"]
    cfg = RunConfig.from_args(parse_args(argv))
    toml = tmp_path / "c.toml"
    toml.write_text(cfg.to_toml("x"))
    assert '[other]\nsyn_metric = "mattes"' in toml.read_text()
    assert RunConfig.from_args(parse_args([*argv[:3], "--config-file", str(toml)])) == cfg


def test_phase_heartbeat_and_stop_all(caplog):
    """Outside the workflow (input checks, group level) a heartbeat also breaks the silence;
    stop_heartbeats() ends every one still running (as run() does on errors)."""
    from qsmprep.cli.progress import Heartbeat, stop_heartbeats

    caplog.set_level(logging.INFO, logger="qsmprep.progress")
    Heartbeat("checking the inputs", interval_s=0.15).start()
    time.sleep(0.5)
    stop_heartbeats()
    lines = _lines(caplog)
    assert lines and all(re.fullmatch(r"still checking the inputs after <1 s", x) for x in lines)
    caplog.clear()
    time.sleep(0.3)
    assert not _lines(caplog)


def test_workflow_runs_with_the_graph_frozen_for_gc(bids, tmp_path, restore_nipype, monkeypatch):
    """The run's objects are frozen for the garbage collector during wf.run, and only then.

    Nipype's scheduler calls gc.collect() on every pass while a CPU is free; without the freeze
    each call scans the whole workflow graph (110-150 ms for a 4-session subject).
    """
    import gc

    from nipype.pipeline import engine as pe

    seen = {}

    def fake_run(self, plugin=None, plugin_args=None, updatehash=False):
        seen["frozen"] = gc.get_freeze_count()
        raise RuntimeError("stop here")

    monkeypatch.setattr(pe.Workflow, "run", fake_run)
    assert gc.get_freeze_count() == 0
    assert _main(_argv(bids, tmp_path)) == 1  # the stopped run is reported as failed
    assert seen["frozen"] > 1000
    assert gc.get_freeze_count() == 0


def test_method_option(bids, tmp_path, restore_nipype, capsys):
    """--method-option STEP.PARAMETER=VALUE reaches QSMOptions.method_options (JSON values,
    strings otherwise), survives config.toml, cites the option's paper, and a bad entry exits
    64 before anything is created, naming the method's parameters."""
    from qsmprep.cli.run import qsm_options

    opts = ["--method-option", "inversion.data_fidelity=l1",
            "--method-option", "inversion.l1_threshold=0.002",
            "--bf-removal", "pdf", "--method-option", "bf_removal.max_iter=150"]
    argv = [str(a) for a in _argv(bids, tmp_path, *opts, "--boilerplate-only")]
    cfg = RunConfig.from_args(parse_args(argv))
    assert qsm_options(cfg).method_options == {
        "inversion": {"data_fidelity": "l1", "l1_threshold": 0.002}, "bf_removal": {"max_iter": 150}}
    assert _main(argv) == 0
    logs = tmp_path / "out" / "logs"
    again = RunConfig.from_args(parse_args([*argv[:3], "--config-file", str(logs / "config.toml")]))
    assert again.method_options == cfg.method_options
    assert "L1-norm data fidelity" in (logs / "CITATION.md").read_text()

    bad = {"inversion.n_iters=10": "the inversion method 'medi' has no parameter 'n_iters'; its "
                                   "parameters are alpha, data_fidelity",
           "inversion=l1": "write STEP.PARAMETER=VALUE",
           "reference.x=1": "'reference' is not a step with options",
           "bf_removal.max_iter=5": "--bf-removal auto takes no options",
           "inversion.l1_threshold=big": "l1_threshold of the inversion method 'medi' takes a float"}
    for entry, message in bad.items():
        out = tmp_path / f"bad{len(message)}"
        assert _main([bids, out, "participant", "--method-option", entry]) == 64, entry
        assert message in capsys.readouterr().err, entry
        assert not out.exists()
