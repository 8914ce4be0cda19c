"""Exceptions that carry a BEP027 exit code.

Every error raised for bad input or bad usage is a :class:`QSMPrepError` subclass; its
``exit_code`` is what ``qsmprep`` returns to the shell (see ``docs/usage.md``):

====  =============================  ==================================================
code  class                          meaning
====  =============================  ==================================================
1     (none: a node crashed)         one participant failed while the others finished
16    :class:`BIDSValidationError`   the input dataset failed BIDS validation
17    :class:`UnknownAnalysisLevel`  analysis level is not ``participant`` or ``group``
18    :class:`NoMatchingData`        the participant/session/filter selection matched nothing
64    :class:`UsageError`            bad command line (unknown option, bad value)
65    :class:`DataError`             inconsistent echoes, unusable metadata, a ROI table
                                     the group level cannot use
66    :class:`MissingInputError`     input missing or unreadable (no phase images, ...)
73    :class:`OutputNotWritableError`  the output (or work) directory cannot be created or
                                     written (also: no space left on device)
75    :class:`SubjectLockedError`    the subject is being processed by another run
130   (none: SIGINT)                 interrupted with Ctrl-C (workers stopped)
143   (none: SIGTERM)                terminated by SIGTERM (workers stopped)
====  =============================  ==================================================

Messages name the offending file and say how to fix the problem.
"""

from __future__ import annotations

__all__ = [
    "EXIT_CRASH",
    "QSMPrepError",
    "BIDSValidationError",
    "UnknownAnalysisLevel",
    "NoMatchingData",
    "UsageError",
    "DataError",
    "MissingInputError",
    "OutputNotWritableError",
    "SubjectLockedError",
]

#: Exit code for "a participant crashed while the others finished" (BEP027: unspecified failure).
EXIT_CRASH = 1


class QSMPrepError(Exception):
    """Base class: an actionable message plus the exit code the CLI returns.

    ``main()`` logs ``str(error)`` as one line (no traceback) and exits with ``exit_code``.

    Parameters
    ----------
    msg : str
        What is wrong, naming the offending file or option, and how to fix it.
    exit_code : int, optional
        Overrides the class's code for this instance.

    Attributes
    ----------
    exit_code : int
        The process exit status (class attribute of each subclass, see the module table).
    msg : str
        The message.

    Example
    -------
    >>> err = UsageError("--nprocs 0: give at least 1")
    >>> err.exit_code, str(err)
    (64, '--nprocs 0: give at least 1')
    """

    exit_code = 1

    def __init__(self, msg: str, exit_code: int | None = None):
        super().__init__(msg)
        self.msg = msg
        if exit_code is not None:
            self.exit_code = int(exit_code)

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.msg


class BIDSValidationError(QSMPrepError):
    """The input dataset is not valid BIDS (exit code 16)."""

    exit_code = 16


class UnknownAnalysisLevel(QSMPrepError):
    """The analysis level is neither ``participant`` nor ``group`` (exit code 17)."""

    exit_code = 17


class NoMatchingData(QSMPrepError):
    """A participant/session label or a ``--bids-filter-file`` selected nothing (exit code 18)."""

    exit_code = 18


class UsageError(QSMPrepError):
    """Bad command line usage (exit code 64)."""

    exit_code = 64


class DataError(QSMPrepError):
    """Input data present but inconsistent or with unusable metadata (exit code 65)."""

    exit_code = 65


class MissingInputError(QSMPrepError):
    """Required input missing or unreadable (exit code 66)."""

    exit_code = 66


class OutputNotWritableError(QSMPrepError):
    """The output or working directory cannot be created or written (exit code 73)."""

    exit_code = 73


class SubjectLockedError(QSMPrepError):
    """Another live qsmprep process holds the subject's lock (exit code 75, EX_TEMPFAIL)."""

    exit_code = 75
