"""Phase range detection and rescaling to radians in ``[-pi, pi)``.

Scanners and converters store phase in very different ways: radians (``-pi..pi``), Siemens
12-bit integers (``-4096..4095`` or ``0..4095``), 16-bit integers (``0..65535``,
``-32768..32767``), or an arbitrary float range. QSM needs radians, so the *stored* range is
inspected and mapped linearly onto ``[-pi, pi)``; what was detected is returned in ``info`` so
that it can be logged and written into sidecars.

Header scaling trap
-------------------
This module does no file I/O. Callers read the values themselves; when a NIfTI header carries
``scl_slope``/``scl_inter`` (nibabel applies them in ``img.get_fdata()``), the scaled values can
be meaningless for phase: ROMEO's test data store ``scl_slope = 1/855`` so the scaled phase is
``+-0.0037`` while the raw stored values are ``-pi..pi``. Pass both versions,
``img.get_fdata()`` and ``np.asarray(img.dataobj.get_unscaled())``, to
:func:`choose_phase_values`, which picks the one whose range looks like phase, then call
:func:`detect_and_rescale_phase` on it.

References
----------
Eckstein K, et al. ROMEO.jl / MriResearchTools.jl ``readphase``: min/max rescaling of phase
to ``[-pi, pi]`` (MIT licence).
BIDS specification, qMRI (MEGRE): phase ``Units`` are ``rad`` or ``arbitrary``.
"""

from __future__ import annotations

import numpy as np

#: Nominal integer phase ranges (inclusive) recognised, most specific first.
KNOWN_INTEGER_RANGES: tuple[tuple[int, int], ...] = (
    (-4096, 4095),
    (0, 4095),
    (-2048, 2047),
    (0, 8191),
    (-32768, 32767),
    (0, 65535),
)

#: Tolerance (rad) for deciding that values already are radians.
RADIAN_EPS = 1e-3


def wrap_to_pi(x):
    """Wrap angles to ``[-pi, pi)``.

    Parameters
    ----------
    x : array_like
        Angles (rad).

    Returns
    -------
    ndarray
        ``x`` wrapped to ``[-pi, pi)``.

    Examples
    --------
    >>> float(wrap_to_pi(3 * np.pi / 2))
    -1.5707963267948966
    """
    x = np.asarray(x)
    if (x.dtype in (np.float32, np.float64) and x.size >= 4096
            and (x.flags.c_contiguous or x.flags.f_contiguous)):
        return _wrap_compiled(x)
    y = x + np.pi
    # np.mod(y, 2 pi) is y itself for 0 <= y < 2 pi: only the other values need the (slow)
    # float remainder; NaN fails the comparisons and takes the np.mod path as before
    inside = (y >= 0.0) & (y < 2.0 * np.pi)
    if inside.all():
        return y - np.pi
    out = np.mod(y, 2.0 * np.pi, where=~inside, out=np.array(y, copy=True))
    out -= np.pi
    return out


def _wrap_compiled(x):
    """``np.mod(x + pi, 2 pi) - pi`` bit for bit, one compiled pass for ``-3 pi <= x < 3 pi``."""
    from ._wrapkernel import wrap_add

    t = x.dtype.type
    b = t(2.0 * np.pi)  # the divisor np.mod(y, 2.0 * np.pi) uses for this dtype
    out = np.empty_like(x)
    n_rest = wrap_add(x.ravel(order="K"), b, t(np.pi), out.ravel(order="K"))
    if n_rest:
        y = x + np.pi
        rest = ~((y >= -b) & (y < b + b))  # NaN included
        out[rest] = np.mod(y[rest], 2.0 * np.pi) - np.pi
    return out


#: stored phase types the compiled rescaling takes (others, e.g. float16, use the numpy steps)
_COMPILED_PHASE_TYPES = (np.float32, np.float64, np.int8, np.int16, np.int32, np.int64,
                         np.uint8, np.uint16, np.uint32, np.uint64)


def _rescale_wrap(values, scale, offset, apply_scale):
    """The float32 phase of :func:`detect_and_rescale_phase` in one compiled pass, or None.

    None when the compiled pass does not apply (small or non-contiguous arrays, other types)
    or when a rescaled value lies outside the range it wraps exactly; the caller then runs the
    numpy steps, which give the same values.
    """
    if (values.dtype.type not in _COMPILED_PHASE_TYPES or not values.dtype.isnative
            or values.size < 4096
            or not (values.flags.c_contiguous or values.flags.f_contiguous)):
        return None
    from ._wrapkernel import rescale_wrap

    out = np.empty_like(values, dtype=np.float32)  # the same memory layout (order "K")
    n_rest = rescale_wrap(values.ravel(order="K"), float(scale), float(offset),
                          bool(apply_scale), 2.0 * np.pi, np.pi, out.ravel(order="K"))
    return None if n_rest else out


def _finite_range(values: np.ndarray) -> tuple[float, float, int]:
    finite = np.isfinite(values)
    n_bad = int(values.size - np.count_nonzero(finite))
    if n_bad == values.size:
        return 0.0, 0.0, n_bad
    if n_bad:
        v = values[finite]
    else:
        v = values
    return float(v.min()), float(v.max()), n_bad


def _is_integer_like(values: np.ndarray) -> bool:
    if np.issubdtype(values.dtype, np.integer):
        return True
    fin = np.isfinite(values)
    if fin.all():  # the same C-order sample as below, without copying every value
        step = max(1, values.size // 200000)
        sample = values[np.unravel_index(np.arange(0, values.size, step), values.shape)]
        return bool(np.all(sample == np.round(sample)))
    finite = values[fin]
    if finite.size == 0:
        return False
    sample = finite.ravel()[:: max(1, finite.size // 200000)]
    return bool(np.all(sample == np.round(sample)))


def _looks_like_radians(lo: float, hi: float) -> bool:
    return lo >= -np.pi - RADIAN_EPS and hi <= np.pi + RADIAN_EPS and (hi - lo) > np.pi / 2


def _match_integer_range(lo: float, hi: float) -> tuple[int, int] | None:
    """Smallest known integer range containing ``[lo, hi]`` that the data span at least 50% of."""
    for a, b in KNOWN_INTEGER_RANGES:
        if lo >= a and hi <= b and (hi - lo) >= 0.5 * (b - a):
            return a, b
    return None


def detect_and_rescale_phase(raw: np.ndarray, units: str | None = None):
    """Detect how phase values are stored and rescale them to radians in ``[-pi, pi)``.

    Parameters
    ----------
    raw : ndarray
        Stored phase values (any shape; 4-D ``(x, y, z, echo)`` in the pipeline). Pass the raw
        stored values when header scaling is suspect (see :func:`choose_phase_values`).
    units : {'rad', 'arbitrary', None}
        The BIDS sidecar ``Units``. ``None`` means detect from the range. ``'rad'`` trusts radians
        (values are only wrapped); ``'arbitrary'`` forces an integer-range or min/max rescaling.

    Detection rules (``lo``/``hi`` = finite min/max):

    * radians: ``[lo, hi]`` within ``[-pi - eps, pi + eps]`` (and not forced ``arbitrary``):
      values are wrapped to ``[-pi, pi)`` only;
    * integer-like values within a known range (``-4096..4095``, ``0..4095``, ``-2048..2047``,
      ``0..8191``, ``-32768..32767``, ``0..65535``) spanning >= 50 % of it:
      ``phase = (x - a) / (b - a + 1) * 2 pi - pi`` (so ``-4096..4095`` gives ``x * pi / 4096``);
    * anything else: min/max rescaling to ``[-pi, pi]`` (as ROMEO's ``readphase``), then wrap.

    Non-finite values are set to 0 and counted.

    Returns
    -------
    phase : float32 ndarray, same shape, in ``[-pi, pi)``
    info : dict with ``detected`` (``'radians'``, ``'integer -4096..4095'``, ``'minmax'``, ...),
        ``observed_min``, ``observed_max``, ``scale`` and ``offset`` (``phase = wrap(x * scale +
        offset)``), ``n_nonfinite``, ``units_hint``.
    """
    values = np.asarray(raw)
    if values.dtype.kind not in "fiu":
        raise TypeError(f"Phase must be numeric, got dtype {values.dtype}")
    lo, hi, n_bad = _finite_range(values)
    integer_like = _is_integer_like(values)
    units_l = None if units is None else str(units).strip().lower()
    if units_l in ("radian", "radians"):
        units_l = "rad"
    if units_l not in (None, "rad", "arbitrary"):
        raise ValueError(f"Unknown phase units {units!r}; expected 'rad' or 'arbitrary'.")

    notes = []
    if units_l == "rad" or (units_l is None and _looks_like_radians(lo, hi) and not (
        integer_like and hi - lo > 2 * np.pi + RADIAN_EPS
    )):
        detected, scale, offset = "radians", 1.0, 0.0
        if not _looks_like_radians(lo, hi):
            notes.append(
                f"Units say radians but values span [{lo:.4g}, {hi:.4g}]; wrapped to [-pi, pi)."
            )
    else:
        rng = _match_integer_range(lo, hi) if integer_like else None
        if rng is not None:
            a, b = rng
            scale = 2.0 * np.pi / (b - a + 1)
            offset = -np.pi - a * scale
            detected = f"integer {a}..{b}"
        elif hi > lo:
            scale = 2.0 * np.pi / (hi - lo)
            offset = -np.pi - lo * scale
            detected = "minmax"
        else:
            scale, offset = 1.0, 0.0
            detected = "constant"
            notes.append("Phase is constant; left unchanged.")

    # float64 arithmetic, float32 result; one compiled pass where it applies, else numpy
    out = _rescale_wrap(values, scale, offset, detected != "radians")
    if out is None:
        out = values.astype(np.float64, copy=True) if values.dtype != np.float64 else values.copy()
        if n_bad:
            out[~np.isfinite(out)] = 0.0
        if detected != "radians":
            out *= scale
            out += offset
        out = wrap_to_pi(out).astype(np.float32)
        if n_bad:
            # Non-finite voxels were set to 0 *before* scaling: set them to exactly 0 rad.
            out[~np.isfinite(values)] = 0.0
    if n_bad:
        notes.append(f"{n_bad} non-finite phase values set to 0.")
    info = {
        "detected": detected,
        "observed_min": lo,
        "observed_max": hi,
        "scale": float(scale),
        "offset": float(offset),
        "n_nonfinite": n_bad,
        "units_hint": units,
        "integer_like": bool(integer_like),
        "notes": notes,
    }
    return out, info


def _phase_likeness(values: np.ndarray) -> tuple[str, float]:
    lo, hi, _ = _finite_range(np.asarray(values))
    if _looks_like_radians(lo, hi):
        return "radians", (hi - lo)
    if _is_integer_like(np.asarray(values)) and _match_integer_range(lo, hi) is not None:
        return "integer", (hi - lo)
    return "other", (hi - lo)


def choose_phase_values(scaled: np.ndarray, unscaled: np.ndarray):
    """Choose between header-scaled and raw stored phase values.

    A wrapped phase image spans (nearly) ``2 pi`` in radians or a known integer range. The
    header-scaled values are preferred when they look like phase; otherwise the raw stored values
    are used when *they* look like phase (the ``scl_slope`` trap); if neither does, the version
    with the larger span is returned and :func:`detect_and_rescale_phase` will min/max-rescale it.

    Parameters
    ----------
    scaled : ndarray
        Values with the NIfTI header scaling applied.
    unscaled : ndarray
        The raw stored values.

    Returns
    -------
    values : ndarray
        One of the two inputs (not copied).
    note : str
        The choice, for logs and sidecars.
    """
    kind_s, span_s = _phase_likeness(scaled)
    same = unscaled is scaled  # no header scaling: the caller passed one array twice
    kind_u, span_u = (kind_s, span_s) if same else _phase_likeness(unscaled)
    if kind_s != "other":
        if kind_u == "other" or np.array_equal(scaled, unscaled):
            return scaled, f"header-scaled values used ({kind_s}, span {span_s:.4g})"
        return scaled, f"header-scaled values used ({kind_s}, span {span_s:.4g}); raw also plausible"
    if kind_u != "other":
        return unscaled, (
            f"header scaling ignored: scaled span {span_s:.4g} does not look like phase, "
            f"raw stored values do ({kind_u}, span {span_u:.4g})"
        )
    if span_u > span_s:
        return unscaled, f"neither looks like phase; raw values (span {span_u:.4g}) will be min/max rescaled"
    return scaled, f"neither looks like phase; scaled values (span {span_s:.4g}) will be min/max rescaled"


def complex_to_mag_phase(real: np.ndarray, imag: np.ndarray):
    """Magnitude and phase (radians, ``[-pi, pi)``) from real and imaginary parts.

    BIDS allows a GRE acquisition to be stored as ``part-real`` / ``part-imag`` images; QSM
    needs ``|re + i im|`` and ``angle(re + i im)``. Both parts must carry the same scaling (read
    them with their header scaling applied, ``img.get_fdata()``): a common factor does not change
    the phase and scales the magnitude, as it would scale a magnitude image.

    Voxels where either part is non-finite get magnitude 0 and phase 0 (callers count them
    beforehand, see :func:`qsmprep.qsm.masking.nonfinite_voxels`).

    Parameters
    ----------
    real, imag : ndarray, same shape

    Returns
    -------
    mag : float32 ndarray, >= 0
    phase : float32 ndarray in ``[-pi, pi)``

    References
    ----------
    BIDS specification, "part" entity (mag, phase, real, imag) and qMRI MEGRE.
    """
    re = np.asarray(real, dtype=np.float64)
    im = np.asarray(imag, dtype=np.float64)
    if re.shape != im.shape:
        raise ValueError(f"real and imaginary parts differ in shape: {re.shape} vs {im.shape}")
    bad = ~(np.isfinite(re) & np.isfinite(im))
    if bad.any():
        re = np.where(bad, 0.0, re)
        im = np.where(bad, 0.0, im)
    mag = np.hypot(re, im).astype(np.float32)
    phase = wrap_to_pi(np.arctan2(im, re)).astype(np.float32)
    return mag, phase


METHODS = {"auto": detect_and_rescale_phase}
DEFAULT = "auto"
