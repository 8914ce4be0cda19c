"""qsmprep command line (BIDS-Apps positional arguments, fMRIPrep-style options, BEP027 exits).

``get_parser()`` builds the :class:`argparse.ArgumentParser`; ``parse_args(argv)`` parses and
validates paths. Usage errors exit with code 64 (not argparse's 2), an unknown analysis level
with 17. Path problems raise :mod:`qsmprep.errors` exceptions (66 input missing, 73 output not
creatable, 64 output inside the input dataset), which ``qsmprep.cli.run.main`` turns into exit
codes. The method choices, defaults and help come from the method registry
(:mod:`qsmprep.qsm.methods`).

``--config-file FILE`` (a ``config.toml`` that every run writes to ``OUTPUT_DIR/logs/``) sets the
parser's defaults from the file before parsing, so options given on the command line win.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .. import __version__
from ..config import ANALYSIS_LEVELS, METHOD_OPTIONS, PLUGINS, method_registry, read_toml
from ..errors import (
    MissingInputError,
    OutputNotWritableError,
    UnknownAnalysisLevel,
    UsageError,
)
from ..qsm.methods import STEP_WORDS, methods

__all__ = ["get_parser", "parse_args", "apply_config_file", "ANALYSIS_LEVELS", "PLUGINS",
           "METHOD_OPTIONS"]

#: positional arguments: always from the command line, never from --config-file
POSITIONALS = ("bids_dir", "output_dir", "analysis_level")


class QSMPrepArgumentParser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors exit with BEP027 code 64 instead of 2."""

    def error(self, message):  # noqa: D401 - argparse API
        """Print the usage and ``message`` to stderr and exit with code 64.

        Parameters
        ----------
        message : str
            argparse's description of the usage error.

        Raises
        ------
        SystemExit
            Always, with :attr:`qsmprep.errors.UsageError.exit_code` (64).
        """
        self.print_usage(sys.stderr)
        self.exit(UsageError.exit_code, f"{self.prog}: error: {message}\n")


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to an option's help only where X is a real value.

    argparse's ``ArgumentDefaultsHelpFormatter`` prints ``(default: None)`` for computed
    defaults and ``(default: True)`` for ``--no-...`` switches; here flags, ``None`` and empty
    lists get no suffix, and a help text that already states its default is left as is.
    """

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (not action.option_strings or action.nargs == 0 or "default" in text.lower()
                or default is None or default is argparse.SUPPRESS or isinstance(default, bool)
                or default == []):
            return text
        return text + " (default: %(default)s)"


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


def _mem_mb(value):
    """Memory in MB as fMRIPrep's ``--mem``/``--mem-mb`` (a unit K/M/G/T may follow), in GB."""
    text = str(value).strip().upper().removesuffix("B")
    scale = {"K": 1e-6, "M": 1e-3, "G": 1.0, "T": 1e3}
    unit = text[-1] if text and text[-1] in scale else "M"
    number = text[:-1] if text and text[-1] in scale else text
    try:
        amount = float(number)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a memory size (MB, or with a unit: 16000, 16G)") from exc
    if not amount > 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be > 0")
    return round(amount * scale[unit], 3)


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
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("bids_dir", type=Path, help="root of the input BIDS dataset (read only)")
    parser.add_argument("output_dir", type=Path,
                        help="output folder for the BIDS derivatives (e.g. <bids_dir>/derivatives/qsmprep)")
    parser.add_argument("analysis_level", action=_AnalysisLevelAction, metavar="{participant,group}",
                        help="'participant': QSM and ROI tables per session; 'group': cohort statistics")
    parser.add_argument("--version", action="version", version=f"qsmprep {__version__}")
    parser.add_argument("-v", "--verbose", dest="verbose", action="count", default=0,
                        help="more console output: -v adds Nipype's workflow messages, -vv debug "
                             "messages (default: qsmprep's progress and warnings)")

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
                   metavar="N", help="threads per process (default: nprocs - 1, at most 8; 1 on "
                   "one CPU; never more than nprocs)")
    mem = g.add_mutually_exclusive_group()
    mem.add_argument("--mem-gb", "--mem_gb", dest="mem_gb", type=_positive_float,
                     metavar="GB", help="memory limit for the scheduler in GB (default: 90%% of "
                     "the available memory); more than the machine has is refused")
    mem.add_argument("--mem-mb", "--mem_mb", "--mem", dest="mem_gb", type=_mem_mb, metavar="MB",
                     help="the same limit in MB as fMRIPrep's --mem (a unit may follow: 16G)")
    g.add_argument("--plugin", choices=PLUGINS, default="MultiProc", help="Nipype execution plugin")
    g.add_argument("--plugin-args", "--plugin_args", dest="plugin_args", type=_json_arg,
                   metavar="JSON", help="extra Nipype plugin arguments, inline JSON or a JSON file "
                   "(e.g. '{\"sbatch_args\": \"-p short\"}')")
    g.add_argument("--stop-on-first-crash", dest="stop_on_first_crash", action="store_true",
                   help="stop at the first failing node instead of finishing the other participants")
    g.add_argument("--random-seed", dest="random_seed", type=_nonneg_int, metavar="SEED",
                   help="seed for registration sampling (default: qsmprep's fixed seed)")
    g.add_argument("--reports-only", dest="reports_only", action="store_true",
                   help="only rebuild the participant reports (sub-<label>.html) from the "
                   "outputs already in OUTPUT_DIR; nothing is recomputed")

    g = parser.add_argument_group("Run control, logs and progress")
    g.add_argument("--config-file", dest="config_file", type=Path, metavar="FILE",
                   help="rerun from a config.toml written by an earlier run (OUTPUT_DIR/logs/); "
                        "options given on the command line override the file")
    g.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no live progress bars on a terminal (the per-step log lines stay)")
    g.add_argument("--notrack", action="store_true",
                   help="set NIPYPE_NO_ET=1: Nipype does not contact its version-check server")
    g.add_argument("--clean-workdir", dest="clean_workdir", action="store_true",
                   help="empty the work folder before the run (do not use with parallel runs "
                        "sharing one work folder)")
    g.add_argument("--resource-monitor", dest="resource_monitor", action="store_true",
                   help="Nipype's resource monitor: peak memory and CPU of every step (in the "
                        "progress lines and the node results); it adds about 0.2 s to every "
                        "step, plumbing included (its first CPU sample)")
    g.add_argument("--write-graph", dest="write_graph", action="store_true",
                   help="write the workflow graph to OUTPUT_DIR/logs/ (.dot; .svg when Graphviz's "
                        "dot is installed)")
    g.add_argument("--boilerplate-only", "--boilerplate_only", dest="boilerplate_only",
                   action="store_true",
                   help="check the inputs, write OUTPUT_DIR/logs/CITATION.md and exit")

    g = parser.add_argument_group("QSM reconstruction")
    for opt in METHOD_OPTIONS:  # one option per step; choices = the records of qsmprep.qsm.methods
        choices, default = method_registry(opt)
        g.add_argument(f"--{opt.replace('_', '-')}", dest=opt, choices=choices, default=default,
                       help=f"{STEP_WORDS[opt]} method (default: %(default)s): "
                            + "; ".join(f"{m.name}: {m.summary}" for m in methods(opt)))
    g.add_argument("--method-option", dest="method_options", action="append", default=[],
                   metavar="STEP.PARAMETER=VALUE",
                   help="set a parameter of a step's method (repeatable), e.g. "
                        "inversion.data_fidelity=l1 or bf_removal.max_iter=150 (with --bf-removal "
                        "pdf); the parameters are those of the method records (docs/usage.md) and "
                        "are recorded in each Chimap sidecar")
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
                   help="register each session to the atlas on its own (default: longitudinal, "
                        "through an unbiased within-subject template)")
    g.add_argument("--registration-resolution", dest="registration_resolution",
                   type=_positive_float, default=None, metavar="MM",
                   help="isotropic resolution for estimating registrations (default: native)")
    g.add_argument("--syn-metric", dest="syn_metric", choices=["CC", "mattes"], default="CC",
                   help="similarity metric of the atlas -> T1w SyN: CC (neighbourhood "
                        "cross-correlation, default, most accurate) or mattes (mutual "
                        "information, ~2.5x faster); sessions without a T1w always use mattes")
    g.add_argument("--syn-region", dest="syn_region", choices=["labels", "brain"], default=None,
                   help="domain of the atlas SyN's finest level: labels (the atlas labels plus "
                        "a 20 mm margin; the coarse level still covers the whole brain; default, "
                        "about 2x faster) or brain (whole brain; the default and required with "
                        "--output-spaces)")
    g.add_argument("--output-spaces", "--output_spaces", dest="output_spaces", nargs="+",
                   default=[], metavar="SPACE[:res-N]",
                   help="also write each Chimap (and its mask) in these template spaces, resampled "
                        "once through the atlas registration, for voxel-wise studies: "
                        "MNI152NLin2009cAsym (the atlas grid) or MNI152NLin2009cAsym:res-N (N mm "
                        "grid). Default: GRE grid only")

    g = parser.add_argument_group("Group level")
    g.add_argument("--group-column", dest="group_column", default="group", metavar="COLUMN",
                   help="participants.tsv column with the group")
    g.add_argument("--covariates", nargs="+", default=[], metavar="COLUMN",
                   help="participants.tsv columns used as covariates in the mixed model "
                        "(default: none)")
    g.add_argument("--structures", nargs="+", default=None, metavar="NAME",
                   help="structures to analyse (default caudate putamen pallidum thalamus)")
    g.add_argument("--hemispheres", action="store_true",
                   help="analyse left and right separately (default: bilateral means)")
    g.add_argument("--sessions", nargs="+", type=_strip_prefix("ses-"), default=None, metavar="LABEL",
                   help="sessions in time order (default: all, natural order)")
    g.add_argument("--fdr-alpha", dest="fdr_alpha", type=_fdr_alpha, default=0.05, metavar="ALPHA",
                   help="false discovery rate level (Benjamini-Hochberg)")
    g.add_argument("--exclude-file", dest="exclude_file", type=Path, default=None, metavar="TSV",
                   help="participants/sessions to leave out of the group level: TSV with columns "
                        "participant_id, optional session_id, reason (listed in the report)")
    g.add_argument("--keep-flagged", dest="keep_flagged", action="store_true",
                   help="keep sessions flagged by registration QC (qc_flagged = 1); default: leave them out")
    g.add_argument("--measure", dest="measure", choices=["chi", "r2star"], default="chi",
                   help="value analysed: chi (susceptibility, ppb; default) or r2star (R2*, 1/s; "
                        "results in OUTPUT_DIR/group/r2star/)")
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
    """Check and absolutise the paths of a parsed namespace (raises qsmprep errors).

    Nothing is created: the output, work and pybids database folders must exist and be
    writable, or have a writable existing parent folder.

    Parameters
    ----------
    ns : argparse.Namespace
        The namespace from :func:`get_parser`'s ``parse_args``; modified in place. ``work_dir``
        defaults to ``./work`` (current working folder); ``bids_dir``, ``output_dir``,
        ``work_dir``, ``bids_database_dir``, ``bids_filter_file``, ``atlas``, ``dentate_atlas``
        and ``brain_masks`` become absolute :class:`~pathlib.Path` objects where set.

    Returns
    -------
    argparse.Namespace
        ``ns``.

    Raises
    ------
    MissingInputError
        Exit 66: the BIDS folder is missing, not a folder or not readable, or
        ``--bids-filter-file`` is not a file, or ``--atlas``, ``--dentate-atlas`` or
        ``--brain-masks`` is not a folder.
    UsageError
        Exit 64: the output folder is the input dataset, its ``derivatives/`` folder, or
        inside the dataset but not below ``derivatives/``; the work folder is the dataset or
        inside it but neither ``derivatives/`` nor below it; or ``--bids-database-dir`` is the
        dataset or inside it.
    OutputNotWritableError
        Exit 73: the output, work or pybids database folder cannot be created or is not
        writable.
    """
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
    :class:`~qsmprep.errors.MissingInputError` (66),
    :class:`~qsmprep.errors.OutputNotWritableError` (73) or :class:`~qsmprep.errors.UsageError`
    (64) for path problems. Nothing is created.

    Parameters
    ----------
    argv : list of str or None
        The arguments, without the program name; ``None`` reads ``sys.argv[1:]``. A
        ``--config-file`` among them sets the defaults first (:func:`apply_config_file`), so
        options on the command line win.

    Returns
    -------
    argparse.Namespace
        The parsed options, paths checked and absolute (:func:`validate_paths`).

    Raises
    ------
    SystemExit
        Code 64 on a usage error, 17 on an unknown analysis level (and 0 after ``--help`` or
        ``--version``).
    MissingInputError, OutputNotWritableError, UsageError
        Path problems (:func:`validate_paths`) or a bad ``--config-file``
        (:func:`apply_config_file`, :func:`qsmprep.config.read_toml`).
    """
    parser = get_parser()
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config-file", dest="config_file", type=Path)
    known, _ = pre.parse_known_args(argv)
    if known.config_file is not None:
        apply_config_file(parser, known.config_file)
    ns = parser.parse_args(argv)
    return validate_paths(ns)


def apply_config_file(parser: argparse.ArgumentParser, path) -> dict:
    """Make the options of a ``config.toml`` the defaults of ``parser``.

    Values pass through each option's type and choices, as if typed; positional arguments
    stay those of the command line.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The parser of :func:`get_parser` (modified in place).
    path : str or Path
        The ``config.toml`` (``--config-file``).

    Returns
    -------
    dict
        The defaults that were set, ``{option dest: value}``.

    Raises
    ------
    UsageError
        A value that the option would reject (exit 64); see also :func:`qsmprep.config.read_toml`.
    """
    path = Path(path).expanduser().absolute()
    values = read_toml(path)
    actions = {a.dest: a for a in parser._actions if a.option_strings}
    defaults = {}
    for key, value in values.items():
        if key in POSITIONALS:
            continue
        action = actions.get(key)
        if action is None:  # a RunConfig field without an option: read_toml knows no such key
            raise UsageError(f"--config-file {path}: {key!r} cannot be set from a file.")

        def convert(item, action=action, key=key):
            if isinstance(item, str) and action.type is not None:
                try:
                    item = action.type(item)
                except (argparse.ArgumentTypeError, TypeError, ValueError) as exc:
                    raise UsageError(f"--config-file {path}: {key} = {item!r}: {exc}") from exc
            if action.choices is not None and item not in action.choices:
                raise UsageError(f"--config-file {path}: {key} = {item!r} is not one of "
                                 f"{', '.join(map(str, action.choices))}.")
            return item

        defaults[key] = [convert(v) for v in value] if isinstance(value, list) else convert(value)
    parser.set_defaults(**defaults)
    return defaults
