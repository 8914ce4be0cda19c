"""All-or-nothing publication of a subject's derivatives, and which subjects are complete.

A subject's outputs reach ``OUTPUT_DIR`` in one step, :func:`publish_subject`:

1. **retract**: the subject's completion marker (``logs/completed/sub-<label>.json``) is moved
   aside, so from now on the subject is *not complete* (a rerun that replaces files is never seen
   half-done);
2. **stage**: every file is copied into ``logs/.staging-sub-<label>-<pid>/`` (same file system as
   the destinations; ``logs/`` is in ``.bidsignore``). A full disk fails here, before anything
   under ``sub-<label>`` changed;
3. **swap**: each staged file is renamed over its destination (``os.replace``, atomic per file);
   the file it replaces is kept as a hard link in the staging folder until the end;
4. **mark**: the new marker, listing every published file with its size, is written under a
   temporary name and renamed into place. Only now is the subject complete.

On any error the swap is undone (replaced files restored, new files and new empty folders
removed, the old marker put back), the staging folder is deleted, and the error is raised; a
full disk becomes :class:`qsmprep.errors.OutputNotWritableError` (exit 73) naming the folder
and its free space. A process killed during steps 2-4 (``kill -9``) leaves the subject without
a marker, i.e. not complete; the next publication of that subject removes the stale staging
folder. The marker location needs no ``.bidsignore`` entry of its own (``logs/`` is ignored).

:func:`completed_subjects` is what the group level uses (contract 4): a subject counts only
when its marker exists, parses, and every file it lists is present with the recorded size.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import time
from pathlib import Path

from . import __version__
from .errors import OutputNotWritableError

__all__ = [
    "MARKER_DIR",
    "completed_subjects",
    "mark_complete",
    "marker_path",
    "publish_subject",
    "no_space_error",
    "is_no_space",
    "free_space_text",
]

LOGGER = logging.getLogger("qsmprep.publish")

#: Completion markers, relative to the output folder (``logs/`` is in ``.bidsignore``).
MARKER_DIR = Path("logs") / "completed"
_STAGING_PREFIX = ".staging-sub-"
#: Errors that mean "the file system is full" (disk full, quota exceeded).
NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
#: Staging folders of this process still in use (removed by the SIGTERM/SIGINT handler).
ACTIVE_STAGING: set[Path] = set()
#: Full-disk errors raised by publications in this process (read by the CLI for exit 73).
NO_SPACE_ERRORS: list = []
_NO_BACKUP = object()


def marker_path(output_dir, subject: str) -> Path:
    """Where the completion marker of a subject is.

    Parameters
    ----------
    output_dir : str or Path
        The derivatives folder.
    subject : str
        Subject label, with or without ``sub-``.

    Returns
    -------
    Path
        ``output_dir/logs/completed/sub-<label>.json``.

    Example
    -------
    >>> marker_path("out", "sub-01").as_posix()
    'out/logs/completed/sub-01.json'
    """
    label = str(subject)[4:] if str(subject).startswith("sub-") else str(subject)
    return Path(output_dir) / MARKER_DIR / f"sub-{label}.json"


def is_no_space(exc: BaseException) -> bool:
    """Whether an exception means a full file system.

    Parameters
    ----------
    exc : BaseException
        Any exception.

    Returns
    -------
    bool
        True for an ``OSError`` with errno ``ENOSPC`` (disk full) or ``EDQUOT`` (quota).

    Example
    -------
    >>> import errno
    >>> is_no_space(OSError(errno.ENOSPC, "No space left on device"))
    True
    """
    return isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS


def _human(nbytes: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(nbytes) < 1000 or unit == "TB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000.0
    return f"{nbytes:.1f} TB"  # pragma: no cover


def free_space_text(folder) -> str:
    """A folder with the free space of its file system, for error messages.

    Parameters
    ----------
    folder : str or Path
        Need not exist: the nearest existing parent is measured.

    Returns
    -------
    str
        ``'<folder> (<free> free of <total>)'`` (decimal units, from
        :func:`shutil.disk_usage`), or ``'<folder> (free space unknown)'``.
    """
    path = Path(folder)
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        usage = shutil.disk_usage(probe)
    except OSError:  # pragma: no cover - unreadable mount
        return f"{path} (free space unknown)"
    return f"{path} ({_human(usage.free)} free of {_human(usage.total)})"


def no_space_error(folder, exc: BaseException | None = None, needed: int | None = None,
                   extra_folders=()) -> OutputNotWritableError:
    """The exit-73 error for a full file system, naming the folder and its free space.

    Parameters
    ----------
    folder : str or Path
        The folder being written to.
    exc : BaseException, optional
        The original error; its ``strerror`` and file name are quoted.
    needed : int, optional
        Bytes the operation needed (said in the message).
    extra_folders : iterable of path
        Other folders of the run (output, work) whose free space the message also gives.

    Returns
    -------
    OutputNotWritableError
        Not raised: the caller raises it (``raise no_space_error(...) from exc``).
    """
    what = f" ({exc.strerror}: {exc.filename})" if isinstance(exc, OSError) and exc.filename else ""
    need = f"; {_human(needed)} needed" if needed else ""
    others = "".join(f"; also {free_space_text(f)}" for f in extra_folders if f is not None)
    return OutputNotWritableError(
        f"No space left on device writing to {free_space_text(folder)}{need}{others}{what}. "
        "Free some space (or choose another output/work folder) and rerun the same command "
        "with the same -w: finished steps are not recomputed."
    )


# ------------------------------------------------------------------------------------------
def completed_subjects(output_dir) -> set[str]:
    """The subjects whose publication finished (contract 4); what the group level reads.

    A subject is complete when ``logs/completed/sub-<label>.json`` exists, is valid JSON and
    every file it lists exists with the recorded size. Anything else (no marker: never
    published, being republished, or interrupted; a listed file missing or truncated) is
    incomplete and logged at WARNING.

    Parameters
    ----------
    output_dir : str or Path
        The derivatives folder.

    Returns
    -------
    set of str
        Subject labels without ``sub-`` (empty when nothing is complete).
    """
    root = Path(output_dir) / MARKER_DIR
    done = set()
    if not root.is_dir():
        return done
    for marker in sorted(root.glob("sub-*.json")):
        label = marker.name[len("sub-"):-len(".json")]
        try:
            record = json.loads(marker.read_text())
            files = record["Files"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            LOGGER.warning("sub-%s: completion marker %s unreadable (%s): subject treated as "
                           "incomplete; rerun its participant level", label, marker, exc)
            continue
        bad = []
        for rel, size in files.items():
            path = Path(output_dir) / rel
            try:
                if path.stat().st_size != int(size):
                    bad.append(f"{rel} (size changed)")
            except OSError:
                bad.append(f"{rel} (missing)")
        if bad:
            LOGGER.warning("sub-%s: %d published file(s) missing or changed since publication "
                           "(%s): subject treated as incomplete; rerun its participant level",
                           label, len(bad), ", ".join(bad[:3]) + (" ..." if len(bad) > 3 else ""))
            continue
        done.add(label)
    return done


def _copyfile(src, dst):
    shutil.copyfile(src, dst)


def _marker_record(label, files):
    return {
        "Subject": f"sub-{label}",
        "GeneratedBy": {"Name": "qsmprep", "Version": __version__},
        "Completed": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "Description": "Written by qsmprep after every output of this subject was in place; "
                       "the group level uses only subjects with this file (Files: path -> "
                       "size in bytes).",
        "Files": files,
    }


def _write_marker(marker: Path, record: dict, tmp: Path):
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, marker)


def mark_complete(output_dir, subject: str) -> Path:
    """Mark a subject complete with the files now under ``sub-<label>/`` (+ ``sub-<label>.html``).

    For output trees assembled without :func:`publish_subject` (tests, benchmarks), or outputs
    of a qsmprep version without markers once they have been checked by hand.

    Parameters
    ----------
    output_dir : str or Path
        The derivatives folder.
    subject : str
        Subject label, with or without ``sub-``.

    Returns
    -------
    Path
        The marker written (atomically), listing every file with its size.
    """
    out = Path(output_dir)
    label = str(subject)[4:] if str(subject).startswith("sub-") else str(subject)
    paths = [p for p in sorted((out / f"sub-{label}").rglob("*")) if p.is_file()]
    if (out / f"sub-{label}.html").is_file():
        paths.append(out / f"sub-{label}.html")
    files = {str(p.relative_to(out)): p.stat().st_size for p in paths}
    marker = marker_path(out, label)
    _write_marker(marker, _marker_record(label, files),
                  marker.with_name(f".{marker.name}.{os.getpid()}.tmp"))
    return marker


# ------------------------------------------------------------------------------------------
def _remove_stale_staging(logs: Path, label: str):
    """Staging folders of ``label`` left by a killed process (the caller holds the subject lock)."""
    for stale in logs.glob(f"{_STAGING_PREFIX}{label}-*"):
        if stale.is_dir() and stale not in ACTIVE_STAGING:
            LOGGER.info("sub-%s: removing the staging folder of an interrupted publication: %s",
                        label, stale)
            shutil.rmtree(stale, ignore_errors=True)


def publish_subject(plan, output_dir, subject: str, *, copy=None) -> list[str]:
    """Publish ``plan`` (``[(source, relative destination), ...]``) for ``subject``, all or nothing.

    Parameters
    ----------
    plan : list of (str, str)
        Source file and its destination relative to ``output_dir``.
    output_dir : path
        The derivatives folder.
    subject : str
        Subject label (with or without ``sub-``).
    copy : callable, optional
        ``copy(src, dst)``; default :func:`shutil.copyfile`.

    Returns
    -------
    list of str: absolute destination paths, in ``plan`` order.

    Raises
    ------
    OutputNotWritableError
        (exit 73) when the file system is full, before anything is copied when the free space
        is known to be too small, else as soon as a copy hits ``ENOSPC``.
    OSError
        any other I/O error, after the rollback described in the module docstring.
    """
    copy = copy or _copyfile
    out = Path(output_dir)
    label = str(subject)[4:] if str(subject).startswith("sub-") else str(subject)
    logs = out / "logs"
    marker = marker_path(out, label)
    needed = sum(os.path.getsize(src) for src, _ in plan)
    try:
        logs.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(logs).free
    except OSError as exc:
        if is_no_space(exc):
            err = no_space_error(out, exc, needed)
            NO_SPACE_ERRORS.append(err)
            raise err from exc
        raise
    if needed > free:
        err = no_space_error(out, None, needed)
        NO_SPACE_ERRORS.append(err)
        raise err
    _remove_stale_staging(logs, label)
    staging = logs / f"{_STAGING_PREFIX}{label}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    ACTIVE_STAGING.add(staging)
    marker_backup = staging / "marker.json"
    swapped = []   # (dest, backup or None)
    created_dirs = []
    had_marker = False
    try:
        staging.mkdir(parents=True)
        (staging / "new").mkdir()
        (staging / "old").mkdir()
        # 1. retract completion
        if marker.exists():
            os.replace(marker, marker_backup)
            had_marker = True
        # 2. stage every file (the step that needs space)
        staged = []
        for k, (src, rel) in enumerate(plan):
            tmp = staging / "new" / f"{k:04d}_{Path(rel).name}"
            copy(src, tmp)
            staged.append(tmp)
        # 3. swap into place
        for k, ((src, rel), tmp) in enumerate(zip(plan, staged)):
            dest = out / rel
            missing = []
            parent = dest.parent
            while not parent.exists():
                missing.append(parent)
                parent = parent.parent
            for d in reversed(missing):
                d.mkdir()
                created_dirs.append(d)
            backup = None
            if dest.exists():
                backup = staging / "old" / f"{k:04d}_{dest.name}"
                try:
                    os.link(dest, backup)
                except OSError:  # no hard links on this file system: cannot be undone
                    backup = _NO_BACKUP
            os.replace(tmp, dest)
            swapped.append((dest, backup))
        # 4. mark complete
        record = _marker_record(label, {str(rel): os.path.getsize(out / rel) for _, rel in plan})
        _write_marker(marker, record, staging / "marker.new")
    except BaseException as exc:
        _rollback(swapped, created_dirs, marker, marker_backup if had_marker else None, label)
        shutil.rmtree(staging, ignore_errors=True)
        ACTIVE_STAGING.discard(staging)
        if is_no_space(exc):
            err = no_space_error(out, exc, needed)
            NO_SPACE_ERRORS.append(err)
            raise err from exc
        raise
    shutil.rmtree(staging, ignore_errors=True)
    ACTIVE_STAGING.discard(staging)
    return [str(out / rel) for _, rel in plan]


def _rollback(swapped, created_dirs, marker, marker_backup, label):
    problems = []
    for dest, backup in reversed(swapped):
        try:
            if backup is _NO_BACKUP:
                problems.append(f"{dest}: replaced, no hard-link backup possible on this file system")
            elif backup is not None:
                os.replace(backup, dest)
            else:
                dest.unlink()
        except OSError as exc:  # pragma: no cover - a second failure while undoing
            problems.append(f"{dest}: {exc}")
    for d in reversed(created_dirs):
        try:
            d.rmdir()
        except OSError:
            pass
    if marker_backup is not None and not problems:
        try:
            os.replace(marker_backup, marker)
        except OSError as exc:  # pragma: no cover
            problems.append(f"{marker}: {exc}")
    if problems:  # pragma: no cover
        LOGGER.error("sub-%s: publication failed and could not be fully undone (%s); the subject "
                     "is marked incomplete: rerun it", label, "; ".join(problems))
    else:
        LOGGER.warning("sub-%s: publication failed; the output folder is as before (%s)", label,
                       "previous complete outputs kept" if marker_backup is not None
                       else "nothing of this subject published")
