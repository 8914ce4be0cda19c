"""Small analytic test objects for the QSM front-end tests (no dependency on qsmprep.simulate)."""

from __future__ import annotations

import numpy as np

from qsmprep.qsm.kernels import forward_field, ppm_to_hz

B0 = 3.0


def ellipsoid_radius(shape, voxel_size, centre_mm=(0.0, 0.0, 0.0), axes_mm=(1.0, 1.0, 1.0)):
    """Normalised ellipsoidal radius (1 on the surface) on a voxel grid centred in the FOV."""
    grids = np.meshgrid(
        *[(np.arange(n) - (n - 1) / 2.0) * v - c for n, v, c in zip(shape, voxel_size, centre_mm)],
        indexing="ij",
    )
    return np.sqrt(sum((g / a) ** 2 for g, a in zip(grids, axes_mm)))


def make_head(
    shape=(56, 60, 52),
    voxel_size=(2.0, 2.0, 2.0),
    tes=(0.004, 0.008, 0.012, 0.016, 0.020),
    snr=60.0,
    seed=0,
    skull_gap=True,
    shim_hz=0.0,
    offset_scale=1.0,
):
    """Spherical-shell head: brain (+ 3 iron-rich nuclei), CSF, dark skull, bright scalp, air.

    The field is the forward dipole field (3 T) of the tissue/air susceptibility map, so the scalp
    next to air sees strong gradients as in vivo; ``shim_hz`` adds a smooth shim-like field (Hz). ``skull_gap`` opens a 5 mm wide hole in the skull
    so scalp and CSF touch (a "scalp bridge"). Complex signal ``m exp(i(phi0 + 2 pi f TE))`` plus
    complex Gaussian noise (sigma = brain S0 / snr).
    """
    rng = np.random.default_rng(seed)
    vs = tuple(float(v) for v in voxel_size)
    r = ellipsoid_radius(shape, vs, axes_mm=(1.0, 1.0, 1.0))
    brain = r < 36.0
    csf = (r >= 36.0) & (r < 40.0)
    skull = (r >= 40.0) & (r < 45.0)
    scalp = (r >= 45.0) & (r < 50.0)
    if skull_gap:
        grids = np.meshgrid(*[(np.arange(n) - (n - 1) / 2.0) * v for n, v in zip(shape, vs)],
                            indexing="ij")
        gap = (np.sqrt(grids[1] ** 2 + grids[2] ** 2) < 5.0) & (grids[0] > 0) & skull
        skull = skull & ~gap
        scalp = scalp | gap
    head = brain | csf | skull | scalp
    nuclei = []
    for c, a, chi in [((-10, 8, -4), (6, 5, 5), 0.15), ((12, 8, -4), (6, 5, 5), 0.10),
                      ((0, -12, 6), (7, 6, 5), -0.05)]:
        nuclei.append((ellipsoid_radius(shape, vs, c, a) < 1.0) & brain)
    chi = np.zeros(shape)
    chi[head] = -9.4  # tissue relative to air
    chi[skull] = -11.0
    for nuc, val in zip(nuclei, [0.15, 0.10, -0.05]):
        chi[nuc] += val
    field_ppm = forward_field(chi, vs, (0.0, 0.0, 1.0), pad=16)
    # remove the Lorentz-sphere constant inside the head so the brain field is moderate
    field_hz = ppm_to_hz(field_ppm, B0)
    field_hz = field_hz - np.median(field_hz[brain])
    # smooth coil phase offset
    g = [np.linspace(-1, 1, n) for n in shape]
    x, y, z = np.meshgrid(*g, indexing="ij")
    offset = offset_scale * (0.9 + 1.2 * x - 0.8 * y * z + 0.4 * np.sin(2 * y)).astype(np.float64)
    # imperfect shim: smooth extra field (Hz) that aliases over the echo spacing when large
    field_hz = field_hz + shim_hz * (x + 0.5 * y**2 - 0.3 * x * z)
    s0 = np.zeros(shape)
    r2s = np.zeros(shape)
    s0[brain], r2s[brain] = 1.0, 20.0
    s0[csf], r2s[csf] = 1.3, 4.0
    s0[skull], r2s[skull] = 0.04, 200.0
    s0[scalp], r2s[scalp] = 1.2, 30.0
    tes = np.asarray(tes, float)
    n_e = tes.size
    sigma = 1.0 / snr
    mag = np.empty(shape + (n_e,), np.float32)
    phase = np.empty(shape + (n_e,), np.float32)
    for e, te in enumerate(tes):
        sig = s0 * np.exp(-r2s * te) * np.exp(1j * (offset + 2 * np.pi * field_hz * te))
        sig = sig + sigma * (rng.standard_normal(shape) + 1j * rng.standard_normal(shape))
        mag[..., e] = np.abs(sig)
        phase[..., e] = np.angle(sig)
    phase[phase >= np.pi] -= 2 * np.pi
    return {
        "mag": mag,
        "phase": phase,
        "tes": tes,
        "voxel_size": vs,
        "field_hz": field_hz,
        "offset": offset,
        "brain": brain,
        "csf": csf,
        "skull": skull,
        "scalp": scalp,
        "head": head,
        "sigma": sigma,
    }


def smooth_phase(shape=(48, 52, 40), amplitude=6 * np.pi, width_vox2=1200.0):
    """Smooth test phase with a peak of ``amplitude`` rad plus a ramp, and an ellipsoidal mask."""
    x, y, z = np.meshgrid(*[np.arange(k) - k / 2 for k in shape], indexing="ij")
    mask = np.sqrt((x / (0.42 * shape[0])) ** 2 + (y / (0.42 * shape[1])) ** 2
                   + (z / (0.42 * shape[2])) ** 2) < 1
    true = amplitude * np.exp(-((x - 5) ** 2 + y**2 + (z + 3) ** 2) / width_vox2) + 0.1 * x - 3.0
    return true, mask
