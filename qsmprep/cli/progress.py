"""Watching a run: one log line per finished step, a heartbeat, live progress bars.

:class:`ProgressMonitor` is a Nipype ``status_callback`` (``plugin_args["status_callback"]``;
MultiProc and Linear call it with ``(node, "start" | "end" | "exception")`` in the main
process). For every finished step it logs, at INFO::

    sub-01 ses-baseline dipole inversion (medi) 15 s [12/31]

(subject, session, a human step name from :data:`STEPS`, the method chosen in the run
configuration, the step's own run time, steps finished / steps in the run). A heartbeat thread
logs which steps are running when nothing has finished for ``heartbeat_s`` (60 s), so a long
run is never silent for more than a minute. On a terminal, one ``tqdm`` bar per subject shows
steps done / total, elapsed time and ETA (log lines are printed above the bars).

Node names are mapped to step names in one table, :data:`STEPS`; plumbing nodes
(IdentityInterface, Merge, the ``ds_*`` sinks) are neither counted nor printed, and a node
missing from the table is shown under its own name (so a new step is never invisible).
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

LOGGER = logging.getLogger("qsmprep.progress")

__all__ = ["STEPS", "ProgressMonitor", "Step", "Heartbeat", "stop_heartbeats", "format_seconds"]

#: node name (session tag removed) -> (human step name, method template or None); a value of
#: None hides the node. Templates are formatted with the run configuration's fields.
STEPS: dict[str, tuple[str, str | None] | None] = {
    # per session, qsmprep.workflows.qsm.init_qsm_wf
    "load_gre": ("load GRE echoes", None),
    "brain_mask": ("brain mask", "{masking}"),
    "total_field": ("echo combination and unwrapping", "{combination}, {unwrapping}"),
    "bf_removal": ("background field removal", "{bf_removal}"),
    "dipole_inversion": ("dipole inversion", "{inversion}"),
    "reference": ("susceptibility referencing", "{reference}"),
    "chimap_sidecar": None,
    "r2star": ("R2* and T2* maps", "loglinear"),
    # per subject / session, qsmprep.workflows.longitudinal.init_longitudinal_wf
    "subject_template": ("within-subject T1w template", "antspyx"),
    "template_brain_extraction": ("template brain extraction", None),
    "atlas_to_template": ("atlas -> template registration", "SyN {syn_metric}, {syn_region}"),
    "labels_to_template": ("atlas labels -> template", "genericLabel"),
    "t1w_to_template": ("T1w -> template transform", "rigid, from the template"),
    "t1w_brain_mask": ("T1w brain mask", None),
    "t1w_brain_extraction": ("T1w brain extraction", None),
    "atlas_to_t1w": ("atlas -> T1w registration", "SyN {syn_metric}, {syn_region}"),
    "gre_to_t1w": ("GRE -> T1w registration", "rigid"),
    "atlas_to_gre": ("atlas -> GRE registration", "SyN mattes, {syn_region}"),
    "labels_to_gre": ("atlas labels -> GRE", "genericLabel"),
    "labels_to_t1w": ("atlas labels -> T1w", "genericLabel"),
    "b0_orientation": ("head orientation to B0", "atlas frame"),
    # per session / subject, qsmprep.workflows.base
    "roi_stats": ("ROI statistics", None),
    "b0_change": ("head turn against B0 between sessions", "rigid GRE -> GRE"),
    "dgm_change": ("longitudinal change table", None),
    "report": ("participant report", None),
    "publish": ("publish derivatives", None),
}

#: interfaces that only move values between nodes (never counted or printed)
_PLUMBING = {"IdentityInterface", "Merge", "Select", "Split", "Rename"}
_SUBJECT_RE = re.compile(r"^sub_([A-Za-z0-9]+)_wf$")


def format_seconds(seconds: float) -> str:
    """A duration as the progress lines print it.

    Parameters
    ----------
    seconds : float
        Duration in seconds.

    Returns
    -------
    str
        ``<1 s`` below one second, then whole seconds, ``<m> min <ss> s`` below an hour,
        ``<h> h <mm> min`` above.

    Example
    -------
    >>> [format_seconds(s) for s in (0.4, 15.2, 185, 3700)]
    ['<1 s', '15 s', '3 min 05 s', '1 h 01 min']
    """
    if seconds < 1:
        return "<1 s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@dataclass(frozen=True)
class Step:
    """What one node is, for the person watching.

    Attributes
    ----------
    subject : str or None
        Subject label (without ``sub-``), None outside a subject workflow.
    session : str or None
        Session id; ``"single"`` (a dataset without sessions) is not printed.
    label : str
        Human step name (from :data:`STEPS`, else the node name with spaces).
    method : str or None
        The method the run configuration chose for this step, if the step has one.

    Example
    -------
    >>> Step("01", "baseline", "dipole inversion", "medi").describe()
    'sub-01 ses-baseline dipole inversion (medi)'
    """

    subject: str | None
    session: str | None
    label: str
    method: str | None

    @property
    def who(self) -> str:
        """``sub-<label> ses-<id>`` (either part left out when unknown)."""
        parts = []
        if self.subject:
            parts.append(f"sub-{self.subject}")
        if self.session and self.session != "single":
            parts.append(f"ses-{self.session}")
        return " ".join(parts)

    def describe(self) -> str:
        """Who, step name and, in parentheses, the method: the start of a progress line."""
        text = f"{self.who} {self.label}".strip()
        return f"{text} ({self.method})" if self.method else text


def _tag(session: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in str(session))


class ProgressMonitor:
    """Nipype ``status_callback`` that logs finished steps, a heartbeat, and progress bars.

    Parameters
    ----------
    workflow : nipype Workflow
        The workflow about to run (its nodes are counted before the run).
    sessions : dict
        ``{subject label: [session ids]}`` (the ids the workflow tags its nodes with).
    options : dict, optional
        Values for the method templates of :data:`STEPS` (``RunConfig.to_dict()``).
    heartbeat_s : float
        Seconds without a finished step after which the running steps are logged.
    display : bool
        Draw one ``tqdm`` bar per subject on ``stream`` (use only on a terminal).
    stream : file, optional
        Where the bars go (default ``sys.stderr``).
    logger : logging.Logger, optional
        Where the lines go.
    reports_steps : bool
        False when the plugin never calls the callback (Nipype's SLURM plugins): then only the
        heartbeat is logged, saying so.

    Notes
    -----
    Used as ``cli/run.py`` does (``wf`` a built workflow, ``config`` the ``RunConfig``)::

        monitor = ProgressMonitor(wf, {"01": ["baseline"]}, options=config.to_dict())
        with monitor:
            wf.run(**config.plugin_settings(status_callback=monitor))
    """

    def __init__(self, workflow, sessions, *, options=None, heartbeat_s=60.0, display=False,
                 stream=None, logger=None, reports_steps=True):
        self.sessions = {str(k): [str(s) for s in v] for k, v in dict(sessions).items()}
        self.options = dict(options or {})
        self.heartbeat_s = float(heartbeat_s)
        self.logger = logger or LOGGER
        self.reports_steps = bool(reports_steps)
        self.display = bool(display) and self.reports_steps
        self.stream = stream or sys.stderr
        self.total = 0
        self.per_subject: dict[str | None, int] = {}
        for parts, node in _walk(workflow):
            step = self.describe(parts, node)
            if step is not None:
                self.total += 1
                self.per_subject[step.subject] = self.per_subject.get(step.subject, 0) + 1
        self.done = 0
        self.failed = 0
        self.done_per_subject: dict[str | None, int] = {}
        self._running: dict[str, tuple[Step, float]] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bars: dict = {}
        self._t0 = time.monotonic()
        self._t0_utc = datetime.now(timezone.utc)
        self._last_line = self._last_refresh = self._t0

    # ------------------------------------------------------------------ node -> step
    def describe(self, parts, node) -> Step | None:
        """What a node is, from its place in the workflow.

        Parameters
        ----------
        parts : sequence of str
            The node's hierarchical name split at the dots
            (``("qsmprep_wf", "sub_01_wf", "qsm_baseline_wf", "dipole_inversion")``).
        node : nipype Node
            The node (its interface type tells plumbing apart).

        Returns
        -------
        Step or None
            None for plumbing (IdentityInterface, Merge, ``ds_*`` sinks, hidden
            :data:`STEPS` entries), which is neither counted nor printed.
        """
        name = parts[-1]
        if name.startswith("_") or type(node.interface).__name__ in _PLUMBING or name.startswith("ds_"):
            return None
        subject = None
        for part in parts[:-1]:
            m = _SUBJECT_RE.match(part)
            if m:
                subject = m.group(1)
        session, key = None, name
        tags = sorted(((_tag(s), s) for s in self.sessions.get(subject, [])),
                      key=lambda t: -len(t[0]))
        for tag, ses in tags:
            if any(p == f"qsm_{tag}_wf" for p in parts[:-1]):
                session = ses
                break
            if name.endswith(f"_{tag}") and len(name) > len(tag) + 1:
                session, key = ses, name[: -len(tag) - 1]
                break
        if key in STEPS:
            entry = STEPS[key]
            if entry is None:
                return None
            label, template = entry
        else:
            label, template = key.replace("_", " "), None
        method = None
        if template:
            try:
                method = template.format(**self.options)
            except (KeyError, IndexError):
                method = None
        return Step(subject, session, label, method)

    def _step_of(self, node) -> Step | None:
        parts = str(getattr(node, "fullname", None) or node.name).split(".")
        return self.describe(parts, node)

    # ------------------------------------------------------------------ nipype callback
    def __call__(self, node, status):
        """Record a node's start or end; log a line when it ends (never raises).

        Parameters
        ----------
        node : nipype Node
            The node Nipype starts or has finished.
        status : {"start", "end", "exception"}
            What happened to it.
        """
        try:
            self._handle(node, status)
        except Exception:  # a display problem must never stop a run
            self.logger.debug("progress callback failed for %s", getattr(node, "fullname", node),
                              exc_info=True)

    def _handle(self, node, status):
        step = self._step_of(node)
        if step is None:
            return
        key = str(getattr(node, "fullname", None) or node.name)
        now = time.monotonic()
        with self._lock:
            if status == "start":
                self._running[key] = (step, now)
                self._refresh_bar(step.subject)
                return
            started = self._running.pop(key, (step, None))[1]
            self.done += 1
            self.done_per_subject[step.subject] = self.done_per_subject.get(step.subject, 0) + 1
            counter = f"[{self.done}/{self.total}]"
            if status == "exception":
                self.failed += 1
                took = format_seconds(now - started) if started is not None else "n/a"
                self.logger.error("%s FAILED after %s %s; the crash file is in the logs folder",
                                  step.describe(), took, counter)
            else:
                seconds, cached, peak = _runtime(node, self._t0_utc)
                if seconds is None and started is not None:
                    seconds = now - started
                took = "cached" if cached else (format_seconds(seconds) if seconds is not None
                                                else "done")
                extra = f", peak {peak:.2f} GB" if peak else ""
                self.logger.info("%s %s%s %s", step.describe(), took, extra, counter)
            self._last_line = now
            self._update_bar(step.subject)

    # ------------------------------------------------------------------ heartbeat
    def heartbeat(self) -> str:
        """The heartbeat line.

        Returns
        -------
        str
            ``still running after <elapsed>: <up to four running steps with their time>
            [<done>/<total> done]``, or, for a plugin that reports no steps, a line saying so.
        """
        now = time.monotonic()
        with self._lock:
            running = sorted(self._running.values(), key=lambda item: item[1])
            if not self.reports_steps:
                return (f"still running after {format_seconds(now - self._t0)} (this plugin "
                        "reports no per-step progress; -v shows its messages)")
            if running:
                what = "; ".join(f"{s.describe()} for {format_seconds(now - t)}"
                                 for s, t in running[:4])
                if len(running) > 4:
                    what += f"; and {len(running) - 4} more"
            else:
                what = "waiting for the next step"
            return (f"still running after {format_seconds(now - self._t0)}: {what} "
                    f"[{self.done}/{self.total} done]")

    def _beat(self):
        while not self._stop.wait(min(self.heartbeat_s, 0.25)):
            now = time.monotonic()
            with self._lock:
                due = now - self._last_line >= self.heartbeat_s
                if due:
                    self._last_line = now
            if due:
                self.logger.info("%s", self.heartbeat())
            if self.display and now - self._last_refresh >= 1.0:
                self._last_refresh = now
                with self._lock:
                    for bar in self._bars.values():
                        bar.refresh()

    # ------------------------------------------------------------------ progress bars
    def _update_bar(self, subject):
        bar = self._bars.get(subject)
        if bar is not None:
            bar.n = self.done_per_subject.get(subject, 0)
            self._refresh_bar(subject)

    def _refresh_bar(self, subject):
        bar = self._bars.get(subject)
        if bar is None:
            return
        current = [s.label for s, _ in self._running.values() if s.subject == subject]
        bar.set_postfix_str(", ".join(current[:2]), refresh=False)
        bar.refresh()

    def start(self):
        """Start the heartbeat thread and (``display=True``) the progress bars.

        Returns
        -------
        ProgressMonitor
            ``self`` (so that ``with ProgressMonitor(...) as monitor`` works).
        """
        from .logs import set_console_writer

        self._t0 = self._last_line = time.monotonic()
        self._t0_utc = datetime.now(timezone.utc)
        if self.display:
            from tqdm import tqdm

            for pos, subject in enumerate(sorted(self.per_subject, key=str)):
                self._bars[subject] = tqdm(
                    total=self.per_subject[subject], desc=f"sub-{subject}" if subject else "run",
                    unit="step", position=pos, leave=True, file=self.stream, dynamic_ncols=True,
                    bar_format="{desc} {bar} {n_fmt}/{total_fmt} steps [{elapsed}<{remaining}]{postfix}")
            set_console_writer(lambda msg, stream: tqdm.write(msg, file=stream))
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="qsmprep-heartbeat", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Stop the heartbeat and close the bars."""
        from .logs import set_console_writer

        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            for bar in self._bars.values():
                bar.close()
            self._bars.clear()
        set_console_writer(None)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False


_ACTIVE: set = set()  # running Heartbeats, stopped by stop_heartbeats() at the end of a run


class Heartbeat:
    """Log ``still <what> after <elapsed>`` every ``interval_s`` until stopped.

    For the phases outside the workflow that can take minutes on a large dataset (indexing the
    BIDS dataset and checking metadata, the group analysis), so that a run is never silent for
    longer than the interval. ``start()``/``stop()`` need no indentation of the code they cover;
    :func:`stop_heartbeats` (called when a run ends, also on errors) stops any left running.

    Parameters
    ----------
    what : str
        What is going on, as it reads after "still" (``"checking the inputs"``).
    interval_s : float
        Seconds between two lines.
    logger : logging.Logger, optional
        Where the lines go (default ``qsmprep.progress``).

    Example
    -------
    >>> beat = Heartbeat("checking the inputs", interval_s=60).start()
    >>> beat.stop()
    """

    def __init__(self, what: str, interval_s: float = 60.0, logger=None):
        self.what = what
        self.interval_s = float(interval_s)
        self.logger = logger or LOGGER
        self._stop = threading.Event()
        self._thread = None
        self._t0 = time.monotonic()

    def _beat(self):
        while not self._stop.wait(self.interval_s):
            self.logger.info("still %s after %s", self.what,
                             format_seconds(time.monotonic() - self._t0))

    def start(self) -> "Heartbeat":
        """Start the clock and the thread that logs; returns ``self``."""
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._beat, name="qsmprep-heartbeat", daemon=True)
        self._thread.start()
        _ACTIVE.add(self)
        return self

    def stop(self):
        """Stop logging (waits for the thread to end)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        _ACTIVE.discard(self)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False


def stop_heartbeats():
    """Stop every :class:`Heartbeat` still running (end of a run, normal or not)."""
    for beat in list(_ACTIVE):
        beat.stop()


def _walk(workflow, prefix=()):
    """``(name parts, node)`` of every node of a (nested) workflow, before it runs."""
    from nipype.pipeline.engine import Workflow

    for node in workflow._graph.nodes():
        parts = (*prefix, workflow.name)
        if isinstance(node, Workflow):
            yield from _walk(node, parts)
        else:
            yield (*parts, node.name), node


def _runtime(node, run_start_utc):
    """(seconds, cached, peak GB) from the node's result file; (None, False, None) if unknown."""
    try:
        from nipype.pipeline.engine.utils import load_resultfile

        result = load_resultfile(Path(node.output_dir()) / f"result_{node.name}.pklz", resolve=False)
        runtime = result.runtime
        if isinstance(runtime, list):  # MapNode: one runtime per subnode
            runtime = runtime[0]
        seconds = float(runtime.duration)
        cached = False
        end = getattr(runtime, "endTime", None)
        if end:
            end_dt = datetime.fromisoformat(str(end))
            if end_dt.tzinfo is None:
                end_dt = end_dt.replace(tzinfo=timezone.utc)
            cached = end_dt < run_start_utc
        peak = getattr(runtime, "mem_peak_gb", None)
        return seconds, cached, float(peak) if peak else None
    except Exception:
        return None, False, None
