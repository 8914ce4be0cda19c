"""What the sidecars and headers of one GRE run say: echo times, field strength, phase units,
grid; and the user-supplied brain mask (``--brain-masks``).

Every function reads headers and sidecars only (no image data) and raises a
:mod:`qsmprep.errors` exception naming the file and the fix.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import DataError, MissingInputError

LOGGER = logging.getLogger("qsmprep.bids")

__all__ = ["sidecar_path", "read_echo_metadata", "check_echo_order", "field_strength",
           "phase_units", "check_geometry", "find_user_mask"]


def _coerce_float(value, what, path):
    if isinstance(value, bool):
        raise DataError(f"{what} in the metadata of {path} is a boolean ({value!r}); it must be a number.")
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"{what} = {value!r} in the metadata of {path} is not a number. "
            f"Fix the sidecar {sidecar_path(path)}."
        ) from exc


def sidecar_path(path) -> str:
    """The JSON sidecar path next to a NIfTI file (``.nii``/``.nii.gz`` replaced by ``.json``).

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    str

    Examples
    --------
    >>> sidecar_path("sub-01_echo-1_part-phase_MEGRE.nii.gz")
    'sub-01_echo-1_part-phase_MEGRE.json'
    """
    p = str(path)
    for ext in (".nii.gz", ".nii"):
        if p.endswith(ext):
            return p[: -len(ext)] + ".json"
    return p




def _normalise_units(units, path):
    if units is None:
        LOGGER.warning(
            "%s: the sidecar has no 'Units' for the phase image; the range of the stored values "
            "will decide whether it is radians or arbitrary integers. Add \"Units\": \"rad\" or "
            "\"arbitrary\" to %s to make it explicit.", path, sidecar_path(path))
        return None
    u = str(units).strip().lower()
    if u in ("rad", "radian", "radians"):
        return "rad"
    if u in ("arbitrary", "a.u.", "au", "arb", "arbitrary units"):
        return "arbitrary"
    raise DataError(
        f"Phase image {path} has Units = {units!r}; qsmprep accepts 'rad' or 'arbitrary'. "
        f"Fix the sidecar {sidecar_path(path)} (use 'arbitrary' for integer-scaled phase)."
    )


def _header_geometry(path):
    import nibabel as nb
    import numpy as np

    try:
        img = nb.load(str(path))
    except Exception as exc:  # noqa: BLE001 - any reader failure means unreadable input
        raise MissingInputError(f"Cannot read {path} as NIfTI ({exc}). Is the file complete?") from exc
    shape = tuple(int(s) for s in img.shape)
    if len(shape) > 3 and any(s != 1 for s in shape[3:]):
        raise DataError(
            f"{path} has shape {shape}: a 4-D file with {shape[3]} volumes, but each echo must be a "
            "3-D volume with one number as EchoTime. Split it into one file per echo (e.g. "
            "nibabel's four_to_three or fslsplit) named ..._echo-<n>_part-<mag|phase>_MEGRE.nii.gz, "
            "each sidecar giving that echo's EchoTime in seconds."
        )
    return shape[:3], np.asarray(img.affine, dtype=float)


def check_geometry(files: list[str]):
    """Check that every echo image is 3-D and on one grid (headers only).

    Parameters
    ----------
    files : list of str
        The magnitude and phase images of one run.

    Returns
    -------
    shape : tuple of int
        The 3-D shape.
    affine : numpy.ndarray
        The voxel-to-world matrix of the first file.

    Raises
    ------
    MissingInputError
        Exit 66: a file is not readable as NIfTI.
    DataError
        Exit 65: a 4-D file, or shapes/affines that differ between files.
    """
    import numpy as np

    ref_shape, ref_aff = _header_geometry(files[0])
    for f in files[1:]:
        shape, aff = _header_geometry(f)
        if shape != ref_shape:
            raise DataError(
                f"Shape mismatch between echoes: {f} has {shape}, {files[0]} has {ref_shape}. "
                "All echoes of a GRE run must be on the same grid; reconvert the DICOMs."
            )
        if not np.allclose(aff, ref_aff, atol=1e-4, rtol=1e-5):
            raise DataError(
                f"Affine mismatch between echoes: {f} and {files[0]} have different voxel-to-world "
                "matrices. All echoes of a GRE run must be on the same grid; reconvert the DICOMs."
            )
    return ref_shape, ref_aff



def find_user_mask(masks_dir, subject, session, shape):
    """The user-supplied brain mask of one session (``--brain-masks``), checked against the GRE grid.

    Looks for ``masks_dir/sub-<l>/[ses-<l>/]anat/sub-<l>[_ses-<l>]*_mask.nii[.gz]`` (headers
    only are read).

    Parameters
    ----------
    masks_dir : str or path-like
        The ``--brain-masks`` folder.
    subject : str
        Label without ``sub-``.
    session : str or None
        Label without ``ses-``.
    shape : tuple of int
        Shape of the GRE images.

    Returns
    -------
    str
        Path of the first matching mask.

    Raises
    ------
    MissingInputError
        Exit 66: no mask for this session.
    DataError
        Exit 65: the mask's shape differs from the GRE images.
    """
    import nibabel as nb

    masks_dir = Path(masks_dir)
    prefix = f"sub-{subject}" + (f"_ses-{session}" if session else "")
    folder = masks_dir / f"sub-{subject}" / (f"ses-{session}" if session else "") / "anat"
    found = sorted(folder.glob(f"{prefix}*_mask.nii*")) if folder.is_dir() else []
    if not found:
        raise MissingInputError(
            f"--brain-masks: no mask for {prefix}: expected {folder}/{prefix}_desc-brain_mask.nii.gz "
            "(on the GRE grid). Add it or drop --brain-masks.")
    img = nb.load(str(found[0]))
    if tuple(img.shape[:3]) != tuple(shape[:3]):
        raise DataError(
            f"--brain-masks: {found[0]} has shape {img.shape[:3]}, the GRE images of {prefix} have "
            f"{tuple(shape[:3])}. Resample the mask onto the GRE grid.")
    return str(found[0])

def read_echo_metadata(layout, echoes, mag_files, phase_files):
    """Echo times, field strengths and phase units of one run, read through pybids.

    Sidecar inheritance (top-level ``*_MEGRE.json`` and the like) is pybids'. Each echo's phase
    sidecar must give ``EchoTime`` in seconds; the magnitude's, when present, must agree.

    Parameters
    ----------
    layout : bids.BIDSLayout
        The input dataset.
    echoes : list of int
        Echo numbers, ascending.
    mag_files, phase_files : list of str
        The images of each echo, in the order of ``echoes``.

    Returns
    -------
    echo_times : list of float
        Seconds, one per echo.
    b0_values : list of float
        ``MagneticFieldStrength`` of every phase sidecar that has one (Tesla).
    units : list of str or None
        The phase sidecars' ``Units`` (``None`` where absent).

    Raises
    ------
    DataError
        Exit 65: ``EchoTime`` missing, not a number, not in seconds, or differing between
        magnitude and phase.
    """
    tes = []
    b0_values = []
    units_seen = []
    for e, pf, mf in zip(echoes, phase_files, mag_files):
        pmeta = layout.get_metadata(pf)
        mmeta = layout.get_metadata(mf)
        if "EchoTime" not in pmeta:
            raise DataError(
                f"{pf} has no EchoTime. Add \"EchoTime\" (seconds) to {sidecar_path(pf)} or to a "
                "top-level MEGRE.json-style sidecar."
            )
        te = _coerce_float(pmeta["EchoTime"], "EchoTime", pf)
        if "EchoTime" in mmeta:
            te_m = _coerce_float(mmeta["EchoTime"], "EchoTime", mf)
            if abs(te_m - te) > 1e-6:
                raise DataError(
                    f"Echo {e}: EchoTime differs between {mf} ({te_m}) and {pf} ({te}). Fix the sidecars."
                )
        if not 0 < te < 1:
            raise DataError(
                f"EchoTime = {te} in {sidecar_path(pf)} is not in seconds (expected 0 < TE < 1 s, e.g. "
                "0.004 for 4 ms). Convert it to seconds."
            )
        tes.append(te)
        if "MagneticFieldStrength" in pmeta:
            b0_values.append(_coerce_float(pmeta["MagneticFieldStrength"], "MagneticFieldStrength", pf))
        units_seen.append(pmeta.get("Units"))
    return tes, b0_values, units_seen


def check_echo_order(echo_times, echoes, phase_files, where):
    """Check that the echo times increase with the echo number.

    Parameters
    ----------
    echo_times : list of float
    echoes : list of int
    phase_files : list of str
        Named in the error message.
    where : str
        ``sub-<l>[_ses-<l>]``, for the message.

    Raises
    ------
    DataError
        Exit 65: an echo time does not exceed the previous one.
    """
    if any(t2 <= t1 for t1, t2 in zip(echo_times, echo_times[1:])):
        raise DataError(
            f"{where}: echo times {echo_times} do not increase with the echo number {echoes} (files "
            f"{[Path(p).name for p in phase_files]}). Fix the echo-<n> entities or the EchoTime values."
        )


def field_strength(b0_values, n_echoes, b0_strength, phase_files, where, warnings) -> float:
    """The field strength in Tesla: ``--b0-strength`` or the sidecars' ``MagneticFieldStrength``.

    Parameters
    ----------
    b0_values : list of float
        From :func:`read_echo_metadata`.
    n_echoes : int
        Number of echoes (every one must give the value when any does).
    b0_strength : float or None
        ``--b0-strength``; wins over the sidecars (with a warning when they differ).
    phase_files : list of str
        Named in the error message.
    where : str
        ``sub-<l>[_ses-<l>]``, for the messages.
    warnings : list of str
        Appended to (the session's warnings shown in the report).

    Returns
    -------
    float

    Raises
    ------
    DataError
        Exit 65: missing, given for some echoes only, differing, or outside 0.05-25 T.
    """
    if b0_strength is not None:
        b0 = float(b0_strength)
        if b0_values and abs(b0_values[0] - b0) > 1e-3:
            msg = (f"{where}: --b0-strength {b0} T overrides MagneticFieldStrength "
                   f"{b0_values[0]} T from the sidecars.")
            LOGGER.warning(msg)
            warnings.append(msg)
    elif b0_values:
        if len(b0_values) != n_echoes:
            raise DataError(f"{where}: MagneticFieldStrength is present for some echoes only; "
                            "give it for all or pass --b0-strength.")
        if max(b0_values) - min(b0_values) > 1e-3:
            raise DataError(f"{where}: MagneticFieldStrength differs between echoes ({b0_values}).")
        b0 = b0_values[0]
    else:
        raise DataError(
            f"{phase_files[0]} has no MagneticFieldStrength (Tesla), which QSM needs. Add it to "
            f"{sidecar_path(phase_files[0])} (or a top-level sidecar), or pass --b0-strength (e.g. 3)."
        )
    if not 0.05 <= b0 <= 25:
        raise DataError(f"{where}: field strength {b0} T is implausible; it must be in Tesla (e.g. 3).")
    return b0


def phase_units(units_seen, phase_files, parts, where, warnings):
    """The phase images' units: ``'rad'``, ``'arbitrary'`` or ``None`` (not stated).

    Parameters
    ----------
    units_seen : list of str or None
        The sidecars' ``Units``, from :func:`read_echo_metadata`.
    phase_files : list of str
        Named in the messages.
    parts : str
        ``'mag-phase'`` or ``'real-imag'`` (phase then comes from ``angle(re + i im)``: radians;
        ``None`` is returned, no Units needed).
    where : str
        ``sub-<l>[_ses-<l>]``, for the messages.
    warnings : list of str
        Appended to when the sidecars say nothing (warned once per run).

    Returns
    -------
    str or None

    Raises
    ------
    DataError
        Exit 65: unknown units, or units that differ between echoes.
    """
    if parts == "real-imag":  # phase comes from angle(re + i im): radians, no Units needed
        units_seen = ["rad"] * len(phase_files)
    units_norm = {_normalise_units(u, pf) if u is not None else None
                  for u, pf in zip(units_seen, phase_files)}
    if None in units_norm:
        if len(units_norm) > 1:
            raise DataError(f"{where}: some phase sidecars give Units and others do not; make them agree.")
        # warn once
        _normalise_units(None, phase_files[0])
        warnings.append(f"{where}: phase Units absent in {sidecar_path(phase_files[0])}")
    if len(units_norm) > 1:
        raise DataError(f"{where}: phase echoes have different Units {sorted(map(str, units_norm))}.")
    return None if parts == "real-imag" else next(iter(units_norm))
