"""qsmprep command line (BIDS-Apps positional arguments, fMRIPrep-style options, BEP027 exits).

``get_parser()`` builds the :class:`argparse.ArgumentParser`; ``parse_args(argv)`` parses and
validates paths. Usage errors exit with code 64 (not argparse's 2), an unknown analysis level
with 17. Path problems raise :mod:`qsmprep.errors` exceptions (66 input missing, 73 output not
creatable, 64 output inside the input dataset), which ``qsmprep.cli.run.main`` turns into exit
codes. The method choices come from the ``METHODS`` registries of ``qsmprep.qsm``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .. import __version__
from ..errors import (
    MissingInputError,
    OutputNotWritableError,
    UnknownAnalysisLevel,
    UsageError,
)

__all__ = ["get_parser", "parse_args", "ANALYSIS_LEVELS", "PLUGINS", "METHOD_OPTIONS"]

ANALYSIS_LEVELS = ("participant", "group")
PLUGINS = ("MultiProc", "Linear", "SLURM", "SLURMGraph")

#: CLI option -> module of ``qsmprep.qsm`` whose ``METHODS``/``DEFAULT`` give choices/default.
METHOD_OPTIONS = {
    "masking": "masking",
    "combination": "echoes",
    "unwrapping": "unwrap",
    "bf_removal": "background",
    "inversion": "inversion",
    "reference": "reference",
}


class QSMPrepArgumentParser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors exit with BEP027 code 64 instead of 2."""

    def error(self, message):  # noqa: D401 - argparse API
        self.print_usage(sys.stderr)
        self.exit(UsageError.exit_code, f"{self.prog}: error: {message}\n")


class _AnalysisLevelAction(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        if values not in ANALYSIS_LEVELS:
            parser.print_usage(sys.stderr)
            parser.exit(
                UnknownAnalysisLevel.exit_code,
                f"{parser.prog}: error: unknown analysis level {values!r}; choose one of "
                f"{', '.join(ANALYSIS_LEVELS)} (exit code {UnknownAnalysisLevel.exit_code}).\n",
            )
        setattr(namespace, self.dest, values)


def _strip_prefix(prefix):
    def _conv(value):
        value = str(value).strip()
        if value.startswith(prefix):
            value = value[len(prefix):]
        if not value.isalnum():
            raise argparse.ArgumentTypeError(
                f"invalid label {value!r}: BIDS labels are alphanumeric (give them with or "
                f"without the '{prefix}' prefix)")
        return value
    return _conv


def _positive_int(value):
    try:
        ivalue = int(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from exc
    if ivalue < 1:
        raise argparse.ArgumentTypeError(f"{value!r} must be >= 1")
    return ivalue


def _nonneg_int(value):
    try:
        ivalue = int(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from exc
    if ivalue < 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be >= 0")
    return ivalue


def _erosion(value):
    """``auto`` or a non-negative integer (``--roi-erosion``)."""
    if str(value).lower() == "auto":
        return "auto"
    return _nonneg_int(value)


def _positive_float(value):
    try:
        fvalue = float(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from exc
    if not fvalue > 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be > 0")
    return fvalue


def _unit_interval(value):
    try:
        fvalue = float(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from exc
    if not 0.0 <= fvalue <= 1.0:
        raise argparse.ArgumentTypeError(f"{value!r} must be between 0 and 1")
    return fvalue


def _fdr_alpha(value):
    fvalue = _unit_interval(value)
    if fvalue in (0.0, 1.0):
        raise argparse.ArgumentTypeError(f"{value!r} must be strictly between 0 and 1")
    return fvalue


def _json_arg(value):
    """A JSON object given inline or as the path of a JSON file."""
    text = value
    if not value.lstrip().startswith("{") and Path(value).is_file():
        text = Path(value).read_text(encoding="utf-8")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not a JSON object or JSON file: {value!r} ({exc})") from exc
    if not isinstance(obj, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object, got {type(obj).__name__}")
    return obj


def _method_registry(module_name):
    """(choices, default) of ``qsmprep.qsm.<module_name>``, read without importing numerics."""
    from ..qsm.registry import method_choices

    choices, default = method_choices(module_name)
    return list(choices), default


def get_parser() -> argparse.ArgumentParser:
    """Build the qsmprep argument parser."""
    parser = QSMPrepArgumentParser(
        prog="qsmprep",
        description=(
            "qsmprep: quantitative susceptibility mapping (QSM) of deep gray matter from BIDS "
            "multi-echo GRE data, with longitudinal atlas registration and group statistics."),
        epilog="Exit codes: 0 ok, 1 a participant failed, 16 invalid BIDS, 17 unknown analysis "
               "level, 18 selection matched nothing, 64 usage error, 65 data error, 66 input "
               "missing, 73 output not writable. See docs/usage.md.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("bids_dir", type=Path, help="root of the input BIDS dataset (read only)")
    parser.add_argument("output_dir", type=Path,
                        help="output folder for the BIDS derivatives (e.g. <bids_dir>/derivatives/qsmprep)")
    parser.add_argument("analysis_level", action=_AnalysisLevelAction, metavar="{participant,group}",
                        help="'participant': QSM and ROI tables per session; 'group': cohort statistics")
    parser.add_argument("--version", action="version", version=f"qsmprep {__version__}")
    parser.add_argument("-v", "--verbose", dest="verbose", action="count", default=0,
                        help="more log output (-v info, -vv debug)")

    g = parser.add_argument_group("Selecting data")
    g.add_argument("--participant-label", "--participant_label", dest="participant_label",
                   nargs="+", type=_strip_prefix("sub-"), metavar="LABEL",
                   help="participants to process (with or without 'sub-'); default all")
    g.add_argument("--session-label", "--session_label", dest="session_label", nargs="+",
                   type=_strip_prefix("ses-"), metavar="LABEL",
                   help="sessions to process (with or without 'ses-'); default all")
    g.add_argument("--bids-filter-file", "--bids_filter_file", dest="bids_filter_file", type=Path,
                   metavar="FILE",
                   help="JSON with pybids entities per input ('megre', 't1w'), and the input "
                        "mapping for non-MEGRE GRE naming (docs/usage.md)")
    g.add_argument("--skip-bids-validation", "--skip_bids_validation", dest="skip_bids_validation",
                   action="store_true", help="do not validate the input file names")
    g.add_argument("--bids-database-dir", dest="bids_database_dir", type=Path, metavar="DIR",
                   help="reusable pybids database folder (built once, shared by array jobs)")
    g.add_argument("--b0-strength", dest="b0_strength", type=_positive_float, metavar="TESLA",
                   help="field strength when sidecars lack MagneticFieldStrength (overrides them)")

    g = parser.add_argument_group("Execution")
    g.add_argument("-w", "--work-dir", dest="work_dir", type=Path, metavar="DIR",
                   help="Nipype work folder (reuse it to resume); default ./work")
    g.add_argument("--nprocs", "--n-cpus", "--n_cpus", "--nthreads", dest="nprocs",
                   type=_positive_int, metavar="N", help="CPUs for the whole run (default: all available)")
    g.add_argument("--omp-nthreads", "--omp_nthreads", dest="omp_nthreads", type=_positive_int,
                   metavar="N", help="threads per process (default: min(8, nprocs); never more than nprocs)")
    g.add_argument("--mem-gb", "--mem_gb", "--mem", dest="mem_gb", type=_positive_float,
                   metavar="GB", help="memory limit for the scheduler (default: 90%% of available)")
    g.add_argument("--plugin", choices=PLUGINS, default="MultiProc", help="Nipype execution plugin")
    g.add_argument("--plugin-args", "--plugin_args", dest="plugin_args", type=_json_arg,
                   metavar="JSON", help="extra Nipype plugin arguments, inline JSON or a JSON file "
                   "(e.g. '{\"sbatch_args\": \"-p short\"}')")
    g.add_argument("--stop-on-first-crash", dest="stop_on_first_crash", action="store_true",
                   help="stop at the first failing node instead of finishing the other participants")
    g.add_argument("--random-seed", dest="random_seed", type=_nonneg_int, metavar="SEED",
                   help="seed for registration sampling (default: qsmprep's fixed seed)")

    g = parser.add_argument_group("QSM reconstruction")
    for opt, module in METHOD_OPTIONS.items():
        choices, default = _method_registry(module)
        g.add_argument(f"--{opt.replace('_', '-')}", dest=opt, choices=choices, default=default,
                       help=f"{module} method (qsmprep.qsm.{module}.METHODS)")
    g.add_argument("--brain-masks", dest="brain_masks", type=Path, metavar="DIR",
                   help="user-supplied brain masks on the GRE grid, laid out as BIDS derivatives "
                        "(DIR/sub-<l>/[ses-<l>/]anat/sub-<l>[_ses-<l>]*_mask.nii.gz); replaces --masking")

    g = parser.add_argument_group("Atlas and ROIs")
    g.add_argument("--atlas", type=Path, metavar="DIR",
                   help="atlas folder with tpl-*_T1w, atlas-*_dseg.nii.gz and .tsv (default: built-in DGM atlas)")
    g.add_argument("--dentate-atlas", dest="dentate_atlas", type=Path, metavar="DIR",
                   help="Diedrichsen 2009 cerebellar nuclei folder, adds the dentate nuclei")
    g.add_argument("--roi-erosion", dest="roi_erosion", type=_erosion, default="auto",
                   metavar="N|auto",
                   help="erode each ROI by N voxels before statistics; auto (default): 1 voxel "
                        "when the GRE voxel is <= 1.5 mm in every dimension, else 0")
    g.add_argument("--roi-min-reliability", dest="roi_min_reliability", type=_unit_interval,
                   default=None, metavar="X",
                   help="exclude voxels whose field reliability (0..1) is below X")
    g.add_argument("--no-longitudinal", dest="longitudinal", action="store_false",
                   help="register each session to the atlas on its own (no within-subject template)")
    g.add_argument("--registration-resolution", dest="registration_resolution",
                   type=_positive_float, default=None, metavar="MM",
                   help="isotropic resolution for estimating registrations (default: native)")
    g.add_argument("--syn-metric", dest="syn_metric", choices=["CC", "mattes"], default="CC",
                   help="similarity metric of the atlas -> T1w SyN: CC (neighbourhood "
                        "cross-correlation, default, most accurate) or mattes (mutual "
                        "information, ~2.5x faster); sessions without a T1w always use mattes")

    g = parser.add_argument_group("Group level")
    g.add_argument("--group-column", dest="group_column", default="group", metavar="COLUMN",
                   help="participants.tsv column with the group")
    g.add_argument("--covariates", nargs="+", default=[], metavar="COLUMN",
                   help="participants.tsv columns used as covariates in the mixed model")
    g.add_argument("--structures", nargs="+", default=None, metavar="NAME",
                   help="structures to analyse (default caudate putamen pallidum thalamus)")
    g.add_argument("--hemispheres", action="store_true",
                   help="analyse left and right separately (default: bilateral means)")
    g.add_argument("--sessions", nargs="+", type=_strip_prefix("ses-"), default=None, metavar="LABEL",
                   help="sessions in time order (default: all, natural order)")
    g.add_argument("--fdr-alpha", dest="fdr_alpha", type=_fdr_alpha, default=0.05, metavar="ALPHA",
                   help="false discovery rate level (Benjamini-Hochberg)")
    return parser


def _is_within(path: Path, parent: Path) -> bool:
    try:
        path.relative_to(parent)
        return True
    except ValueError:
        return False


def _check_creatable(path: Path, what: str):
    """The folder exists and is writable, or can be created (nothing is created here)."""
    p = path
    while not p.exists():
        if p.parent == p:
            break
        p = p.parent
    if not p.is_dir():
        raise OutputNotWritableError(
            f"Cannot create the {what} {path}: {p} exists and is not a folder. Choose another path.")
    if not os.access(p, os.W_OK | os.X_OK):
        raise OutputNotWritableError(
            f"Cannot create the {what} {path}: {p} is not writable. Choose a writable folder "
            "(in Docker, mount it without ':ro').")


def validate_paths(ns: argparse.Namespace) -> argparse.Namespace:
    """Check and absolutise the paths of a parsed namespace (raises qsmprep errors)."""
    bids_dir = Path(ns.bids_dir).expanduser().absolute()
    if not bids_dir.is_dir():
        raise MissingInputError(
            f"The BIDS directory {bids_dir} does not exist or is not a folder. Check the first argument"
            " (in Docker, check the -v mount).")
    if not os.access(bids_dir, os.R_OK | os.X_OK):
        raise MissingInputError(f"The BIDS directory {bids_dir} is not readable.")
    output_dir = Path(ns.output_dir).expanduser().absolute()
    rb, ro = bids_dir.resolve(), output_dir.resolve()
    if ro == rb or (_is_within(ro, rb) and not _is_within(ro, rb / "derivatives")) or ro == rb / "derivatives":
        raise UsageError(
            f"The output folder {output_dir} is the input dataset or inside it; qsmprep never writes "
            f"into raw data. Use e.g. {bids_dir / 'derivatives' / 'qsmprep'} or a folder elsewhere.")
    _check_creatable(output_dir, "output folder")
    ns.bids_dir, ns.output_dir = bids_dir, output_dir

    if ns.work_dir is None:
        ns.work_dir = Path.cwd() / "work"
    ns.work_dir = Path(ns.work_dir).expanduser().absolute()
    if _is_within(ns.work_dir.resolve(), rb) and not _is_within(ns.work_dir.resolve(), rb / "derivatives"):
        raise UsageError(
            f"The work folder {ns.work_dir} is inside the input dataset {bids_dir}; use -w elsewhere.")
    _check_creatable(ns.work_dir, "work folder")
    if ns.bids_database_dir is not None:
        ns.bids_database_dir = Path(ns.bids_database_dir).expanduser().absolute()
        if _is_within(ns.bids_database_dir.resolve(), rb):
            raise UsageError(
                f"--bids-database-dir {ns.bids_database_dir} is inside the input dataset; put it in "
                "the work folder or elsewhere.")
        _check_creatable(ns.bids_database_dir, "pybids database folder")

    for attr, what in (("bids_filter_file", "--bids-filter-file"), ("atlas", "--atlas"),
                       ("dentate_atlas", "--dentate-atlas"), ("brain_masks", "--brain-masks")):
        value = getattr(ns, attr)
        if value is None:
            continue
        value = Path(value).expanduser().absolute()
        ok = value.is_file() if attr == "bids_filter_file" else value.is_dir()
        if not ok:
            kind = "file" if attr == "bids_filter_file" else "folder"
            raise MissingInputError(f"{what} {value} is not an existing {kind}.")
        setattr(ns, attr, value)
    return ns


def parse_args(argv=None) -> argparse.Namespace:
    """Parse ``argv`` (default ``sys.argv[1:]``) and validate paths.

    Exits 64 on usage errors and 17 on an unknown analysis level (argparse stage); raises
    :class:`~qsmprep.errors.MissingInputError` (66), :class:`~qsmprep.errors.OutputNotWritableError`
    (73) or :class:`~qsmprep.errors.UsageError` (64) for path problems. Nothing is created.
    """
    parser = get_parser()
    ns = parser.parse_args(argv)
    return validate_paths(ns)
