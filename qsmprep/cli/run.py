"""``qsmprep`` entry point: parse -> configure -> logs -> check inputs -> build workflow -> run.

Every value comes from one :class:`~qsmprep.config.RunConfig`: the plugin arguments
(``RunConfig.plugin_settings``), Nipype's settings (``RunConfig.nipype_config``: crash files in
``OUTPUT_DIR/logs/``) and ``OUTPUT_DIR/logs/config.toml`` (``RunConfig.to_toml``).
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from .. import __version__
from ..errors import OutputNotWritableError, QSMPrepError
from ..reports.citation import write_citation  # noqa: F401 - public name kept for callers

LOGGER = logging.getLogger("qsmprep")
#: seconds without a console line before the running steps are logged (under a minute, so a
#: run is never silent for 60 s even with the heartbeat's polling delay)
HEARTBEAT_S = 59.0


def _set_threads(omp_nthreads: int):
    """Every library in the nodes uses at most ``omp_nthreads`` threads (inherited by workers)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS",
                "QSMPREP_FFT_WORKERS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"):
        os.environ[var] = str(omp_nthreads)


def qsm_options(config):
    """The reconstruction methods of a run as :class:`~qsmprep.qsm.pipeline.QSMOptions`.

    Parameters
    ----------
    config : qsmprep.config.RunConfig

    Returns
    -------
    qsmprep.qsm.pipeline.QSMOptions
    """
    from ..qsm.pipeline import QSMOptions

    return QSMOptions(masking=config.masking, combination=config.combination, unwrapping=config.unwrapping,
                      bf_removal=config.bf_removal, inversion=config.inversion, reference=config.reference,
                      method_options=config.method_option_dict())


def configure_nipype(config) -> None:
    """Apply ``config.nipype_config()`` to Nipype (crash files, log levels, resource monitor).

    Parameters
    ----------
    config : qsmprep.config.RunConfig
    """
    from nipype import config as ncfg
    from nipype import logging as nlogging

    sections = config.nipype_config()
    ncfg.update_config(sections)  # applies execution and logging (Nipype skips monitoring)
    for key, value in sections["monitoring"].items():
        ncfg.set("monitoring", key, value)
    ncfg.resource_monitor = bool(config.resource_monitor)
    nlogging.update_logging(ncfg)
    if sections["execution"].get("hash_method") == "content":
        from .filehash import install

        install()  # each input file's MD5 once per file version and process


def logs_dir(config) -> Path:
    """``OUTPUT_DIR/logs``, created.

    Parameters
    ----------
    config : qsmprep.config.RunConfig

    Returns
    -------
    pathlib.Path

    Raises
    ------
    OutputNotWritableError
        Exit 73: the folder cannot be created.
    """
    logs = Path(config.output_dir) / "logs"
    try:
        logs.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputNotWritableError(
            f"Cannot create {logs} ({exc.strerror}). Choose a writable output folder.") from exc
    return logs


def write_config(config, logs: Path, run_id: str) -> Path:
    """Write ``logs/config_<run_id>.toml`` and ``logs/config.toml`` (the latest run's copy).

    Parameters
    ----------
    config : qsmprep.config.RunConfig
    logs : pathlib.Path
        The log folder.
    run_id : str
        From :func:`qsmprep.cli.logs.new_run_id`.

    Returns
    -------
    pathlib.Path
        ``logs/config.toml``.
    """
    text = config.to_toml(run_id)
    per_run = logs / f"config_{run_id}.toml"
    per_run.write_text(text, encoding="utf-8")
    latest = logs / "config.toml"
    tmp = logs / f".config.toml.{os.getpid()}"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, latest)
    return latest


def clean_workdir(config) -> int:
    """Empty the work folder (``--clean-workdir``), keeping a pybids database inside it.

    The work folder is known not to contain the input or output folders (checked by
    :meth:`RunConfig.validate`).

    Parameters
    ----------
    config : qsmprep.config.RunConfig

    Returns
    -------
    int
        The number of entries removed.
    """
    work = Path(config.work_dir)
    if not work.is_dir():
        return 0
    keep = Path(config.bids_database_dir).resolve() if config.bids_database_dir else None
    removed = 0
    for child in work.iterdir():
        if keep is not None and (child.resolve() == keep or keep.is_relative_to(child.resolve())):
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
        removed += 1
    return removed


def write_workflow_graph(wf, logs: Path) -> Path:
    """Write ``logs/workflow_graph.dot`` (and ``.svg`` when Graphviz's ``dot`` is installed).

    Parameters
    ----------
    wf : nipype.pipeline.engine.Workflow
    logs : pathlib.Path
        The log folder.

    Returns
    -------
    pathlib.Path
        The ``.svg`` when written, else the ``.dot``.
    """
    fmt = "svg" if shutil.which("dot") else "dot"
    wf.write_graph(dotfilename=str(logs / "workflow_graph.dot"), graph2use="colored",
                   format=fmt, simple_form=True)
    out = logs / f"workflow_graph.{fmt}"
    if fmt == "dot":
        LOGGER.info("Workflow graph: %s (install Graphviz to also get an SVG)", out)
    else:
        LOGGER.info("Workflow graph: %s", out)
    return out


def run_participant(config, inputs_ok=None) -> int:
    """The participant level: check inputs, write dataset-level files, build and run.

    Parameters
    ----------
    config : qsmprep.config.RunConfig
    inputs_ok : callable or None
        Called once every input check has passed (the log moves into ``OUTPUT_DIR/logs``).

    Returns
    -------
    int
        0, or 1 when a subject failed (its outputs are not published).

    Raises
    ------
    QSMPrepError
        An input, atlas or output-folder problem, before any node runs.
    """
    from ..atlas import load_atlas
    from ..bids.collect import collect_data, collect_participants
    from ..bids.layout import build_layout
    from ..bids.metadata import find_user_mask
    from ..derivatives.dataset import write_dataset_files
    from ..config import CALLBACK_PLUGINS
    from ..qsm.pipeline import format_consensus_report
    from ..workflows.base import _session_id, init_qsmprep_wf
    from .progress import Heartbeat, ProgressMonitor, format_seconds
    from ..publish import marker_path
    from . import scheduler
    from .execution import lock_subjects

    options = qsm_options(config)
    LOGGER.info("%s", format_consensus_report(options))

    # ---- inputs: every check runs before any heavy work ----
    from ..preflight import check_output_dir, run_preflight

    check_output_dir(config.output_dir)  # another pipeline's folder: 64, nothing written
    inputs_beat = Heartbeat("checking the inputs (BIDS index, metadata, atlas)", HEARTBEAT_S).start()
    layout = build_layout(config.bids_dir, database_dir=config.bids_database_dir,
                          participant_labels=config.participant_label,
                          validate=not config.skip_bids_validation, bids_filters=config.bids_filters)
    selection = collect_participants(layout, config.participant_label, config.session_label,
                                     bids_filters=config.bids_filters)
    data = {}
    for sub, sessions in selection.items():
        data[sub] = [collect_data(layout, sub, ses, bids_filters=config.bids_filters,
                                  b0_strength=config.b0_strength) for ses in sessions]
        for d in data[sub]:
            if config.brain_masks:
                d["user_mask"] = find_user_mask(config.brain_masks, sub, d["session"], d["shape"])
            for w in d.get("warnings", []):
                LOGGER.warning(w)
    run_preflight(data, workers=config.nprocs)  # every image read once: 65/66 before any node runs (qsmprep/preflight.py)
    LOGGER.info("Processing %d subject(s): %s", len(data),
                ", ".join(f"sub-{s} ({len(v)} session(s))" for s, v in data.items()))
    lock_subjects(config, data)  # exit 75 at once if another run holds one of these subjects
    atlas = load_atlas(config.atlas, dentate_dir=config.dentate_atlas)
    inputs_beat.stop()

    # ---- dataset-level files (never under sub-*) ----
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if inputs_ok is not None:  # the run's log and config.toml move into OUTPUT_DIR/logs now
        inputs_ok()
    write_dataset_files(out, config.bids_dir, atlas)

    # ---- build ----
    _set_threads(config.omp_nthreads)
    configure_nipype(config)
    work = Path(config.work_dir)
    if config.clean_workdir:
        LOGGER.info("--clean-workdir: removed %d entries from %s", clean_workdir(config), work)
    work.mkdir(parents=True, exist_ok=True)
    wf = init_qsmprep_wf(selection=data, config=config, atlas=atlas, options=options)
    wf.base_dir = str(work)
    for sub in data:
        wf.get_node(f"sub_{sub}_wf").get_node("publish").overwrite = True
    if config.write_graph:
        write_workflow_graph(wf, out / "logs")
    write_citation(out, options, atlas, config)
    if config.boilerplate_only:
        LOGGER.info("--boilerplate-only: methods text in %s; nothing was run.", out / "logs" / "CITATION.md")
        return 0

    # ---- run ----
    crash_dir = out / "logs"
    monitor = ProgressMonitor(
        wf, {sub: [_session_id(d) for d in sessions] for sub, sessions in data.items()},
        options=config.to_dict(), heartbeat_s=HEARTBEAT_S,
        display=bool(config.progress) and sys.stderr.isatty(),
        reports_steps=config.plugin in CALLBACK_PLUGINS)
    LOGGER.info("Running %d steps (plugin %s, %d CPUs, %.1f GB); work folder %s", monitor.total,
                config.plugin, config.nprocs, config.mem_gb, work)
    start = time.time()
    failed = False
    # Nipype's scheduler calls gc.collect() on every pass while a CPU is free; with the
    # workflow's ~230,000 objects (4 sessions) each call took 110-150 ms. Freezing what exists
    # now (the graph lives for the whole run anyway) leaves only new objects to scan.
    gc.freeze()
    try:
        with monitor:
            # MultiProc: Nipype's plugin, woken when a node finishes (cli/scheduler.py)
            wf.run(**scheduler.plugin_settings(config.plugin_settings(status_callback=monitor)))
    except RuntimeError as exc:
        LOGGER.error("The workflow did not finish cleanly (%s). Crash files: %s", exc, crash_dir)
        failed = True
    finally:
        gc.unfreeze()
    done = [s for s in data if marker_path(out, s).exists()  # published all or nothing
            and marker_path(out, s).stat().st_mtime >= start - 1]
    missing = [s for s in data if s not in done]
    for s in done:
        LOGGER.info("sub-%s: outputs in %s, report %s", s, out / f"sub-{s}", out / f"sub-{s}.html")
    if config.resource_monitor:
        LOGGER.info("Resource monitor: %s", work / wf.name / "resource_monitor.json")
    if missing or failed:
        LOGGER.error("Participants that failed: %s. Fix the error in the crash files and rerun the "
                     "same command with the same -w to resume.", ", ".join(f"sub-{s}" for s in missing) or "none")
        return 1
    LOGGER.info("qsmprep finished in %s (%d steps)", format_seconds(time.time() - start), monitor.done)
    return 0


def run_reports_only(config) -> int:
    """``--reports-only``: rewrite ``sub-<label>.html`` from OUTPUT_DIR; nothing else runs.

    Parameters
    ----------
    config : qsmprep.config.RunConfig

    Returns
    -------
    int
        0.

    Raises
    ------
    MissingInputError
        Exit 66: no participant-level outputs for a requested subject.
    """
    from ..errors import MissingInputError
    from ..reports.rebuild import rebuild_report, subjects_with_outputs

    out = Path(config.output_dir)
    found = subjects_with_outputs(out)
    wanted = list(config.participant_label or found)
    missing = [s for s in wanted if s not in found]
    if not found or missing:
        raise MissingInputError(
            f"--reports-only: no qsmprep outputs in {out} for "
            f"{', '.join('sub-' + s for s in (missing or wanted)) or 'any subject'}. Run the "
            "participant level without --reports-only first.")
    for sub in wanted:
        start = time.time()
        path = rebuild_report(out, sub, bids_dir=config.bids_dir)
        LOGGER.info("sub-%s: report rebuilt from existing outputs in %.1f s: %s", sub,
                    time.time() - start, path)
    return 0


def run_group(config) -> int:
    """The group level (:func:`qsmprep.group.run_group`) with the run's options.

    Parameters
    ----------
    config : qsmprep.config.RunConfig

    Returns
    -------
    int
        0.
    """
    from ..group import run_group as _run_group
    from .progress import Heartbeat

    Heartbeat("running the group analysis", HEARTBEAT_S).start()  # stopped when run() ends
    start = time.time()
    kwargs = dict(group_column=config.group_column, covariates=tuple(config.covariates),
                  hemispheres=bool(config.hemispheres), sessions=config.sessions,
                  fdr_alpha=config.fdr_alpha, participant_label=config.participant_label or None,
                  exclude_file=config.exclude_file, keep_flagged=bool(config.keep_flagged),
                  measure=config.measure)
    if config.structures:
        kwargs["structures"] = tuple(config.structures)
    written = _run_group(config.bids_dir, config.output_dir, **kwargs)
    LOGGER.info("Group level finished in %.1f s; report: %s", time.time() - start,
                written.get("report") if isinstance(written, dict) else written)
    return 0


def run(argv=None) -> int:
    """Parse ``argv``, set up ``OUTPUT_DIR/logs/``, run the requested level.

    Parameters
    ----------
    argv : list of str or None
        Command-line arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit code (docs/usage.md, "Exit codes").
    """
    from ..config import RunConfig
    from .logs import new_run_id, setup_logging
    from .parser import parse_args

    logging_setup = None
    staging = None
    try:
        ns = parse_args(argv)
        if ns.notrack:  # before Nipype is imported (its version check reads it at import)
            os.environ["NIPYPE_NO_ET"] = "1"
        config = RunConfig.from_args(ns)
        from .execution import run_guarded

        run_id = new_run_id()
        participant = config.analysis_level != "group" and not config.reports_only
        if participant:
            # Nothing is written into OUTPUT_DIR before the inputs pass their checks: the log
            # and config.toml start in a private folder and move to OUTPUT_DIR/logs afterwards.
            from ..preflight import check_output_dir

            check_output_dir(config.output_dir)
            staging = Path(tempfile.mkdtemp(prefix="qsmprep-logs-"))
            logs = staging
        else:
            logs = logs_dir(config)
        # the group level never imports Nipype (tests/cli/test_startup.py checks it)
        logging_setup = setup_logging(config.verbose, logs / f"qsmprep_{run_id}.log",
                                      nipype=config.analysis_level != "group")
        toml_path = write_config(config, logs, run_id)
        LOGGER.info("qsmprep %s, %s level, run %s", __version__, config.analysis_level, run_id)
        if participant:
            def inputs_ok():
                final = logs_dir(config)
                for item in sorted(staging.iterdir()):
                    shutil.move(str(item), str(final / item.name))
                logging_setup.relocate(final / f"qsmprep_{run_id}.log")
                LOGGER.info("Log file %s; configuration %s%s", logging_setup.log_file,
                            final / toml_path.name,
                            f" (read from {ns.config_file}, command line wins)" if ns.config_file else "")

            code = run_guarded(lambda c: run_participant(c, inputs_ok=inputs_ok), config)
        else:
            LOGGER.info("Log file %s; configuration %s%s", logging_setup.log_file, toml_path,
                        f" (read from {ns.config_file}, command line wins)" if ns.config_file else "")
            code = run_guarded(run_group if config.analysis_level == "group" else run_reports_only, config)
    except QSMPrepError as exc:
        if logging_setup is not None:
            LOGGER.error("%s", exc)
        else:
            print(f"qsmprep: error: {exc}", file=sys.stderr)
        code = exc.exit_code
    except Exception:
        if logging_setup is None:
            raise
        LOGGER.critical("qsmprep stopped on an unexpected error (please report it with the log "
                        "file %s):", logging_setup.log_file, exc_info=True)
        code = 1
    finally:
        from .progress import stop_heartbeats

        stop_heartbeats()
        if logging_setup is not None:
            logging_setup.close()
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)  # inputs failed: nothing kept, nothing written
    return code


def main(argv=None):
    """Console entry point: :func:`run`, then exit with its code.

    Parameters
    ----------
    argv : list of str or None
        Command-line arguments (default ``sys.argv[1:]``).
    """
    sys.exit(run(argv))


if __name__ == "__main__":  # pragma: no cover
    main()
