"""One immutable run configuration, validated once and passed explicitly.

``RunConfig.from_args(namespace)`` turns the parsed command line (see
:mod:`qsmprep.cli.parser`) into a frozen dataclass; the workflow factories receive its fields
as keyword arguments (no global configuration singleton). ``to_dict()`` gives a JSON-ready
record for provenance (written next to the outputs by the integrator).

Resource defaults come from what this process may really use: CPU affinity, the cgroup CPU
quota (containers), ``SLURM_CPUS_PER_TASK``/``SLURM_MEM_PER_NODE``; memory from psutil's
*available* memory and the cgroup limit. ``omp_nthreads`` never exceeds ``nprocs``.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import UsageError

__all__ = ["RunConfig", "available_cpus", "available_memory_gb"]


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
    """CPUs this process may use (affinity, cgroup quota, SLURM allocation)."""
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
    """Memory this process may use, in GB (psutil available, cgroup limit, SLURM allocation)."""
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


def _tuple(value):
    if value is None:
        return None
    return tuple(value)


@dataclass(frozen=True)
class RunConfig:
    """Everything a qsmprep run needs, fixed at start-up (paths absolute)."""

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
    # QSM methods (names from qsmprep.qsm.<module>.METHODS)
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
    output_spaces: tuple = ()  # --output-spaces entries, 'NAME[:res-N]' (qsmprep.spaces)
    # group level
    group_column: str = "group"
    covariates: tuple = ()
    structures: tuple | None = None
    hemispheres: bool = False
    sessions: tuple | None = None
    fdr_alpha: float = 0.05
    version: str = ""

    # ----------------------------------------------------------------------------------------
    @classmethod
    def from_args(cls, ns) -> "RunConfig":
        """Build and validate from an ``argparse.Namespace`` of :func:`qsmprep.cli.parser.parse_args`."""
        from . import __version__
        from .bids import load_bids_filters

        values: dict[str, Any] = {}
        names = {f.name for f in fields(cls)}
        for name in names:
            if hasattr(ns, name):
                values[name] = getattr(ns, name)

        for key in ("bids_dir", "output_dir", "work_dir", "bids_database_dir", "bids_filter_file",
                    "atlas", "dentate_atlas", "brain_masks"):
            if values.get(key) is not None:
                values[key] = Path(values[key]).absolute()
        if values.get("work_dir") is None:
            values["work_dir"] = Path.cwd().absolute() / "work"

        values["bids_filters"] = load_bids_filters(values.get("bids_filter_file"))
        for key in ("participant_label", "session_label", "structures", "sessions"):
            values[key] = _tuple(values.get(key))
        values["covariates"] = tuple(values.get("covariates") or ())
        values["output_spaces"] = tuple(values.get("output_spaces") or ())
        values["plugin_args"] = dict(values.get("plugin_args") or {})

        # ---- resources: never oversubscribe ----
        cpus = available_cpus()
        nprocs = values.get("nprocs") or cpus
        omp = values.get("omp_nthreads") or min(nprocs, 8)
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
        for opt in ("masking", "combination", "unwrapping", "bf_removal", "inversion", "reference"):
            if not values.get(opt):
                from .cli.parser import METHOD_OPTIONS, _method_registry

                values[opt] = _method_registry(METHOD_OPTIONS[opt])[1]
        values["version"] = __version__
        cfg = cls(**values)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Cross-field checks (raise :class:`~qsmprep.errors.UsageError`)."""
        from .cli.parser import ANALYSIS_LEVELS, METHOD_OPTIONS, PLUGINS, _method_registry

        if self.analysis_level not in ANALYSIS_LEVELS:
            from .errors import UnknownAnalysisLevel

            raise UnknownAnalysisLevel(f"Unknown analysis level {self.analysis_level!r}; use "
                                       f"{' or '.join(ANALYSIS_LEVELS)}.")
        if self.plugin not in PLUGINS:
            raise UsageError(f"--plugin {self.plugin!r} is not one of {PLUGINS}.")
        if self.nprocs < 1 or self.omp_nthreads < 1 or self.omp_nthreads > self.nprocs:
            raise UsageError(f"Invalid CPU settings nprocs={self.nprocs}, omp_nthreads={self.omp_nthreads}.")
        if not self.mem_gb > 0:
            raise UsageError(f"--mem-gb must be positive, got {self.mem_gb}.")
        for opt, module in METHOD_OPTIONS.items():
            choices = _method_registry(module)[0]
            if getattr(self, opt) not in choices:
                raise UsageError(f"--{opt.replace('_', '-')} {getattr(self, opt)!r} is not one of {choices}.")
        if self.roi_min_reliability is not None and not 0 <= self.roi_min_reliability <= 1:
            raise UsageError("--roi-min-reliability must be between 0 and 1.")
        if not 0 < self.fdr_alpha < 1:
            raise UsageError("--fdr-alpha must be strictly between 0 and 1.")
        if self.output_spaces:
            from .spaces import parse_output_spaces

            parse_output_spaces(self.output_spaces)  # raises UsageError for a bad entry
        if self.b0_strength is not None and not 0.05 <= self.b0_strength <= 25:
            raise UsageError(f"--b0-strength {self.b0_strength} T is implausible; give Tesla (e.g. 3).")

    # ----------------------------------------------------------------------------------------
    @property
    def method_names(self) -> dict:
        """``{'masking': ..., 'combination': ..., ...}`` for ``init_qsm_wf(**cfg.method_names)``."""
        return {k: getattr(self, k) for k in
                ("masking", "combination", "unwrapping", "bf_removal", "inversion", "reference")}

    @property
    def bids_database_path(self) -> Path | None:
        """Folder of the pybids database: ``--bids-database-dir`` or None (in-memory index)."""
        return self.bids_database_dir

    def plugin_settings(self) -> dict:
        """Arguments for ``workflow.run(**cfg.plugin_settings())``.

        MultiProc gets ``n_procs`` and ``memory_gb`` so that nodes with ``n_procs``/``mem_gb``
        annotations are scheduled without oversubscription; user ``--plugin-args`` win.
        """
        args: dict[str, Any] = {}
        if self.plugin == "MultiProc":
            args = {"n_procs": self.nprocs, "memory_gb": self.mem_gb, "raise_insufficient": False}
        elif self.plugin in ("SLURM", "SLURMGraph"):
            args = {"sbatch_args": f"--cpus-per-task={self.omp_nthreads}"}
            if self.plugin == "SLURMGraph":
                args["dont_resubmit_completed_jobs"] = True
        args.update(self.plugin_args)
        return {"plugin": self.plugin, "plugin_args": args}

    def nipype_config(self) -> dict:
        """Nipype configuration sections (``nipype.config.update_config``)."""
        return {
            "execution": {
                "crashdump_dir": str(self.output_dir / "logs"),
                "crashfile_format": "txt",
                "stop_on_first_crash": self.stop_on_first_crash,
                "remove_unnecessary_outputs": False,
                "hash_method": "content",
                "check_version": False,
            },
            "monitoring": {"enabled": False},
        }

    def to_dict(self) -> dict:
        """JSON-serialisable record (paths as strings, tuples as lists)."""
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
