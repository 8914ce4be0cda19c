"""Nipype's content hashes of input files, computed once per file version and process.

qsmprep runs Nipype with ``hash_method = "content"`` (a work folder stays valid when the input
files' timestamps change without their content, e.g. after a DataLad or rsync checkout), so
Nipype computes the MD5 of every input file of every node: in the scheduler before it submits a
node (to see whether the node is cached) and again in the worker that runs it. One 1 mm
session's 4-D magnitude and phase (240 MB each) are inputs of several nodes: a fully cached
re-run of the 2-session subject of ``benchmarks/participant.py --preset 1mm`` spent 40 of its
53 s in MD5 (about 20 GB read), serial with the scheduling in the scheduler's process.

:func:`install` wraps Nipype's ``hash_infile`` with a per-process memo keyed by the file's
identity and version: real path, device, inode, size, modification and status-change times
(nanoseconds). A file that is rewritten, replaced, truncated or touched gets a new key and is
hashed again, so the hash values, and hence Nipype's caching decisions, are exactly those of
Nipype's own function. Worker processes forked by MultiProc inherit the wrapper; batch plugins
(SLURM) run nodes in fresh processes that use Nipype's function as is.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading

_MEMO: dict[tuple, str | None] = {}
_LOCK = threading.Lock()
_ORIGINAL = None


def _key(afile, chunk_len, crypto):
    try:
        real = os.path.realpath(afile)
        st = os.stat(real)
    except (OSError, TypeError, ValueError):
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return (real, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns,
            chunk_len, getattr(crypto, "__name__", repr(crypto)))


def hash_infile(afile, chunk_len=8192, crypto=hashlib.md5, raise_notfound=False):
    """Nipype's ``hash_infile``, memoised per file version (same arguments, same result).

    Parameters
    ----------
    afile : str
        File to hash.
    chunk_len : int, default 8192
        Read size (passed to Nipype's function).
    crypto : callable, default hashlib.md5
        Hash constructor (passed to Nipype's function).
    raise_notfound : bool, default False
        Raise when the file does not exist (else ``None``), as Nipype's function.

    Returns
    -------
    str or None
        The hex digest, or ``None`` for a missing file.
    """
    original = _ORIGINAL or _nipype_hash_infile()
    key = _key(afile, chunk_len, crypto)
    if key is None:  # missing, not a regular file, unreadable metadata: Nipype decides
        return original(afile, chunk_len=chunk_len, crypto=crypto, raise_notfound=raise_notfound)
    with _LOCK:
        if key in _MEMO:
            return _MEMO[key]
    value = original(afile, chunk_len=chunk_len, crypto=crypto, raise_notfound=raise_notfound)
    if _key(afile, chunk_len, crypto) == key:  # unchanged while it was read: keep it
        with _LOCK:
            _MEMO[key] = value
    return value


def _nipype_hash_infile():
    from nipype.utils import filemanip

    return filemanip.hash_infile


def install() -> None:
    """Make Nipype's input hashing (``specs`` and ``support`` modules) use :func:`hash_infile`.

    Idempotent. Call it in the process that runs the workflow, before ``wf.run``.
    """
    global _ORIGINAL
    from nipype.interfaces.base import specs, support

    if _ORIGINAL is None:
        _ORIGINAL = _nipype_hash_infile()
    specs.hash_infile = hash_infile
    support.hash_infile = hash_infile


def clear() -> None:
    """Forget the memo (tests)."""
    with _LOCK:
        _MEMO.clear()
