"""``qsmprep`` entry point: parse -> configure -> check inputs -> build workflow -> run."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

from .. import __version__
from ..errors import QSMPrepError
from ..reports.citation import write_citation  # noqa: F401 - public name kept for callers

LOGGER = logging.getLogger("qsmprep")


def _setup_logging(verbose: int):
    level = logging.WARNING - 10 * min(int(verbose or 0), 2) if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s | %(levelname)-7s | %(name)s | %(message)s",
                        datefmt="%y%m%d-%H:%M:%S")
    for name in ("nipype.workflow", "nipype.interface", "nipype.utils"):
        logging.getLogger(name).propagate = False  # nipype has its own handler
    logging.getLogger("nipype.workflow").setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("nipype.interface").setLevel(logging.WARNING)
    logging.getLogger("nipype.utils").setLevel(logging.WARNING)


def _set_threads(omp_nthreads: int):
    """Every library in the nodes uses at most ``omp_nthreads`` threads (inherited by workers)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS",
                "QSMPREP_FFT_WORKERS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"):
        os.environ[var] = str(omp_nthreads)


def qsm_options(config):
    from ..qsm.pipeline import QSMOptions

    return QSMOptions(masking=config.masking, combination=config.combination, unwrapping=config.unwrapping,
                      bf_removal=config.bf_removal, inversion=config.inversion, reference=config.reference)


def _plugin_settings(config):
    args = dict(config.plugin_args or {})
    if config.plugin == "MultiProc":
        args.setdefault("n_procs", config.nprocs)
        args.setdefault("memory_gb", config.mem_gb)
        args.setdefault("raise_insufficient", False)
    return {"plugin": config.plugin, "plugin_args": args}


def run_participant(config) -> int:
    from nipype import config as ncfg

    from ..atlas import load_atlas
    from ..bids import (
        build_layout,
        collect_data,
        collect_participants,
        find_user_mask,
        write_bidsignore,
        write_derivatives_description,
    )
    from ..qsm.pipeline import format_consensus_report
    from ..workflows.base import init_qsmprep_wf

    options = qsm_options(config)
    LOGGER.info("qsmprep %s, participant level", __version__)
    LOGGER.info("%s", format_consensus_report(options))

    # ---- inputs: every check runs before any heavy work ----
    layout = build_layout(config.bids_dir, database_dir=config.bids_database_dir,
                          participant_labels=config.participant_label,
                          validate=not config.skip_bids_validation, bids_filters=config.bids_filters)
    selection = collect_participants(layout, config.participant_label, config.session_label,
                                     bids_filters=config.bids_filters)
    data = {}
    for sub, sessions in selection.items():
        data[sub] = [collect_data(layout, sub, ses, bids_filters=config.bids_filters,
                                  b0_strength=getattr(config, "b0_strength", None)) for ses in sessions]
        for d in data[sub]:
            if getattr(config, "brain_masks", None):
                d["user_mask"] = find_user_mask(config.brain_masks, sub, d["session"], d["shape"])
            for w in d.get("warnings", []):
                LOGGER.warning(w)
    LOGGER.info("Processing %d subject(s): %s", len(data),
                ", ".join(f"sub-{s} ({len(v)} session(s))" for s, v in data.items()))
    atlas = load_atlas(config.atlas, dentate_dir=config.dentate_atlas)

    # ---- dataset-level files (never under sub-*) ----
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_derivatives_description(out, config.bids_dir)
    write_bidsignore(out, extra=["*_field.nii.gz", "*_field.json"])
    import shutil

    tsv_dest = out / f"atlas-{atlas.name}_dseg.tsv"
    tmp = tsv_dest.with_name(f".{tsv_dest.name}.{os.getpid()}")
    shutil.copyfile(atlas.tsv, tmp)
    os.replace(tmp, tsv_dest)
    write_citation(out, options, atlas, config)

    # ---- build and run ----
    _set_threads(config.omp_nthreads)
    work = Path(config.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    ncfg.update_config({
        "execution": {
            "crashdump_dir": str(work / "crash"),
            "crashfile_format": "txt",
            "stop_on_first_crash": bool(config.stop_on_first_crash),
            "remove_unnecessary_outputs": False,
            "hash_method": "content",
        },
        "monitoring": {"enabled": False},
    })
    wf = init_qsmprep_wf(selection=data, config=config, atlas=atlas, options=options)
    wf.base_dir = str(work)
    for sub in data:
        wf.get_node(f"sub_{sub}_wf").get_node("publish").overwrite = True
    start = time.time()
    failed = False
    try:
        wf.run(**_plugin_settings(config))
    except RuntimeError as exc:
        LOGGER.error("The workflow did not finish cleanly (%s). Crash files: %s", exc, work / "crash")
        failed = True
    done = [s for s in data if (out / f"sub-{s}.html").exists()
            and (out / f"sub-{s}.html").stat().st_mtime >= start - 1]
    missing = [s for s in data if s not in done]
    for s in done:
        LOGGER.info("sub-%s: outputs in %s, report %s", s, out / f"sub-{s}", out / f"sub-{s}.html")
    if missing or failed:
        LOGGER.error("Participants that failed: %s. Fix the error in the crash files and rerun the "
                     "same command with the same -w to resume.", ", ".join(f"sub-{s}" for s in missing) or "none")
        return 1
    LOGGER.info("qsmprep finished in %.0f s", time.time() - start)
    return 0


def run_reports_only(config) -> int:
    """``--reports-only``: rewrite ``sub-<label>.html`` from OUTPUT_DIR; nothing else runs."""
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
    from ..workflows.group import run_group as _run_group

    start = time.time()
    kwargs = dict(group_column=config.group_column, covariates=tuple(config.covariates),
                  hemispheres=bool(config.hemispheres), sessions=config.sessions,
                  fdr_alpha=config.fdr_alpha)
    if config.structures:
        kwargs["structures"] = tuple(config.structures)
    written = _run_group(config.bids_dir, config.output_dir, **kwargs)
    LOGGER.info("Group level finished in %.1f s; report: %s", time.time() - start,
                written.get("report") if isinstance(written, dict) else written)
    return 0


def main(argv=None):
    from ..config import RunConfig
    from .parser import parse_args

    try:
        ns = parse_args(argv)
        _setup_logging(getattr(ns, "verbose", 0))
        config = RunConfig.from_args(ns)
        if config.analysis_level == "group":
            code = run_group(config)
        elif getattr(config, "reports_only", False):
            code = run_reports_only(config)
        else:
            code = run_participant(config)
    except QSMPrepError as exc:
        logging.getLogger("qsmprep").error("%s", exc)
        print(f"qsmprep: error: {exc}", file=sys.stderr)
        code = exc.exit_code
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
