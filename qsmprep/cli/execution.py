"""Run-time safety of a ``qsmprep`` process: subject locks, signals, full disks.

:func:`run_guarded` wraps one analysis level (``run_participant``/``run_group``):

* **SIGTERM / SIGINT** (``docker stop``, ``scancel``, ``kill``; Ctrl-C). A watcher thread woken
  through :func:`signal.set_wakeup_fd` reacts even while the main thread is inside a long C call
  (FFT, ANTs): it prints one line, terminates every descendant process (the Nipype MultiProc
  workers; ``SIGTERM``, then ``SIGKILL`` to survivors after :data:`KILL_GRACE_S` s), removes
  this process' publication staging folders and exits with 143 (SIGTERM) or 130 (SIGINT),
  without a traceback. Workers are forked with SIGINT ignored (a Ctrl-C reaches the whole
  process group; only the main process answers it) and SIGTERM at its default (immediate
  death). On Linux they also get ``PR_SET_PDEATHSIG``: a worker dies with the main process even
  when that is killed with ``kill -9``. A rerun with the same ``-w`` resumes: Nipype reruns only
  nodes without a result file.
* **Subject locks** (:func:`lock_subjects`): an exclusive lock per subject in
  ``OUTPUT_DIR/logs/locks/`` and ``WORK_DIR/locks/`` (``filelock``, ``flock(2)``), held until
  the process exits. A second run of a locked subject stops at once with
  :class:`~qsmprep.errors.SubjectLockedError` (exit 75) naming the holder (host, PID, start
  time). The kernel releases ``flock`` locks when the holder dies, so a lock never outlives
  its process (``kill -9``, node crash); the lock *files* stay (empty, harmless). On file
  systems without ``flock`` filelock falls back to its soft (marker-file) lock.
* **Full disk**: an ``OSError`` ``ENOSPC``/``EDQUOT`` anywhere (dataset-level files,
  publication, a Nipype node, a crash file) becomes :class:`~qsmprep.errors.OutputNotWritableError`
  (exit 73) naming the folder and its free space (:func:`shutil.disk_usage`).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from .. import publish
from ..errors import OutputNotWritableError, SubjectLockedError

LOGGER = logging.getLogger("qsmprep")

#: Seconds between SIGTERM and SIGKILL for worker processes.
KILL_GRACE_S = 3.0
EXIT_SIGINT = 130
EXIT_SIGTERM = 143

_MAIN_PID = None          # pid of the process that installed the handlers
_FORK_FROM_MAIN = False   # set in the parent just before a fork
_FORK_PARENT = None       # pid of the forking process (a worker may fork too)


# ------------------------------------------------------------------------------------------
# subject locks
_HELD: list = []


def _lock_dirs(config):
    dirs = [Path(config.output_dir) / "logs" / "locks"]
    if getattr(config, "work_dir", None) is not None:
        dirs.append(Path(config.work_dir) / "locks")
    return dirs


def lock_subjects(config, subjects) -> list:
    """Lock every subject of this run (in the output and the work folder) until the process exits.

    Parameters
    ----------
    config : RunConfig or object
        Anything with ``output_dir`` and (optionally) ``work_dir``: the locks go to
        ``output_dir/logs/locks/`` and ``work_dir/locks/``.
    subjects : iterable of str
        Subject labels (without ``sub-``).

    Returns
    -------
    list of tuple
        ``(filelock.FileLock, owner record path)`` for every lock taken (two per subject with
        a work folder); they are also kept for :func:`release_locks`.

    Raises
    ------
    SubjectLockedError
        Exit 75, at once (no waiting), when another live process holds one of the subjects;
        the message names that process (PID, host, start time). Locks taken so far by this
        call are released first.
    OutputNotWritableError
        Exit 73 when a lock folder cannot be created (full disk included).

    Example
    -------
    >>> from types import SimpleNamespace
    >>> held = lock_subjects(SimpleNamespace(output_dir=out, work_dir=work), ["01"])  # doctest: +SKIP
    >>> release_locks()  # doctest: +SKIP
    """
    from filelock import FileLock, Timeout

    acquired = []
    for label in subjects:
        for folder in _lock_dirs(config):
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                if publish.is_no_space(exc):
                    raise publish.no_space_error(folder, exc) from exc
                raise OutputNotWritableError(
                    f"Cannot create the lock folder {folder} ({exc.strerror}). Choose a writable "
                    "output (-o) / work (-w) folder."
                ) from exc
            path = folder / f"sub-{label}.lock"
            lock = FileLock(str(path), timeout=0)
            try:
                lock.acquire()
            except Timeout:
                for held in acquired:
                    held[0].release()
                raise SubjectLockedError(
                    f"sub-{label} is already being processed {_owner_text(path)} (lock {path}). "
                    "Wait for that run to finish, or stop it, then rerun; different subjects may "
                    "run in parallel into the same output and work folders. The lock is released "
                    "automatically when its process ends, even if it was killed."
                ) from None
            owner = path.with_suffix(".owner.json")
            with contextlib.suppress(OSError):
                tmp = path.with_name(f".{owner.name}.{os.getpid()}")
                tmp.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                           "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                                           "command": " ".join(sys.argv)}) + "\n")
                os.replace(tmp, owner)
            acquired.append((lock, owner))
    _HELD.extend(acquired)
    return acquired


def _owner_text(lock_path: Path) -> str:
    try:
        info = json.loads(lock_path.with_suffix(".owner.json").read_text())
        return f"by PID {info['pid']} on {info['host']} (started {info['started']})"
    except (OSError, ValueError, KeyError):
        return "by another qsmprep process"


def release_locks():
    """Release the subject locks this process holds and remove their owner records.

    The kernel also releases them when the process exits, however it ends; this is for a
    process that goes on (tests, or ``main()`` returning to a caller).
    """
    while _HELD:
        lock, owner = _HELD.pop()
        with contextlib.suppress(OSError):
            owner.unlink()
        with contextlib.suppress(Exception):
            lock.release()


# ------------------------------------------------------------------------------------------
# child processes
def _before_fork():
    global _FORK_FROM_MAIN, _FORK_PARENT
    _FORK_FROM_MAIN = threading.current_thread() is threading.main_thread()
    _FORK_PARENT = os.getpid()


def _after_fork_in_child():
    """Nipype workers: no Ctrl-C handling of their own, default SIGTERM, die with the parent."""
    if _MAIN_PID is None:
        return
    with contextlib.suppress(ValueError, OSError):
        signal.set_wakeup_fd(-1)
    with contextlib.suppress(ValueError, OSError):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.platform.startswith("linux") and _FORK_FROM_MAIN:
        # PR_SET_PDEATHSIG fires when the *thread* that forked ends: only the main thread's
        # forks are tied to the process lifetime.
        with contextlib.suppress(Exception):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
            if os.getppid() != _FORK_PARENT:  # parent already gone before prctl
                os._exit(EXIT_SIGTERM)


_FORK_HOOK_REGISTERED = False


def _register_fork_hooks():
    global _FORK_HOOK_REGISTERED
    if not _FORK_HOOK_REGISTERED:
        os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
        _FORK_HOOK_REGISTERED = True


def terminate_children(grace: float = KILL_GRACE_S) -> list[int]:
    """Stop every descendant process of this one.

    Parameters
    ----------
    grace : float
        Seconds between SIGTERM to all and SIGKILL to the survivors.

    Returns
    -------
    list of int
        PIDs of the descendants found (all gone when the function returns, unless one could
        not be killed).
    """
    import psutil

    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:  # pragma: no cover
        return []
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.terminate()
    _, alive = psutil.wait_procs(children, timeout=grace)
    for child in alive:
        with contextlib.suppress(psutil.Error):
            child.kill()
    psutil.wait_procs(alive, timeout=2.0)
    return [c.pid for c in children]


# ------------------------------------------------------------------------------------------
# signals
_STOP = threading.Event()


def _shutdown(signum: int):
    """Runs once, in the watcher thread: one line, stop the workers, clean, exit."""
    code = EXIT_SIGINT if signum == signal.SIGINT else EXIT_SIGTERM
    what = "interrupted (Ctrl-C)" if signum == signal.SIGINT else "terminated (SIGTERM)"
    line = (f"qsmprep: {what}: stopping worker processes; rerun the same command with the same "
            "-w to resume from the finished steps.\n")
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    with contextlib.suppress(OSError):
        os.write(2, line.encode())
    # From here on nothing else reaches the terminal: the main thread or the process pool may
    # notice dead workers and print tracebacks before the process exits.
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
    with contextlib.suppress(Exception):
        terminate_children()
    for staging in list(publish.ACTIVE_STAGING):
        shutil.rmtree(staging, ignore_errors=True)
    os._exit(code)


def _main_thread_handler(signum, frame):
    # Keep the main thread (Nipype's scheduler) from reacting to dying workers while the
    # watcher thread shuts down; in a forked child that kept this handler, just die.
    if os.getpid() != _MAIN_PID:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    _STOP.wait()


@contextlib.contextmanager
def signal_guard():
    """Context manager: the SIGTERM/SIGINT handling described in the module docstring.

    Inside the block, SIGTERM ends the process with exit 143 and SIGINT (Ctrl-C) with 130,
    after one line on stderr and the termination of every worker process; the previous
    handlers are restored on leaving. Does nothing outside the main thread.

    Example
    -------
    >>> with signal_guard():  # doctest: +SKIP
    ...     wf.run(plugin="MultiProc")
    """
    global _MAIN_PID
    if threading.current_thread() is not threading.main_thread():  # pragma: no cover
        yield
        return
    _MAIN_PID = os.getpid()
    _register_fork_hooks()
    rfd, wfd = os.pipe()
    os.set_blocking(wfd, False)

    def watch():
        while True:
            try:
                data = os.read(rfd, 1)
            except OSError:
                return
            if not data:
                return
            signum = data[0]
            if signum in (signal.SIGTERM, signal.SIGINT) and os.getpid() == _MAIN_PID:
                _shutdown(signum)

    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    old_fd = signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)
    for s in old:
        signal.signal(s, _main_thread_handler)
    thread = threading.Thread(target=watch, name="qsmprep-signals", daemon=True)
    thread.start()
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        signal.set_wakeup_fd(old_fd)
        _MAIN_PID = None
        os.close(wfd)
        thread.join(timeout=1.0)
        os.close(rfd)


# ------------------------------------------------------------------------------------------
# full disks
class NoSpaceWatcher(logging.Handler):
    """Logging handler that remembers Nipype node failures caused by a full disk.

    A node's exception does not reach the caller of ``wf.run`` (Nipype logs its traceback and
    raises a generic ``RuntimeError``), so :func:`run_guarded` listens on
    ``nipype.workflow`` at ERROR for the texts in :attr:`NEEDLES`.

    Attributes
    ----------
    hits : list of str
        The messages seen that name ENOSPC or EDQUOT.
    """

    NEEDLES = ("No space left on device", "[Errno 28]", "Disk quota exceeded", "[Errno 122]")

    def __init__(self):
        super().__init__(level=logging.ERROR)
        self.hits: list[str] = []

    def emit(self, record):
        """Keep ``record``'s message if it names a full disk or an exceeded quota.

        Parameters
        ----------
        record : logging.LogRecord
            A record of ``nipype.workflow`` at ERROR or above; one whose message cannot be
            formatted is ignored.

        Returns
        -------
        None
            Matching messages are appended to :attr:`hits`.
        """
        try:
            msg = record.getMessage()
        except Exception:  # pragma: no cover
            return
        if any(n in msg for n in self.NEEDLES):
            self.hits.append(msg)


def _cleanup_hidden_temporaries(folder: Path):
    """Hidden temporary files this process left in ``folder`` and ``folder/logs`` (``.name.<pid>*``)."""
    pid = str(os.getpid())
    for d in (folder, folder / "logs"):
        with contextlib.suppress(OSError):
            for p in d.iterdir():
                if p.name.startswith(".") and pid in p.name and p.is_file():
                    with contextlib.suppress(OSError):
                        p.unlink()


def run_guarded(runner, config) -> int:
    """Run one analysis level with signal handling, lock release and full-disk errors.

    Parameters
    ----------
    runner : callable
        ``runner(config) -> int``, e.g. ``run_participant`` or ``run_group``.
    config : RunConfig or object
        Passed to ``runner``; its ``output_dir`` and ``work_dir`` are the folders named in a
        full-disk message.

    Returns
    -------
    int
        What ``runner`` returned.

    Raises
    ------
    OutputNotWritableError
        Exit 73 when the run failed on ENOSPC/EDQUOT anywhere (an ``OSError`` raised by
        ``runner``, a publication, or a Nipype node whose traceback said so); hidden
        temporaries of this process are removed from the output folder first.

    Notes
    -----
    SIGTERM/SIGINT inside ``runner`` end the process (143/130) without returning. The
    subject locks are released on every way out.
    """
    out = Path(config.output_dir)
    work = Path(config.work_dir) if getattr(config, "work_dir", None) is not None else None
    watcher = NoSpaceWatcher()
    nipype_log = logging.getLogger("nipype.workflow")
    nipype_log.addHandler(watcher)
    del publish.NO_SPACE_ERRORS[:]
    try:
        with signal_guard():
            try:
                code = runner(config)
            except OSError as exc:
                if publish.is_no_space(exc):
                    folder = Path(exc.filename).parent if exc.filename else out
                    raise publish.no_space_error(folder, exc, extra_folders=[
                        f for f in (out, work) if f is not None and f != folder]) from exc
                raise
            if code and publish.NO_SPACE_ERRORS:
                raise publish.NO_SPACE_ERRORS[0]
            if code and watcher.hits:
                raise publish.no_space_error(out, extra_folders=[work])
            return code
    except OutputNotWritableError:
        _cleanup_hidden_temporaries(out)
        raise
    finally:
        nipype_log.removeHandler(watcher)
        release_locks()
