"""One simulated subject and session, in memory (arrays in, arrays out).

Forward model of a session (per GRE voxel, scanner grid):

* ``chi_head`` (ppm, relative to water) is sampled from the head model through the session's
  motion and the subject's warp (nearest neighbour, so every voxel is exactly one class) plus a
  smooth intra-tissue texture inside the brain;
* total field ``field_ppm = forward_field(chi_head - chi_air, voxel_size, b0_dir, pad)``
  (:func:`qsmprep.qsm.kernels.forward_field`): the head sits in an infinite air space (zero
  padding = air), ``b0_dir`` comes from the GRE affine (oblique acquisitions included);
* ``phase(TE) = phi0 + 2*pi*f*TE`` with ``f = ppm_to_hz(field_ppm, B0)`` (the sign convention of
  ``docs/architecture.md``), ``|S| = PD * exp(-TE / T2*) * coil``, complex Gaussian noise with
  ``sigma = median(|S_WM(TE1)|) / snr``, phase wrapped to ``[-pi, pi)``;
* the T1w image is the template intensity sampled through the same chain (other grid), with a
  smooth bias field and Rician noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import ndimage

from ..qsm import kernels
from ..roi import roi_statistics
from . import config as C
from .geometry import (Motion, SubjectWarp, half_extent_along, make_grid, random_motion,
                       random_subject_warp, rotation_matrix, sample_at, template_index_coords)
from .phantom import HeadModel, build_head_model

TEXTURE_SPACING_MM = 2.0
TEXTURE_SIGMA_MM = 2.0


# ----------------------------------------------------------------------------- random streams
def _rng(seed: int, subject: int, stream: int) -> np.random.Generator:
    """Independent, reproducible stream per (seed, subject, purpose): subject k is the same
    whatever the cohort size."""
    return np.random.default_rng([int(seed), int(subject), int(stream)])


STREAM_ANATOMY, STREAM_VALUES, STREAM_DEMOGRAPHICS, STREAM_SESSION = 0, 1, 2, 10


@dataclass
class Subject:
    """Per-subject truth: anatomy warp, texture and random effects."""

    index: int
    group: str
    warp: SubjectWarp
    texture: np.ndarray          # unit-SD smooth field on a TEXTURE_SPACING_MM grid
    texture_affine: np.ndarray
    random_effects_ppb: dict     # structure -> subject deviation
    age: float = 40.0
    sex: str = "F"


def make_subject(index: int, group: str, seed: int, config: C.SimulationConfig,
                 model: HeadModel) -> Subject:
    """Draw one subject: anatomy warp, texture, random effects and demographics.

    Every draw comes from streams of ``(seed, index)`` only, so subject ``index`` is the same
    whatever the cohort size and group (two subjects with the same index and seed share anatomy
    and random effects, whatever their group).

    Parameters
    ----------
    index : int
        Subject number (1-based).
    group : {"HC", "MS"}
        Group (only changes the demographics drawn).
    seed : int
        Cohort seed.
    config : SimulationConfig
        Warp size, scaling and between-subject SD.
    model : HeadModel
        The head model (structures and extent).

    Returns
    -------
    Subject
    """
    rng = _rng(seed, index, STREAM_ANATOMY)
    warp = random_subject_warp(rng, model.center, model.head_bbox(), config.warp_rms_mm,
                               config.warp_spacing_mm, config.scale_sd)
    lo, hi = model.head_bbox()
    shape = tuple(int(np.ceil((h - l) / TEXTURE_SPACING_MM)) + 1 for l, h in zip(lo, hi))
    tex = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32),
                                  TEXTURE_SIGMA_MM / TEXTURE_SPACING_MM, mode="nearest")
    tex /= tex.std()
    taff = np.diag([TEXTURE_SPACING_MM] * 3 + [1.0])
    taff[:3, 3] = lo
    vrng = _rng(seed, index, STREAM_VALUES)
    structures = sorted(set(model.labels["structure"]))
    re = {s: float(vrng.standard_normal() * config.between_subject_sd_ppb) for s in structures}
    drng = _rng(seed, index, STREAM_DEMOGRAPHICS)
    age = float(np.clip(drng.normal(42.0, 10.0), 20, 65))
    sex = "F" if drng.uniform() < (0.7 if group == "MS" else 0.6) else "M"
    return Subject(index=index, group=group, warp=warp, texture=tex, texture_affine=taff,
                   random_effects_ppb=re, age=round(age, 1), sex=sex)


def structure_values_ppm(subject: Subject, session: int, config: C.SimulationConfig,
                         structures, seed: int) -> dict:
    """Planted susceptibility (ppm) of each DGM structure for one session.

    Base value (``config.chi_ppm``) + subject random effect + group effect (MS) + planted
    changes; unless ``config.repeat``, also time and group-by-time effects and, after baseline,
    within-subject noise.

    Parameters
    ----------
    subject : Subject
        The subject (group and random effects).
    session : int
        0 = baseline, 1 = first follow-up, ...
    config : SimulationConfig
        Effects (ppb).
    structures : iterable of str
        Structures to plant.
    seed : int
        Cohort seed.

    Returns
    -------
    dict of str to float
        Structure -> susceptibility (ppm).
    """
    ms = 1.0 if subject.group == "MS" else 0.0
    srng = _rng(seed, subject.index, STREAM_VALUES + 100 + session)
    out = {}
    for st in structures:
        base = config.chi_ppm.get(st, 0.0) * 1000.0
        v = base + subject.random_effects_ppb.get(st, 0.0)
        v += ms * config.group_effects_ppb.get(st, 0.0)
        v += session * config.changes_ppb.get(st, 0.0)
        noise = srng.standard_normal() * config.within_subject_sd_ppb
        if not config.repeat:
            v += session * config.time_effects_ppb.get(st, 0.0)
            v += ms * session * config.interaction_effects_ppb.get(st, 0.0)
            if session > 0:
                v += noise
        out[st] = v / 1000.0
    return out


# ----------------------------------------------------------------------------- protocol
@dataclass(frozen=True)
class Protocol:
    """Acquisition grids shared by every subject and session of a cohort."""

    gre_shape: tuple
    gre_affine: np.ndarray
    t1w_shape: tuple
    t1w_affine: np.ndarray
    pad_vox: int


def make_protocol(model: HeadModel, preset: C.Preset, config: C.SimulationConfig) -> Protocol:
    """Acquisition grids of a cohort: a GRE grid (RAS, optionally oblique) and a T1w grid (LAS).

    Both cover the head with a margin for head size variation and the largest motion.

    Parameters
    ----------
    model : HeadModel
        Head model (its bounding box).
    preset : Preset
        Voxel sizes and padding.
    config : SimulationConfig
        Motion, scaling and obliquity.

    Returns
    -------
    Protocol
    """
    lo, hi = model.head_bbox()
    centre = (lo + hi) / 2.0
    half = (hi - lo) / 2.0
    scale_max = 2.5 * config.scale_sd
    margin = (0.6 * scale_max * half.max() + config.motion_mm
              + np.sin(np.deg2rad(config.motion_deg)) * np.linalg.norm(half) + 4.0)
    gre_axes = rotation_matrix([config.oblique_deg, 0.0, 0.0])
    ghalf = half_extent_along(gre_axes, (lo, hi), margin)
    gshape, gaff = make_grid(centre, ghalf, preset.gre_mm, axes=gre_axes)
    t1_axes = np.diag([-1.0, 1.0, 1.0])  # LAS storage, unlike the RAS GRE
    thalf = half_extent_along(t1_axes, (lo, hi), margin + 8.0)
    tshape, taff = make_grid(centre, thalf, preset.t1w_mm, axes=t1_axes, shift_mm=(0, 0, -6.0))
    pad = int(np.ceil(preset.pad_mm / min(preset.gre_mm)))
    return Protocol(gshape, gaff, tshape, taff, pad)


# ----------------------------------------------------------------------------- session
@dataclass
class SessionData:
    """Everything simulated for one session (arrays on the GRE grid unless named t1w_*)."""

    chi: np.ndarray             # ppm, brain only (0 outside), relative to water
    chi_head: np.ndarray        # ppm, whole field of view (air = config chi 'air')
    labels: np.ndarray          # int16 atlas labels
    brain_mask: np.ndarray      # bool
    mag: np.ndarray             # (x, y, z, echo) float32
    phase: np.ndarray           # (x, y, z, echo) float32, rad, wrapped [-pi, pi)
    tes: np.ndarray             # s
    affine: np.ndarray
    b0: float
    b0_dir: np.ndarray
    voxel_size: np.ndarray
    field_ppm: np.ndarray       # noise-free total field (ppm)
    phase0: np.ndarray          # rad
    mag_clean: np.ndarray       # noise-free magnitude (x, y, z, echo)
    noise_sigma: float
    t1w: np.ndarray
    t1w_affine: np.ndarray
    t1w_labels: np.ndarray
    t1w_brain_mask: np.ndarray
    planted_ppm: dict           # structure -> planted value
    subject: Subject
    motion: Motion
    pad_vox: int
    label_table: pd.DataFrame
    info: dict = field(default_factory=dict)

    @property
    def field_hz(self) -> np.ndarray:
        """Noise-free total field in Hz (:attr:`field_ppm` at :attr:`b0`)."""
        return kernels.ppm_to_hz(self.field_ppm, self.b0)


def _smooth_poly(shape, rng, amplitude, order2=True) -> np.ndarray:
    """Random smooth field: constant-free linear (+ quadratic) polynomial in [-1, 1] coordinates,
    scaled so its maximum absolute value is ``amplitude``."""
    coords = [np.linspace(-1, 1, n, dtype=np.float32) for n in shape]
    x, y, z = np.meshgrid(*coords, indexing="ij", sparse=True)
    terms = [x, y, z]
    if order2:
        terms += [x * x - 1 / 3, y * y - 1 / 3, z * z - 1 / 3, x * y, y * z, x * z]
    c = rng.uniform(-1, 1, len(terms)).astype(np.float32)
    f = sum(ci * t for ci, t in zip(c, terms))
    f = np.broadcast_to(f, shape).astype(np.float32)
    m = np.abs(f).max()
    return f * (amplitude / m) if m > 0 else f


def _property_lut(model: HeadModel, values: dict, prop: dict, default=0.0):
    """Lookup table code -> property, DGM codes from ``values`` (structure -> value)."""
    lut = np.full(C.LABEL_OFFSET + int(model.labels["index"].max()) + 1, default, np.float64)
    for code, name in C.CLASS_NAMES.items():
        lut[code] = prop.get(name, default)
    for row in model.labels.itertuples():
        lut[C.LABEL_OFFSET + int(row.index)] = values.get(row.structure,
                                                          prop.get(row.structure, default))
    return lut


def sample_subject(model, subject, motion, shape, affine):
    """Class codes and texture of one acquisition grid.

    Parameters
    ----------
    model : HeadModel
        Head model.
    subject : Subject
        Anatomy warp and texture.
    motion : Motion
        Session head position.
    shape : tuple of int
        Grid shape.
    affine : ndarray, shape (4, 4)
        Grid affine.

    Returns
    -------
    codes : ndarray of int16
        Class codes (nearest neighbour).
    texture : ndarray of float32
        Unit-SD texture (trilinear).
    """
    coords = template_index_coords(shape, affine, motion, subject.warp, model.affine)
    codes = sample_at(model.codes, coords, 0, cval=C.AIR, shape=shape).astype(np.int16)
    # texture grid and model grid differ only by an affine on template world coordinates
    tmap = np.linalg.inv(subject.texture_affine) @ model.affine
    coords = tmap[:3, :3].astype(np.float32) @ coords + tmap[:3, 3:4].astype(np.float32)
    tex = sample_at(subject.texture, coords, 1, shape=shape).astype(np.float32)
    return codes, tex


def simulate_session(subject: int | Subject = 1, session: int = 0, preset: str = "small",
                     seed: int = 0, config: C.SimulationConfig | None = None, group: str = "HC",
                     atlas_dir=None, model: HeadModel | None = None,
                     protocol: Protocol | None = None) -> SessionData:
    """Simulate one session of one subject in memory.

    Parameters
    ----------
    subject : int or Subject
        Subject number (1-based) or a :class:`Subject` from :func:`make_subject`.
    session : int, default 0
        0 for baseline, 1 for follow-up, ...
    preset : {"small", "1mm", "1mm-aniso"} or Preset, default "small"
        ``'small'`` (3 mm GRE, 2 mm T1w), ``'1mm'`` or ``'1mm-aniso'`` (GRE 1 x 1 x 1.5 mm,
        T1w 1 mm).
    seed : int, default 0
        Cohort seed.
    config : SimulationConfig, optional
        Settings (``snr=np.inf``: noise free).
    group : {"HC", "MS"}, default "HC"
        Group, when ``subject`` is a number.
    atlas_dir : path, optional
        Atlas of the head model (default atlas when ``None``).
    model : HeadModel, optional
        A head model already built (see :func:`~qsmprep.simulate.phantom.build_head_model`).
    protocol : Protocol, optional
        Acquisition grids shared by a cohort (:func:`make_protocol`).

    Returns
    -------
    SessionData
        Images, truth and metadata of the session.

    Examples
    --------
    >>> d = simulate_session(subject=1, session=0, preset="small", seed=0)  # doctest: +SKIP
    >>> d.mag.shape[-1], d.planted_ppm["pallidum"]  # doctest: +SKIP
    """
    config = config or C.SimulationConfig()
    pre = C.PRESETS[preset] if isinstance(preset, str) else preset
    if model is None:
        model = build_head_model(pre.model_mm, atlas_dir=atlas_dir, sinus=config.sinus)
    if protocol is None:
        protocol = make_protocol(model, pre, config)
    if not isinstance(subject, Subject):
        subject = make_subject(int(subject), group, seed, config, model)
    srng = _rng(seed, subject.index, STREAM_SESSION + session)
    motion = random_motion(srng, model.center, config.motion_deg, config.motion_mm)
    structures = sorted(set(model.labels["structure"]))
    values = structure_values_ppm(subject, session, config, structures, seed)

    # --- GRE grid: classes, susceptibility, field
    gshape, gaff = protocol.gre_shape, protocol.gre_affine
    codes, tex = sample_subject(model, subject, motion, gshape, gaff)
    brain = np.isin(codes, C.BRAIN_CODES) | (codes >= C.LABEL_OFFSET)
    chi_lut = _property_lut(model, values, config.chi_ppm)
    chi_head = chi_lut[codes]
    chi_head[brain] += tex[brain] * (config.texture_sd_ppb * 1e-3)
    labels = np.where(codes >= C.LABEL_OFFSET, codes - C.LABEL_OFFSET, 0).astype(np.int16)
    edge = np.concatenate([codes[[0, -1]].ravel(), codes[:, [0, -1]].ravel(),
                           codes[:, :, [0, -1]].ravel()])
    vox = kernels.voxel_size_from_affine(gaff)
    b0_dir = kernels.b0_direction_from_affine(gaff)
    chi_air = config.chi_ppm["air"]
    field_ppm = kernels.forward_field(chi_head - chi_air, vox, b0_dir, pad=protocol.pad_vox)
    field_ppm = field_ppm.astype(np.float32)

    # --- GRE signal
    tes = np.asarray(config.echo_times, float)
    r2s = (1e3 / _property_lut(model, {}, config.t2star_ms, default=1.0)).astype(np.float32)
    r2s = r2s[codes]
    pd_ = _property_lut(model, {}, config.proton_density).astype(np.float32)[codes]
    coil = 1.0 + _smooth_poly(gshape, srng, config.gre_bias)
    phi0 = (srng.uniform(-np.pi, np.pi)
            + _smooth_poly(gshape, srng, config.phase_offset_rad)).astype(np.float32)
    f_hz = kernels.ppm_to_hz(field_ppm, config.b0).astype(np.float32)
    mag_clean = np.empty(gshape + (tes.size,), np.float32)
    mag = np.empty_like(mag_clean)
    phase = np.empty_like(mag_clean)
    for e, te in enumerate(tes):
        mag_clean[..., e] = 1000.0 * pd_ * np.exp(np.float32(-te) * r2s) * coil
    wm = codes == C.WM
    s_ref = float(np.median(mag_clean[..., 0][wm])) if wm.any() else float(mag_clean.max())
    sigma = 0.0 if not np.isfinite(config.snr) else s_ref / config.snr
    for e, te in enumerate(tes):
        ph = phi0 + np.float32(2 * np.pi * te) * f_hz
        if sigma > 0:
            s = mag_clean[..., e] * np.exp(1j * ph).astype(np.complex64)
            s += (srng.standard_normal(gshape, np.float32)
                  + 1j * srng.standard_normal(gshape, np.float32)) * np.float32(sigma)
            mag[..., e] = np.abs(s)
            ph = np.angle(s)
        else:
            mag[..., e] = mag_clean[..., e]
        phase[..., e] = wrap_phase(ph)

    # --- T1w grid
    tshape, taff = protocol.t1w_shape, protocol.t1w_affine
    coords = template_index_coords(tshape, taff, motion, subject.warp, model.affine)
    t1 = sample_at(model.t1w, coords, 1, shape=tshape).astype(np.float32)
    tcodes = sample_at(model.codes, coords, 0, cval=C.AIR, shape=tshape)
    del coords
    t1 *= 1.0 + _smooth_poly(tshape, srng, config.t1w_bias)
    tsig = config.t1w_noise * 90.0
    if tsig > 0:
        t1 = np.abs(t1 + srng.standard_normal(tshape, np.float32) * tsig
                    + 1j * srng.standard_normal(tshape, np.float32) * tsig).astype(np.float32)
    t1w_labels = np.where(tcodes >= C.LABEL_OFFSET, tcodes - C.LABEL_OFFSET, 0).astype(np.int16)
    t1w_brain = np.isin(tcodes, C.BRAIN_CODES) | (tcodes >= C.LABEL_OFFSET)

    info = {"head_touches_fov": bool(np.any(edge != C.AIR)),
            "structure_values_ppb": {k: v * 1000.0 for k, v in values.items()}}
    return SessionData(
        chi=np.where(brain, chi_head, 0.0).astype(np.float32), chi_head=chi_head.astype(np.float32),
        labels=labels, brain_mask=brain, mag=mag, phase=phase, tes=tes, affine=gaff,
        b0=config.b0, b0_dir=b0_dir, voxel_size=vox, field_ppm=field_ppm, phase0=phi0,
        mag_clean=mag_clean, noise_sigma=sigma, t1w=t1, t1w_affine=taff, t1w_labels=t1w_labels,
        t1w_brain_mask=t1w_brain, planted_ppm=values, subject=subject, motion=motion,
        pad_vox=protocol.pad_vox, label_table=model.labels, info=info)


def wrap_phase(ph) -> np.ndarray:
    """Wrap phase to ``[-pi, pi)``.

    Parameters
    ----------
    ph : array_like
        Phase (rad).

    Returns
    -------
    ndarray of float32

    Examples
    --------
    >>> [round(float(v), 4) for v in wrap_phase([np.pi, 3 * np.pi / 2])]
    [-3.1416, -1.5708]
    """
    return (np.mod(np.asarray(ph, np.float64) + np.pi, 2 * np.pi) - np.pi).astype(np.float32)


def roi_table(chi_ppm: np.ndarray, labels: np.ndarray, table: pd.DataFrame, voxel_size,
              mask: np.ndarray | None = None) -> pd.DataFrame:
    """Per-label statistics of a simulated map: the ROI table of :mod:`qsmprep.roi`.

    The truth tables of the simulator are the same contract as the participant-level tables
    (columns :data:`qsmprep.roi.COLUMNS`), computed by the same function, with no erosion and no
    reliability threshold.

    Parameters
    ----------
    chi_ppm : ndarray, shape (X, Y, Z)
        Susceptibility in ppm (e.g. :attr:`SessionData.chi`).
    labels : ndarray of int, shape (X, Y, Z)
        Atlas labels on the same grid.
    table : pandas.DataFrame
        Label table with ``index``, ``name``, ``structure`` and ``hemisphere``.
    voxel_size : sequence of float
        Voxel size in mm (3 values).
    mask : ndarray of bool, optional
        Restrict every label to this mask.

    Returns
    -------
    pandas.DataFrame
        One row per row of ``table``, columns :data:`qsmprep.roi.COLUMNS` (ppb).

    See Also
    --------
    qsmprep.roi.roi_statistics
    """
    return roi_statistics(chi_ppm, labels, table, voxel_size, mask=mask)
