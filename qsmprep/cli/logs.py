"""Logging of a qsmprep run: console verbosity, one log file per run, the run id.

* Console (stderr): qsmprep's INFO messages (progress lines, results) and every library's
  warnings; ``-v`` adds Nipype's workflow messages; ``-vv`` everything at DEBUG.
* ``OUTPUT_DIR/logs/qsmprep_<run id>.log``: every message at INFO and above (Nipype's
  included) with full timestamps, whatever the console verbosity.

Nipype installs its own stdout handler on the ``nipype`` logger at import; it is removed while
qsmprep's handlers are active (its messages propagate to them instead), so ``-v`` works and
nothing is printed twice. :func:`setup_logging` returns a handle whose ``close()`` restores
the previous state (used by ``main()`` and the tests).
"""

from __future__ import annotations

import logging
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["new_run_id", "setup_logging", "LogSetup", "set_console_writer"]

CONSOLE_FORMAT = "%(asctime)s | %(levelname)-7s | %(message)s"
CONSOLE_FORMAT_VERBOSE = "%(asctime)s | %(levelname)-7s | %(name)s | %(message)s"
FILE_FORMAT = "%(asctime)s.%(msecs)03d | %(levelname)-7s | %(processName)s | %(name)s | %(message)s"
NIPYPE_LOGGERS = ("nipype.workflow", "nipype.interface", "nipype.utils", "nipype.filemanip")

_console_writer = None  # (writer, pid) while progress bars are drawn (see set_console_writer)


def new_run_id() -> str:
    """A new run identifier, named as fMRIPrep names its runs.

    Returns
    -------
    str
        ``<YYYYmmdd-HHMMSS>_<uuid4>`` (local time of the call), used in
        ``logs/qsmprep_<run id>.log`` and ``logs/config_<run id>.toml``.

    Example
    -------
    >>> run_id = new_run_id()
    >>> len(run_id.split("_")[1])
    36
    """
    return f"{time.strftime('%Y%m%d-%H%M%S')}_{uuid.uuid4()}"


def set_console_writer(writer):
    """Route console log lines through a writer (e.g. above live progress bars).

    Only this process uses the writer: Nipype's forked workers inherit the handler but write
    plainly (a lock of the bars held by another thread at fork time would block them).

    Parameters
    ----------
    writer : callable or None
        ``writer(message, stream)``, e.g. ``tqdm.write`` so that log lines print above the
        bars; ``None`` restores plain writes to the console stream.
    """
    global _console_writer
    _console_writer = None if writer is None else (writer, os.getpid())


class _ConsoleHandler(logging.StreamHandler):
    def emit(self, record):
        current = _console_writer
        if current is None or current[1] != os.getpid():
            return super().emit(record)
        try:
            current[0](self.format(record), self.stream)
        except Exception:  # pragma: no cover - logging must not raise
            self.handleError(record)


#: Nipype warnings that say nothing about the data, kept off the console at default verbosity
#: (still in the log file): a rerun with --resource-monitor warns once per cached node.
QUIET_NIPYPE_WARNINGS = ("Could not retrieve profiling information",)


class _ConsoleFilter(logging.Filter):
    """Default verbosity: qsmprep at INFO, everyone else (Nipype included) at WARNING."""

    def __init__(self, verbose: int):
        super().__init__()
        self.verbose = int(verbose)

    def filter(self, record):
        if self.verbose >= 1:
            return True
        if record.levelno >= logging.WARNING:
            return not (record.name.startswith("nipype") and record.levelno == logging.WARNING
                        and str(record.msg).startswith(QUIET_NIPYPE_WARNINGS))
        return record.name == "qsmprep" or record.name.startswith("qsmprep.")


@dataclass
class LogSetup:
    """Handlers installed by :func:`setup_logging`; ``close()`` undoes it.

    Attributes
    ----------
    log_file : Path or None
        The run's log file (moved by :meth:`relocate`).
    handlers : list of logging.Handler
        The console handler and, with a log file, the file handler on the root logger.
    saved : dict
        ``{logger name: (level, propagate, handlers)}`` before the setup, restored by
        :meth:`close`.
    """

    log_file: Path | None
    handlers: list = field(default_factory=list)
    saved: dict = field(default_factory=dict)

    def relocate(self, new_file):
        """Go on writing the log to ``new_file``.

        Parameters
        ----------
        new_file : str or Path
            Where the log file now is (the caller has already moved it on disk, e.g. from the
            private start-up folder into ``OUTPUT_DIR/logs`` once the inputs passed).
        """
        for handler in self.handlers:
            if isinstance(handler, logging.FileHandler):
                handler.acquire()
                try:
                    if handler.stream is not None:
                        handler.stream.close()
                    handler.baseFilename = os.path.abspath(new_file)
                    handler.stream = handler._open()
                finally:
                    handler.release()
        self.log_file = Path(new_file)

    def close(self):
        """Remove and close the handlers, restore the loggers' levels, propagation and
        handlers (Nipype's own stdout handler included), and stop any console writer."""
        root = logging.getLogger()
        for handler in self.handlers:
            root.removeHandler(handler)
            handler.close()
        self.handlers.clear()
        for name, (level, propagate, handlers) in self.saved.items():
            lg = logging.getLogger(name)
            lg.setLevel(level)
            lg.propagate = propagate
            for handler in handlers:
                if handler not in lg.handlers:
                    lg.addHandler(handler)
        self.saved.clear()
        set_console_writer(None)


def setup_logging(verbose: int = 0, log_file=None, stream=None, nipype: bool = True) -> LogSetup:
    """Install the console handler (and the run's log file) on the root logger.

    Parameters
    ----------
    verbose : int
        0: qsmprep INFO and all warnings; 1 (``-v``): plus Nipype's INFO; 2 (``-vv``): DEBUG.
    log_file : path, optional
        File that receives every message at INFO and above (DEBUG with ``-vv``).
    stream : file, optional
        Console stream (default ``sys.stderr``).
    nipype : bool
        Import Nipype first so that its stdout handler exists and is removed (default).  False
        for a run that never imports Nipype (the group level: importing it cost about 0.3 s of
        a 1,000-subject group run); the ``nipype`` loggers are configured either way.

    Returns
    -------
    LogSetup
        Call its ``close()`` at the end of the run.

    Example
    -------
    >>> import io
    >>> setup = setup_logging(0, stream=io.StringIO())  # doctest: +SKIP
    >>> setup.close()  # doctest: +SKIP
    """
    if nipype:
        import nipype  # noqa: F401  (imported first: it installs the stdout handler removed below)

    verbose = int(verbose or 0)
    root = logging.getLogger()
    for handler in list(root.handlers):  # a previous run in this process (tests)
        if getattr(handler, "_qsmprep", False):
            root.removeHandler(handler)
            handler.close()
    setup = LogSetup(log_file=Path(log_file) if log_file else None)
    level = logging.DEBUG if verbose >= 2 else logging.INFO

    console = _ConsoleHandler(stream or sys.stderr)
    console.setLevel(level)
    console.addFilter(_ConsoleFilter(verbose))
    console.setFormatter(logging.Formatter(CONSOLE_FORMAT_VERBOSE if verbose else CONSOLE_FORMAT,
                                           datefmt="%H:%M:%S"))
    handlers = [console]
    if log_file is not None:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(log_file, mode="a", encoding="utf-8")
        fh.setLevel(level)
        fh.setFormatter(logging.Formatter(FILE_FORMAT, datefmt="%Y-%m-%dT%H:%M:%S"))
        handlers.append(fh)
    for handler in handlers:
        handler._qsmprep = True
        root.addHandler(handler)
    setup.handlers = handlers

    # loggers: qsmprep and Nipype create records at INFO (DEBUG), the handlers decide
    nipype_levels = {name: level for name in NIPYPE_LOGGERS}
    for quiet in ("nipype.utils", "nipype.filemanip"):
        nipype_levels[quiet] = logging.DEBUG if verbose >= 2 else logging.WARNING
    for name, lvl in {"qsmprep": level, "nipype": level, **nipype_levels}.items():
        lg = logging.getLogger(name)
        setup.saved[name] = (lg.level, lg.propagate, list(lg.handlers))
        lg.setLevel(lvl)
        lg.propagate = True
        if name == "nipype":
            for handler in list(lg.handlers):  # Nipype's own stdout handler
                lg.removeHandler(handler)
    return setup
