"""A head made of shape primitives, imaged with the ``qsm-forward`` forward model (benchmark only).

``qsm-forward`` (PyPI, GPL-3.0, the QSMxT team's forward model; Marques JP et al. MRM
2021;86:526 for the underlying challenge-2.0 simulation) ships no head: its realistic head model
is a download (doi:10.34973/m20r-jt17), which this machine cannot fetch. So the head is built
here, offline, from ellipsoids, tubes and distance shells, with qsm-forward's *own* per-tissue
susceptibility values and R2*-to-chi texture coefficients (``qsm_forward.CHISEP_TISSUE_PARAMS``),
and everything after the head is qsm-forward: its dipole field (``generate_field``, 2x zero-air
padding), its 2nd-order shim (``generate_shimmed_field``), its phase offset
(``generate_phase_offset``), its GRE signal (``generate_signal``), its k-space downsampling
(``crop_kspace``) and its complex noise (``add_noise``).

This module is never imported by the ``qsmprep`` package (licence: GPL-3.0 stays in the
``[independent]`` benchmark extra).

What is in the head (1 mm simulation grid, then 1 x 1 x 1.5 mm acquisition):

* cerebrum (cortex 3 mm with a random radial wobble, white matter), cerebellum, brainstem;
* CSF rim (3 mm) between brain and skull, lateral/third/fourth ventricles;
* skull (bone, -6.3 ppm relative to tissue, low M0), scalp (fat + muscle), a face/neck block;
* air: outside the head, sphenoid/ethmoid sinus, frontal sinus, ear canals, mastoid cells;
* superior sagittal and straight sinus (venous blood, +0.19 ppm) in the CSF rim;
* DGM nuclei (caudate, putamen, pallidum, thalamus, substantia nigra, red nucleus, dentate)
  with qsmprep's atlas label numbers, per-seed jitter of size/position/value, and a smooth
  R2* texture that also modulates chi (qsm-forward's ``R2star2chi`` coefficients);
* B0 along the array z axis ("axial") or tilted by ``tilt_deg`` about x ("oblique"); the
  affine carries the tilt exactly as qsm-forward's ``adjust_affine_for_B0_direction`` does.

The seed changes geometry, values, texture and noise, so a second seed is an unseen head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage

# qsm-forward tissue numbering (its SegmentedModel / label.json)
T_CN, T_GP, T_PU, T_RN, T_DN, T_SN, T_TH, T_WM, T_GM, T_CSF, T_BLOOD, T_FAT, T_BONE, T_AIR, T_MUS = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)

# qsmprep atlas label numbers (atlas-DGM): left = odd, right = even
DGM_LABELS = {T_CN: (1, 2), T_PU: (3, 4), T_GP: (5, 6), T_TH: (7, 8), T_SN: (9, 10),
              T_RN: (11, 12)}
STRUCT_NAME = {T_CN: "caudate", T_PU: "putamen", T_GP: "pallidum", T_TH: "thalamus",
               T_SN: "substantia_nigra", T_RN: "red_nucleus"}

# relaxation at 3 T: (M0, R1 [1/s], R2* [1/s]); literature-typical values (e.g. Peters AM et al.
# MRI 2007;25:748 for R2*; Wansapura JP et al. JMRI 1999;9:531 for T1), not qsmprep's simulator's
RELAX = {
    T_CN: (0.80, 0.80, 21.0), T_GP: (0.75, 0.95, 36.0), T_PU: (0.80, 0.85, 24.0),
    T_RN: (0.75, 0.95, 31.0), T_DN: (0.75, 0.95, 34.0), T_SN: (0.75, 1.00, 35.0),
    T_TH: (0.78, 0.90, 20.0), T_WM: (0.70, 1.20, 21.0), T_GM: (0.82, 0.72, 16.0),
    T_CSF: (1.00, 0.25, 3.0), T_BLOOD: (0.85, 0.60, 45.0), T_FAT: (0.95, 2.60, 25.0),
    T_BONE: (0.08, 1.00, 150.0), T_AIR: (0.0, 1.0, 1.0), T_MUS: (0.70, 0.90, 32.0),
}


def label_table() -> pd.DataFrame:
    rows = []
    for t, (li, ri) in DGM_LABELS.items():
        s = STRUCT_NAME[t]
        rows.append({"index": li, "name": f"Left_{s}", "structure": s, "hemisphere": "left"})
        rows.append({"index": ri, "name": f"Right_{s}", "structure": s, "hemisphere": "right"})
    return pd.DataFrame(rows).sort_values("index").reset_index(drop=True)


def _chi_total(qf, tissue):
    p = qf.CHISEP_TISSUE_PARAMS[tissue]
    return p[0] + p[1]


def _r2s_coef(qf, tissue):
    return qf.CHISEP_TISSUE_PARAMS[tissue][3]


@dataclass
class Head:
    """High-resolution (1 mm) head: tissue codes, DGM labels, chi (ppm), M0, R1, R2* (1/s)."""

    tissue: np.ndarray
    labels: np.ndarray
    brain: np.ndarray
    chi: np.ndarray
    m0: np.ndarray
    r1: np.ndarray
    r2s: np.ndarray
    sim_vox: float = 1.0


def _smooth_noise(rng, shape, sigma_vox):
    g = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_vox)
    return g / (g.std() + 1e-12)


FOV_MM = (176.0, 208.0, 210.0)


def grid_shape(sim_vox: float) -> tuple[int, int, int]:
    """Simulation grid for ``FOV_MM`` at ``sim_vox`` mm (z a multiple of 3 for the 1.5x crop)."""
    nx, ny = (int(round(f / sim_vox)) // 2 * 2 for f in FOV_MM[:2])
    nz = int(round(FOV_MM[2] / sim_vox)) // 3 * 3
    return nx, ny, nz


def _centre(shape, sim_vox):
    # brain centre sits 30 mm above the grid centre (room for face and neck below)
    return np.array([shape[0] / 2.0, shape[1] / 2.0 - 4.0 / sim_vox, shape[2] / 2.0 + 30.0 / sim_vox])


def build_head(seed: int, sim_vox: float = 1.0, qf=None, changes_ppb=None) -> Head:
    """Build the head on an isotropic ``sim_vox`` mm grid (all sizes below are in mm).
    ``changes_ppb``: {qsm-forward tissue: delta} added to the DGM nuclei (a follow-up session of
    the same head)."""
    if qf is None:
        import qsm_forward.qsm_forward as qf
    rng = np.random.default_rng(seed)
    shape = grid_shape(sim_vox)
    nx, ny, nz = shape
    c = _centre(shape, sim_vox)
    x, y, z = ((np.arange(n) - ci) * sim_vox for n, ci in zip(shape, c))
    x, y, z = np.meshgrid(x, y, z, indexing="ij", sparse=True)

    def jit(v, frac=0.06):
        return np.asarray(v, float) * (1.0 + frac * rng.uniform(-1, 1, np.shape(v)))

    def ell(center, semi, rot_deg=0.0):
        cx, cy, cz = center
        a, b, cc = semi
        xr, yr = x - cx, y - cy
        if rot_deg:
            t = math.radians(rot_deg)
            xr, yr = xr * math.cos(t) + yr * math.sin(t), -xr * math.sin(t) + yr * math.cos(t)
        return (xr / a) ** 2 + (yr / b) ** 2 + ((z - cz) / cc) ** 2 <= 1.0

    tissue = np.full(shape, T_AIR, np.uint8)
    # --- brain: cerebrum with a wobbly surface, cerebellum, brainstem
    semi_b = jit([64.0, 80.0, 56.0], 0.04)
    wob = _smooth_noise(rng, shape, 6.0 / sim_vox)
    r = np.sqrt((x / semi_b[0]) ** 2 + (y / semi_b[1]) ** 2 + (z / semi_b[2]) ** 2)
    cerebrum = r <= 1.0 + 0.025 * wob
    cerebellum = ell((0, -48, -42), jit([48.0, 28.0, 22.0], 0.04))
    brainstem = ell((0, -20, -55), (11.0, 12.0, 40.0))
    brain_tissue = cerebrum | cerebellum | brainstem
    # --- shells by distance from the brain: CSF 3 mm, skull 6 mm, scalp 6 mm
    dist_out = ndimage.distance_transform_edt(~brain_tissue, sampling=sim_vox)
    csf_w, skull_w, scalp_w = jit(3.0, 0.15), jit(6.0, 0.15), jit(6.0, 0.15)
    head = dist_out <= csf_w + skull_w + scalp_w
    face = ell((0, 52, -58), (52, 45, 34))
    neck = ell((0, -8, -110), (46, 48, 75))
    head |= face | neck
    tissue[head] = T_MUS  # face, neck and the inner half of the scalp
    scalp_outer = (dist_out > csf_w + skull_w + scalp_w / 2) & (dist_out <= csf_w + skull_w + scalp_w)
    tissue[head & scalp_outer] = T_FAT  # subcutaneous fat
    tissue[(dist_out > csf_w) & (dist_out <= csf_w + skull_w)] = T_BONE
    tissue[(dist_out > 0) & (dist_out <= csf_w)] = T_CSF
    # --- air cavities (inside the head, outside the brain)
    tissue[ell((0, 48, -66), jit([13.0, 15.0, 9.0]))] = T_AIR  # sphenoid/ethmoid
    tissue[ell((0, 80, -30), jit([10.0, 5.0, 7.0]))] = T_AIR  # frontal sinus
    for s in (-1, 1):
        tissue[ell((s * 48, -14, -60), jit([7.0, 7.0, 7.0]))] = T_AIR  # mastoid cells
        ear = ((y + 5) ** 2 + (z + 52) ** 2 <= 4.0 ** 2) & (s * x >= 52) & (s * x <= 80)
        tissue[ear & head] = T_AIR  # ear canal
    # --- brain tissue classes
    dist_in = ndimage.distance_transform_edt(brain_tissue, sampling=sim_vox)
    tissue[brain_tissue] = T_WM
    tissue[brain_tissue & (dist_in <= 3.0)] = T_GM
    tissue[cerebellum & ~cerebrum] = T_GM
    labels = np.zeros(shape, np.uint8)
    # DGM nuclei: (tissue, centre (right hemisphere, x>0), semi-axes, rotation about z)
    nuclei = [
        (T_PU, (25, 3, 0), (6.0, 15.0, 10.0), 8.0),
        (T_GP, (18, -1, -2), (4.5, 9.0, 6.0), 8.0),
        (T_CN, (14, 12, 10), (5.0, 12.0, 8.0), -10.0),
        (T_TH, (10, -18, 4), (9.0, 15.0, 9.0), 0.0),
        (T_SN, (10, -16, -14), (4.0, 7.5, 2.6), 25.0),
        (T_RN, (5, -19, -10), (3.3, 3.3, 3.3), 0.0),
        (T_DN, (15, -52, -40), (6.0, 8.0, 4.0), 20.0),
    ]
    for t, cen, semi, rot in nuclei:
        semi_j = jit(semi, 0.08)
        cen_j = np.asarray(cen, float) + rng.uniform(-1.5, 1.5, 3)
        for side in (1, -1):  # right (x > 0), left
            m = ell((side * cen_j[0], cen_j[1], cen_j[2]), semi_j, side * rot) & brain_tissue
            tissue[m] = t
            if t in DGM_LABELS:
                labels[m] = DGM_LABELS[t][1 if side > 0 else 0]
    # ventricles (override nuclei where they touch) and the internal CSF
    vent = (ell((7, 2, 12), jit([4.5, 25.0, 7.0]), -5) | ell((-7, 2, 12), jit([4.5, 25.0, 7.0]), 5)
            | ell((0, -16, 2), (2.0, 12.0, 8.0)) | ell((0, -40, -30), (5.0, 4.0, 6.0)))
    tissue[vent] = T_CSF
    labels[vent] = 0
    # venous sinuses in the CSF rim: superior sagittal (midline arc) and straight sinus
    sss = np.zeros(shape, bool)
    for yy in np.arange(-75, 72, sim_vox):
        zz = (semi_b[2] + csf_w / 2) * math.sqrt(max(0.0, 1 - (yy / (semi_b[1] + 2)) ** 2))
        sss |= (x ** 2 + (y - yy) ** 2 + (z - zz) ** 2) <= 2.5 ** 2
    tissue[sss & ~brain_tissue] = T_BLOOD
    # --- property maps with texture
    chi = np.zeros(shape, np.float32)
    m0 = np.zeros(shape, np.float32)
    r1 = np.ones(shape, np.float32)
    r2s = np.ones(shape, np.float32)
    tex = _smooth_noise(rng, shape, 2.0 / sim_vox)
    offsets = {t: rng.uniform(-0.006, 0.006) for t in (T_CN, T_GP, T_PU, T_RN, T_DN, T_SN, T_TH)}
    for t in np.unique(tissue):
        sel = tissue == t
        M0, R1, R2s = RELAX[int(t)]
        base_r2 = R2s * (1 + rng.uniform(-0.05, 0.05))
        texture_amp = 0.0 if t in (T_AIR, T_BONE) else (1.5 if t == T_CSF else 3.0)
        r2_map = base_r2 + texture_amp * tex[sel]
        r2s[sel] = r2_map
        chi_t = _chi_total(qf, int(t)) + offsets.get(int(t), 0.0)
        chi[sel] = chi_t + _r2s_coef(qf, int(t)) * (r2_map - base_r2)
        m0[sel] = M0 * (1 + 0.03 * tex[sel]) if M0 > 0 else 0.0
        r1[sel] = R1
    if changes_ppb:
        for t, d in changes_ppb.items():
            chi[tissue == t] += d * 1e-3
    brain = brain_tissue.copy()  # parenchyma + ventricles (the outer CSF rim is not brain)
    return Head(tissue=tissue, labels=labels, brain=brain, chi=chi, m0=m0, r1=r1, r2s=r2s,
                sim_vox=float(sim_vox))


def _z_box_average(v: np.ndarray) -> np.ndarray:
    """1 mm -> 1.5 mm along z by exact box averaging, centred like the k-space crop."""
    nz = v.shape[2] // 3 * 3
    v = v[..., :nz].astype(np.float64)
    prev = np.roll(v, 1, axis=2)
    out = np.empty(v.shape[:2] + (nz // 3 * 2,), np.float64)
    h0, h1, h2 = v[..., 0::3], v[..., 1::3], v[..., 2::3]
    out[..., 0::2] = (0.25 * prev[..., 0::3] + h0 + 0.25 * h1) / 1.5
    out[..., 1::2] = 0.5 * (h1 + h2)
    return out


def _z_nearest(v: np.ndarray) -> np.ndarray:
    nz = v.shape[2] // 3 * 3
    v = v[..., :nz]
    out = np.empty(v.shape[:2] + (nz // 3 * 2,), v.dtype)
    out[..., 0::2] = v[..., 0::3]
    out[..., 1::2] = v[..., 1::3]
    return out


def tilt_vector(tilt_deg: float) -> np.ndarray:
    t = math.radians(tilt_deg)
    return np.array([0.0, math.sin(t), math.cos(t)])


def acquire(head: Head, tilt_deg=0.0, tes=(4.5e-3, 10.5e-3, 16.5e-3, 22.5e-3, 28.5e-3), b0=3.0,
            tr=35e-3, flip=15.0, peak_snr=100.0, noise_seed=0, slab_mm=(-75.0, 75.0), qf=None,
            noise=True):
    """Image ``head`` with qsm-forward: returns a dict with mag, phase (x, y, z, echo), affine,
    the truth on the acquisition grid (chi ppm, labels, brain mask, R2*) and the tissue codes.

    The acquisition voxel is ``sim_vox * (1, 1, 1.5)`` (k-space crop of the simulation grid);
    ``slab_mm``: z range (mm, relative to the brain centre) kept: the axial slab around the
    brain; the simulation grid below it holds face and neck so that their fields are realistic.
    ``peak_snr`` is passed to qsm-forward's ``add_noise`` per echo scaled by that echo's peak,
    so the noise standard deviation is the same at every echo (as on a scanner); ``noise=False``
    leaves it out (diagnostics: ``benchmarks/independent_tilt.py``).
    """
    if qf is None:
        import qsm_forward.qsm_forward as qf
    b0_dir = tilt_vector(tilt_deg)
    rng = np.random.default_rng(noise_seed)
    field = qf.generate_field(head.chi.astype(np.float64), head.brain.astype(float),
                              voxel_size=[head.sim_vox] * 3, B0_dir=b0_dir)
    _, field, _ = qf.generate_shimmed_field(field, head.brain.astype(float), order=2)
    offset = qf.generate_phase_offset(head.m0.astype(np.float64), head.brain.astype(float),
                                      head.m0.shape)
    nz = head.chi.shape[2] // 3 * 3
    lo_shape = (head.chi.shape[0], head.chi.shape[1], nz // 3 * 2)
    sigs = []
    for te in tes:
        s = qf.generate_signal(field=field, B0=b0, TR=tr, TE=te, flip_angle=flip,
                               phase_offset=offset, R1=head.r1.astype(np.float64),
                               R2star=head.r2s.astype(np.float64), M0=head.m0.astype(np.float64))
        sigs.append(qf.crop_kspace(s[..., :nz], lo_shape))
        del s
    ref_peak = max(np.abs(s).max() for s in sigs)
    noisy = [qf.add_noise(s, peak_snr=peak_snr * np.abs(s).max() / ref_peak, rng=rng) if noise else s
             for s in sigs]
    cz = _centre(head.chi.shape, head.sim_vox)[2]
    sl = slice(*(int(round((cz + zm / head.sim_vox) / 1.5)) for zm in slab_mm))
    sig = np.stack(noisy, axis=-1)[:, :, sl]
    # affine: 1 x 1 x 1.5 mm, rotated so that B0 (world +z) is b0_dir in voxel axes
    rot = qf.rotation_matrix_from_vectors(np.array([0.0, 0.0, 1.0]), b0_dir)
    affine = np.eye(4)
    affine[:3, :3] = rot.T @ np.diag(np.array([1.0, 1.0, 1.5]) * head.sim_vox)
    affine[:3, 3] = -affine[:3, :3] @ (np.array(sig.shape[:3]) / 2.0)
    return {
        "mag": np.abs(sig).astype(np.float32),
        "phase": np.angle(sig).astype(np.float32),
        "tes": np.asarray(tes, float),
        "b0": float(b0),
        "affine": affine,
        "b0_dir": b0_dir,
        "field": _z_box_average(field)[:, :, sl].astype(np.float32),
        "chi": _z_box_average(head.chi)[:, :, sl].astype(np.float32),
        "r2s": _z_box_average(head.r2s)[:, :, sl].astype(np.float32),
        "labels": _z_nearest(head.labels)[:, :, sl],
        "tissue": _z_nearest(head.tissue)[:, :, sl],
        "brain_mask": _z_nearest(head.brain)[:, :, sl].astype(bool),
    }
