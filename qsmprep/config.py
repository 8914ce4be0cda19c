"""One immutable run configuration, validated once and passed explicitly.

``RunConfig.from_args(namespace)`` turns the parsed command line (see
:mod:`qsmprep.cli.parser`) into a frozen dataclass; the workflow factories receive its fields
as keyword arguments (no global configuration singleton). It is the only configuration of a
run: Nipype's settings (:meth:`RunConfig.nipype_config`), the plugin arguments
(:meth:`RunConfig.plugin_settings`) and ``OUTPUT_DIR/logs/config.toml``
(:meth:`RunConfig.to_toml`, read back by ``--config-file``) are all derived from it.

This module imports nothing from :mod:`qsmprep.cli`: the command line depends on the
configuration, never the reverse (the analysis levels, plugins and method options live here).

Resource defaults come from what this process may really use: CPU affinity, the cgroup CPU
quota (containers), ``SLURM_CPUS_PER_TASK``/``SLURM_MEM_PER_NODE``; memory from psutil's
*available* memory and the cgroup limit. ``omp_nthreads`` never exceeds ``nprocs``.
"""

from __future__ import annotations

import math
import os
import textwrap
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import UsageError
from .qsm.methods import CLI_STEPS, STEP_MODULES, STEPS
from .qsm.methods import default as default_method
from .qsm.methods import names as method_names

__all__ = ["RunConfig", "available_cpus", "available_memory_gb", "total_memory_gb",
           "ANALYSIS_LEVELS", "PLUGINS", "METHOD_OPTIONS", "TOML_SECTIONS", "method_registry",
           "read_toml"]

ANALYSIS_LEVELS = ("participant", "group")
PLUGINS = ("MultiProc", "Linear", "SLURM", "SLURMGraph")
#: the plugins that call Nipype's ``status_callback`` (per-step progress lines)
CALLBACK_PLUGINS = ("MultiProc", "Linear")
#: seconds between two passes of Nipype's MultiProc scheduler (Nipype's default is 2)
MULTIPROC_POLL_S = 0.2

#: CLI option (= step of :mod:`qsmprep.qsm.methods`) -> module of :mod:`qsmprep.qsm` with its
#: functions. Choices and defaults come from the method registry (:func:`method_registry`).
METHOD_OPTIONS = {step: STEP_MODULES[step] for step in CLI_STEPS}

#: Sections of ``config.toml`` and the RunConfig fields (command-line options) in each.
TOML_SECTIONS = {
    "inputs": ("bids_dir", "output_dir", "analysis_level", "participant_label", "session_label",
               "bids_filter_file", "skip_bids_validation", "bids_database_dir", "b0_strength"),
    "execution": ("work_dir", "nprocs", "omp_nthreads", "mem_gb", "plugin", "plugin_args",
                  "stop_on_first_crash", "random_seed", "verbose", "progress", "notrack",
                  "clean_workdir", "resource_monitor", "write_graph", "boilerplate_only", "reports_only"),
    "qsm": ("masking", "combination", "unwrapping", "bf_removal", "inversion", "reference",
            "brain_masks", "output_spaces", "method_options"),
    "atlas": ("atlas", "dentate_atlas", "roi_erosion", "roi_min_reliability", "longitudinal",
              "registration_resolution", "syn_metric", "syn_region"),
    "group": ("group_column", "covariates", "structures", "hemispheres", "sessions", "fdr_alpha",
              "exclude_file", "keep_flagged", "measure"),
}
#: RunConfig fields computed at start-up, not options (``[run]`` table of config.toml)
DERIVED_FIELDS = ("bids_filters", "version")
#: section for option fields that no TOML_SECTIONS entry lists yet (so none is ever left out)
OTHER_SECTION = "other"
SYN_METRICS = ("CC", "mattes")
#: domains of the atlas SyN (``--syn-region``; qsmprep.workflows.longitudinal)
SYN_REGIONS = ("labels", "brain")
#: smallest memory limit accepted (a value below it is a unit mistake, e.g. ``--mem 16``)
MIN_MEM_GB = 0.5


def parse_method_options(entries, chosen=None) -> dict:
    """Parse ``--method-option STEP.PARAMETER=VALUE`` entries and check them against the registry.

    ``VALUE`` is read as JSON when it is JSON (``0.002``, ``true``, ``null``, ``[4, 2]``) and as
    a string otherwise (``l1``). ``PARAMETER`` must be a tunable parameter of the method chosen
    for ``STEP`` (:attr:`qsmprep.qsm.methods.Method.parameters`; the relaxometry step uses its
    default method). ``--bf-removal auto`` takes none: it runs PDF or V-SHARP depending on the
    voxel size, so name the method to tune it.

    Parameters
    ----------
    entries : iterable of str
        The entries.
    chosen : dict, optional
        Step -> method name (default: every step's default method).

    Returns
    -------
    dict
        Step -> ``{parameter: value}``.

    Raises
    ------
    UsageError
        For a malformed entry, a step without options or a parameter the method does not have.

    Examples
    --------
    >>> parse_method_options(["inversion.data_fidelity=l1", "inversion.l1_threshold=0.002"])
    {'inversion': {'data_fidelity': 'l1', 'l1_threshold': 0.002}}
    """
    import json

    from .qsm.methods import OPTION_STEPS as steps
    from .qsm.methods import find as find_method

    chosen = dict(chosen or {})
    out: dict[str, dict] = {}
    for entry in entries or ():
        key, sep, raw = str(entry).partition("=")
        step, dot, param = key.strip().partition(".")
        if not (sep and dot and step and param):
            raise UsageError(f"--method-option {entry!r}: write STEP.PARAMETER=VALUE, e.g. "
                             "inversion.data_fidelity=l1.")
        if step not in steps:
            raise UsageError(f"--method-option {entry!r}: {step!r} is not a step with options; "
                             f"use one of {', '.join(steps)}.")
        name = chosen.get(step) or default_method(step)
        rec = find_method(step, name)
        params = dict(rec.parameters) if rec is not None else {}
        if step == "bf_removal" and name == "auto":
            raise UsageError(f"--method-option {entry!r}: --bf-removal auto takes no options (it "
                             "runs pdf or vsharp depending on the voxel size); choose "
                             "--bf-removal pdf or --bf-removal vsharp to tune it.")
        if param not in params:
            raise UsageError(f"--method-option {entry!r}: the {step} method {name!r} has no "
                             f"parameter {param!r}; its parameters are "
                             f"{', '.join(sorted(params)) or 'none'}.")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        default = params[param]
        if default is not None and not _same_kind(value, default):
            raise UsageError(f"--method-option {entry!r}: {param} of the {step} method {name!r} "
                             f"takes a {type(default).__name__} (default {default!r}), got "
                             f"{value!r}.")
        out.setdefault(step, {})[param] = value
    return out


def _same_kind(value, default) -> bool:
    """Whether ``value`` can stand for ``default`` (an int for a float; never a bool for a number)."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, (int, float)):
        return isinstance(value, (int, float))
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    return isinstance(value, type(default))


def method_registry(step: str) -> tuple[list, str]:
    """Choices and default of one reconstruction step, from :data:`qsmprep.qsm.methods.REGISTRY`.

    Reading the registry imports no numerical code (``qsmprep --help`` stays fast).

    Parameters
    ----------
    step : str
        A step of :data:`qsmprep.qsm.methods.STEPS` (a key of :data:`METHOD_OPTIONS`) or its
        module name (a value of :data:`METHOD_OPTIONS`).

    Returns
    -------
    choices : list of str
        The step's method names, in registry order.
    default : str
        The step's default method.

    Examples
    --------
    >>> method_registry("bf_removal")
    (['vsharp', 'pdf', 'resharp', 'lbv', 'auto'], 'auto')
    """
    if step not in STEPS:
        step = {module: s for s, module in STEP_MODULES.items()}.get(step, step)
    return list(method_names(step)), default_method(step)


def _cgroup_cpu_quota() -> float | None:
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            return float(quota) / float(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        if quota > 0:
            return quota / period
    except (OSError, ValueError):
        pass
    return None


def available_cpus() -> int:
    """CPUs this process may use: the default of ``--nprocs``.

    Returns
    -------
    int
        The smallest of the CPU affinity, the cgroup CPU quota (containers) and
        ``SLURM_CPUS_PER_TASK``; at least 1.
    """
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        import psutil

        n = psutil.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota:
        n = min(n, max(1, math.floor(quota)))
    slurm = os.environ.get("SLURM_CPUS_PER_TASK")
    if slurm and slurm.isdigit():
        n = min(n, int(slurm))
    return max(1, n)


def available_memory_gb() -> float:
    """Memory this process may use now: the basis of the ``--mem-gb`` default.

    Returns
    -------
    float
        GB (2**30 bytes): the smallest of psutil's *available* memory, the cgroup limit minus
        the cgroup's usage, and ``SLURM_MEM_PER_NODE``.
    """
    import psutil

    avail = psutil.virtual_memory().available
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            raw = Path(limit_file).read_text().strip()
            if raw != "max" and int(raw) < 1 << 60:
                used = int(Path(usage_file).read_text().strip())
                avail = min(avail, max(int(raw) - used, 0))
                break
        except (OSError, ValueError):
            continue
    slurm_mb = os.environ.get("SLURM_MEM_PER_NODE")
    if slurm_mb and slurm_mb.isdigit():
        avail = min(avail, int(slurm_mb) * 1024**2)
    return avail / 1024**3


def total_memory_gb() -> float:
    """Memory this machine (or its cgroup / SLURM allocation) has in all.

    The ceiling for ``--mem-gb``/``--mem-mb``: a scheduler limit above it cannot be honoured.

    Returns
    -------
    float
        GB (2**30 bytes): the smallest of the physical memory, the cgroup limit and
        ``SLURM_MEM_PER_NODE``.
    """
    import psutil

    total = psutil.virtual_memory().total
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            raw = Path(limit_file).read_text().strip()
            if raw != "max" and int(raw) < 1 << 60:
                total = min(total, int(raw))
                break
        except (OSError, ValueError):
            continue
    slurm_mb = os.environ.get("SLURM_MEM_PER_NODE")
    if slurm_mb and slurm_mb.isdigit() and int(slurm_mb) > 0:
        total = min(total, int(slurm_mb) * 1024**2)
    return total / 1024**3


def _tuple(value):
    if value is None:
        return None
    return tuple(value)


def default_omp_nthreads(nprocs: int) -> int:
    """Threads per process when ``--omp-nthreads`` is not given: one CPU fewer than the run has
    (at most 8), as fMRIPrep does.

    A registration node holds ``omp_nthreads`` of the scheduler's ``nprocs`` slots; leaving one
    free lets the single-threaded QSM steps run beside it. Measured on 2 cores, 1 mm, 2 sessions
    (``benchmarks/participant.py``): 410 s wall with 1 thread against 484 s with 2, the
    registrations' results within their thread-to-thread variation (docs/registration.md).
    """
    nprocs = int(nprocs)
    return max(1, min(nprocs - 1, 8))


@dataclass(frozen=True)
class RunConfig:
    """Everything a qsmprep run needs, fixed at start-up (paths absolute).

    Each field but :data:`DERIVED_FIELDS` is a command-line option of the same name
    (``--participant-label`` -> ``participant_label``; docs/usage.md describes them); the
    ``[inputs]``, ``[execution]``, ``[qsm]``, ``[atlas]`` and ``[group]`` tables of
    ``config.toml`` hold them (:data:`TOML_SECTIONS`). Build it with :meth:`from_args`, which
    fills the computed defaults (CPUs, memory, method defaults, seed) and validates.

    Example
    -------
    >>> from qsmprep.cli.parser import parse_args
    >>> cfg = RunConfig.from_args(parse_args(["bids", "out", "participant"]))  # doctest: +SKIP
    >>> cfg.inversion  # doctest: +SKIP
    'medi'
    """

    bids_dir: Path
    output_dir: Path
    analysis_level: str
    work_dir: Path
    # data selection
    participant_label: tuple | None = None
    session_label: tuple | None = None
    bids_filter_file: Path | None = None
    bids_filters: dict = field(default_factory=dict)
    skip_bids_validation: bool = False
    bids_database_dir: Path | None = None
    b0_strength: float | None = None
    # execution
    nprocs: int = 1
    omp_nthreads: int = 1
    mem_gb: float = 4.0
    plugin: str = "MultiProc"
    plugin_args: dict = field(default_factory=dict)
    stop_on_first_crash: bool = False
    random_seed: int = 0
    verbose: int = 0
    progress: bool = True
    notrack: bool = False
    clean_workdir: bool = False
    resource_monitor: bool = False
    write_graph: bool = False
    boilerplate_only: bool = False
    reports_only: bool = False
    # QSM methods (names of qsmprep.qsm.methods.REGISTRY; default: the step's default record)
    masking: str = ""
    combination: str = ""
    unwrapping: str = ""
    bf_removal: str = ""
    inversion: str = ""
    reference: str = ""
    # atlas and ROIs
    atlas: Path | None = None
    dentate_atlas: Path | None = None
    brain_masks: Path | None = None
    roi_erosion: int | str = "auto"
    roi_min_reliability: float | None = None
    longitudinal: bool = True
    registration_resolution: float | None = None
    syn_metric: str = "CC"
    syn_region: str = ""  # "" = "brain" with --output-spaces, else "labels"
    output_spaces: tuple = ()  # --output-spaces entries, 'NAME[:res-N]' (qsmprep.spaces)
    method_options: tuple = ()  # --method-option entries, 'STEP.PARAMETER=VALUE'
    # group level
    group_column: str = "group"
    covariates: tuple = ()
    structures: tuple | None = None
    hemispheres: bool = False
    sessions: tuple | None = None
    fdr_alpha: float = 0.05
    exclude_file: Path | None = None
    keep_flagged: bool = False
    measure: str = "chi"
    version: str = ""

    # ----------------------------------------------------------------------------------------
    @classmethod
    def from_args(cls, ns) -> "RunConfig":
        """Build and validate the configuration of a run from the parsed command line.

        Parameters
        ----------
        ns : argparse.Namespace
            From :func:`qsmprep.cli.parser.parse_args` (``--config-file`` values merged).

        Returns
        -------
        RunConfig
            Paths made absolute (``work_dir`` defaults to ``./work``), the filter file loaded,
            unset resources, methods and seed filled with their defaults.

        Raises
        ------
        UsageError
            ``--omp-nthreads`` above ``--nprocs``, a bad filter file, or any check of
            :meth:`validate` (exit 64).
        UnknownAnalysisLevel
            An analysis level other than participant/group (exit 17).
        """
        from . import __version__
        from .bids import load_bids_filters

        values: dict[str, Any] = {}
        names = {f.name for f in fields(cls)}
        for name in names:
            if hasattr(ns, name):
                values[name] = getattr(ns, name)

        for key in ("bids_dir", "output_dir", "work_dir", "bids_database_dir", "bids_filter_file",
                    "atlas", "dentate_atlas", "brain_masks", "exclude_file"):
            if values.get(key) is not None:
                values[key] = Path(values[key]).absolute()
        if values.get("work_dir") is None:
            values["work_dir"] = Path.cwd().absolute() / "work"

        values["bids_filters"] = load_bids_filters(values.get("bids_filter_file"))
        for key in ("participant_label", "session_label", "structures", "sessions"):
            values[key] = _tuple(values.get(key))
        values["covariates"] = tuple(values.get("covariates") or ())
        values["output_spaces"] = tuple(values.get("output_spaces") or ())
        values["method_options"] = tuple(values.get("method_options") or ())
        if not values.get("syn_region"):  # template-space outputs need a whole-brain warp
            values["syn_region"] = "brain" if values["output_spaces"] else "labels"
        values["plugin_args"] = dict(values.get("plugin_args") or {})

        # ---- resources: never oversubscribe ----
        cpus = available_cpus()
        nprocs = values.get("nprocs") or cpus
        omp = values.get("omp_nthreads") or default_omp_nthreads(nprocs)
        if omp > nprocs:
            raise UsageError(
                f"--omp-nthreads {omp} exceeds --nprocs {nprocs}; a process cannot use more threads "
                "than the run's CPUs. Lower --omp-nthreads or raise --nprocs.")
        values["nprocs"], values["omp_nthreads"] = int(nprocs), int(omp)
        if values.get("mem_gb") is None:
            values["mem_gb"] = round(max(1.0, 0.9 * available_memory_gb()), 1)

        if values.get("random_seed") is None:
            from .registration import DEFAULT_SEED

            values["random_seed"] = DEFAULT_SEED
        for opt in METHOD_OPTIONS:
            if not values.get(opt):
                values[opt] = default_method(opt)
        values["version"] = __version__
        cfg = cls(**values)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Check the values together (CPUs, memory, methods, thresholds, output spaces).

        Raises
        ------
        UsageError
            Exit 64, with a message naming the option and what to write instead.
        UnknownAnalysisLevel
            Exit 17 for an analysis level other than participant/group.
        """
        if self.analysis_level not in ANALYSIS_LEVELS:
            from .errors import UnknownAnalysisLevel

            raise UnknownAnalysisLevel(f"Unknown analysis level {self.analysis_level!r}; use "
                                       f"{' or '.join(ANALYSIS_LEVELS)}.")
        if self.plugin not in PLUGINS:
            raise UsageError(f"--plugin {self.plugin!r} is not one of {PLUGINS}.")
        if self.nprocs < 1 or self.omp_nthreads < 1 or self.omp_nthreads > self.nprocs:
            raise UsageError(f"Invalid CPU settings nprocs={self.nprocs}, omp_nthreads={self.omp_nthreads}.")
        if not self.mem_gb >= MIN_MEM_GB:
            raise UsageError(
                f"The memory limit {self.mem_gb:g} GB is below {MIN_MEM_GB} GB: --mem/--mem-mb take "
                "megabytes (fMRIPrep's convention), --mem-gb gigabytes. Write e.g. --mem 16G, "
                "--mem-mb 16000 or --mem-gb 16.")
        total = total_memory_gb()
        if self.mem_gb > total:
            raise UsageError(
                f"The memory limit {self.mem_gb:g} GB (--mem-gb/--mem-mb) is more than this machine "
                f"has ({total:.1f} GB, cgroup/SLURM limits included). Lower it, or leave it out to "
                "use 90% of the available memory.")
        if self.clean_workdir:
            work = Path(self.work_dir).resolve()
            for what, path in (("input dataset", self.bids_dir), ("output folder", self.output_dir)):
                p = Path(path).resolve()
                if p == work or p.is_relative_to(work):
                    raise UsageError(
                        f"--clean-workdir would delete the {what} {path}: it is inside the work "
                        f"folder {self.work_dir}. Use a separate -w folder.")
            if work in (Path.home().resolve(), Path(work.anchor)):
                raise UsageError(f"--clean-workdir refuses to empty {work}; give a dedicated -w folder.")
        if self.syn_metric not in SYN_METRICS:
            raise UsageError(f"--syn-metric {self.syn_metric!r} is not one of {SYN_METRICS}.")
        if self.syn_region and self.syn_region not in SYN_REGIONS:
            raise UsageError(f"--syn-region {self.syn_region!r} is not one of {SYN_REGIONS}.")
        if self.syn_region == "labels" and self.output_spaces:
            raise UsageError(
                "--syn-region labels refines the atlas warp only around the atlas labels, so "
                f"Chimaps resampled to --output-spaces {' '.join(self.output_spaces)} would be "
                "aligned by its coarse (4 mm) level elsewhere. Use --syn-region brain (the "
                "default with --output-spaces).")
        for opt in METHOD_OPTIONS:
            choices = method_registry(opt)[0]
            if getattr(self, opt) not in choices:
                raise UsageError(f"--{opt.replace('_', '-')} {getattr(self, opt)!r} is not one of {choices}.")
        if self.roi_min_reliability is not None and not 0 <= self.roi_min_reliability <= 1:
            raise UsageError("--roi-min-reliability must be between 0 and 1.")
        if not 0 < self.fdr_alpha < 1:
            raise UsageError("--fdr-alpha must be strictly between 0 and 1.")
        self.method_option_dict()  # raises UsageError for a bad --method-option
        if self.output_spaces:
            from .spaces import parse_output_spaces

            parse_output_spaces(self.output_spaces)  # raises UsageError for a bad entry
        if self.b0_strength is not None and not 0.05 <= self.b0_strength <= 25:
            raise UsageError(f"--b0-strength {self.b0_strength} T is implausible; give Tesla (e.g. 3).")

    def method_option_dict(self) -> dict:
        """``--method-option`` entries as ``QSMOptions.method_options`` (step -> options).

        Returns
        -------
        dict
            :func:`parse_method_options` of :attr:`method_options` for this run's methods.

        Raises
        ------
        UsageError
            For an entry that is not ``STEP.PARAMETER=VALUE`` or names a parameter the step's
            chosen method does not have.
        """
        chosen = {step: getattr(self, step) or default_method(step) for step in CLI_STEPS}
        return parse_method_options(self.method_options, chosen)

    # ----------------------------------------------------------------------------------------
    def plugin_settings(self, status_callback=None) -> dict:
        """Arguments for ``workflow.run(**cfg.plugin_settings())``.

        MultiProc gets ``n_procs`` and ``memory_gb`` so that nodes with ``n_procs``/``mem_gb``
        annotations are scheduled without oversubscription; SLURM plugins get
        ``--cpus-per-task=omp_nthreads``; user ``--plugin-args`` win.

        Parameters
        ----------
        status_callback : callable, optional
            ``f(node, status)`` passed to the plugins that support it (MultiProc, Linear), e.g.
            :class:`qsmprep.cli.progress.ProgressMonitor`. Not part of the configuration.

        Returns
        -------
        dict
            ``{"plugin": name, "plugin_args": {...}}``.
        """
        args: dict[str, Any] = {}
        if self.plugin == "MultiProc":
            args = {"n_procs": self.nprocs, "memory_gb": self.mem_gb, "raise_insufficient": False}
        elif self.plugin in ("SLURM", "SLURMGraph"):
            args = {"sbatch_args": f"--cpus-per-task={self.omp_nthreads}"}
            if self.plugin == "SLURMGraph":
                args["dont_resubmit_completed_jobs"] = True
        args.update(self.plugin_args)
        if status_callback is not None and self.plugin in CALLBACK_PLUGINS:
            args["status_callback"] = status_callback
        return {"plugin": self.plugin, "plugin_args": args}

    def nipype_config(self) -> dict:
        """Nipype configuration sections (for ``nipype.config.update_config``).

        Crash files go to ``OUTPUT_DIR/logs/`` (as plain text); Nipype's loggers are at INFO
        (``-vv``: DEBUG) so that the run's log file gets their messages, the console shows them
        only with ``-v`` (see :func:`qsmprep.cli.logs.setup_logging`). ``--resource-monitor``
        turns Nipype's resource monitor on.

        Returns
        -------
        dict
            ``{"execution": {...}, "logging": {...}, "monitoring": {...}}``.
        """
        level = "DEBUG" if self.verbose >= 2 else "INFO"
        quiet = "DEBUG" if self.verbose >= 2 else "WARNING"
        execution = {
            "crashdump_dir": str(self.output_dir / "logs"),
            "crashfile_format": "txt",
            "stop_on_first_crash": self.stop_on_first_crash,
            "remove_unnecessary_outputs": False,
            "hash_method": "content",
            "check_version": False,
        }
        if self.plugin == "MultiProc":
            # the scheduler's loop (Nipype default: every 2 s) is a local process pool here, so
            # a short poll costs nothing; each finished node and each plumbing level (Merge,
            # IdentityInterface) otherwise waits for the next 2 s tick. Batch plugins (SLURM)
            # keep the default: their poll is a squeue call.
            execution["poll_sleep_duration"] = MULTIPROC_POLL_S
        return {
            "execution": execution,
            "logging": {"workflow_level": level, "interface_level": level,
                        "utils_level": quiet, "filemanip_level": quiet},
            "monitoring": {"enabled": bool(self.resource_monitor), "sample_frequency": "0.5",
                           "summary_append": True},
        }

    # ----------------------------------------------------------------------------------------
    def to_toml(self, run_id: str = "") -> str:
        """The configuration as TOML: every command-line option (set or default) by section.

        Options without a value (None: "not given", whose default is computed later or means
        "none") cannot be written in TOML; they are listed in the header comment. The ``[run]``
        table (version, run id, the loaded filter file) is informational and ignored by
        :func:`read_toml`. ``--config-file`` reads the file back (see :func:`read_toml`).

        Parameters
        ----------
        run_id : str
            Identifier of the run (``<date>-<time>_<uuid>``), written into ``[run]``.

        Returns
        -------
        str
            The TOML text (header comment, ``[run]``, then one table per section).
        """
        import json
        import platform

        import tomli_w

        def drop_none(value):  # TOML has no null (e.g. inside --plugin-args)
            if isinstance(value, dict):
                return {k: drop_none(v) for k, v in value.items() if v is not None}
            if isinstance(value, list):
                return [drop_none(v) for v in value if v is not None]
            return value

        record = {k: (drop_none(v) if isinstance(v, (dict, list)) else v)
                  for k, v in self.to_dict().items()}
        doc: dict[str, Any] = {"run": {"version": self.version, "run_id": run_id,
                                       "python": platform.python_version(),
                                       "bids_filters_json": json.dumps(self.bids_filters)}}
        unset = []
        for section, names in _toml_sections().items():
            table = {}
            for name in names:
                if record[name] is None:
                    unset.append(name)
                else:
                    table[name] = record[name]
            doc[section] = table
        header = [f"# qsmprep {self.version} configuration (run {run_id or 'n/a'}).",
                  "# Rerun: qsmprep BIDS_DIR OUTPUT_DIR LEVEL --config-file THIS_FILE "
                  "(command-line options win).",
                  "# Not set (default computed at start-up or 'none'):"]
        header += textwrap.wrap(", ".join(unset) or "-", 96, initial_indent="#   ",
                                subsequent_indent="#   ")
        return "\n".join(header) + "\n\n" + tomli_w.dumps(doc)

    def to_dict(self) -> dict:
        """The configuration as plain values.

        Returns
        -------
        dict
            ``{field: value}``, JSON-serialisable (paths as strings, tuples as lists).
        """
        def conv(v):
            if isinstance(v, Path):
                return str(v)
            if isinstance(v, tuple):
                return [conv(x) for x in v]
            if isinstance(v, dict):
                return {k: conv(x) for k, x in v.items()}
            if isinstance(v, list):
                return [conv(x) for x in v]
            return v
        return {k: conv(v) for k, v in asdict(self).items()}


def read_toml(path) -> dict:
    """Option values from a ``config.toml`` written by :meth:`RunConfig.to_toml`.

    Parameters
    ----------
    path : str or Path
        The TOML file (``--config-file``).

    Returns
    -------
    dict
        ``{option dest: value}`` for every option the file sets (``[run]`` is ignored).

    Raises
    ------
    MissingInputError
        The file does not exist or cannot be read (exit 66).
    UsageError
        The file is not TOML, or names a section or option qsmprep does not know (exit 64).
    """
    import tomllib

    from .errors import MissingInputError

    path = Path(path)
    try:
        with path.open("rb") as fh:
            doc = tomllib.load(fh)
    except OSError as exc:
        raise MissingInputError(f"--config-file {path}: cannot read it ({exc.strerror}).") from exc
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"--config-file {path} is not valid TOML: {exc}. Give a config.toml "
                         "written by qsmprep (OUTPUT_DIR/logs/config.toml).") from exc
    sections = _toml_sections()
    values = {}
    for section, table in doc.items():
        if section == "run":
            continue
        if section not in sections or not isinstance(table, dict):
            raise UsageError(f"--config-file {path}: unknown section [{section}]; expected "
                             f"{', '.join(sections)} (and the informational [run]).")
        for key, value in table.items():
            if key not in sections[section]:
                raise UsageError(f"--config-file {path}: [{section}] has no option {key!r}; its "
                                 f"options are {', '.join(sections[section])}.")
            values[key] = value
    return values


def _toml_sections() -> dict:
    """:data:`TOML_SECTIONS` plus ``[other]`` for option fields no section lists."""
    listed = {name for names in TOML_SECTIONS.values() for name in names}
    other = tuple(f.name for f in fields(RunConfig)
                  if f.name not in listed and f.name not in DERIVED_FIELDS)
    return {**TOML_SECTIONS, OTHER_SECTION: other} if other else dict(TOML_SECTIONS)
