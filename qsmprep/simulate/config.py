"""Simulation settings: tissue properties, planted effects, geometry presets.

Susceptibility values (ppm, relative to water/CSF) are round numbers inside the ranges reported by
Li W, Wu B, Liu C. Quantitative susceptibility mapping of human brain reflects spatial variation in
tissue composition. NeuroImage 2011;55(4):1645-1656; Deistung A, et al. Toward in vivo histology:
a comparison of quantitative susceptibility mapping (QSM) with magnitude-, phase-, and
R2*-imaging at ultra-high magnetic field strength. NeuroImage 2013;65:299-314; and Lim IAL, et al.
Human brain atlas for automated region of interest selection in quantitative susceptibility
mapping: application to determine iron content in deep gray matter structures. NeuroImage
2013;82:449-469. Cortical bone -2.0 ppm (Hopkins JA, Wehrli FW. Magnetic susceptibility
measurement of insoluble solids by NMR: magnetic susceptibility of bone. Magn Reson Med
1997;37:494-500) and air +9.4 ppm relative to water (Schenck JF. The role of magnetic
susceptibility in magnetic resonance imaging. Med Phys 1996;23:815-850).

T2* values at 3 T (ms) follow the R2* ranges of Li et al. 2011 and Peran P, et al. Voxel-based
analysis of R2* maps in the healthy human brain. J Magn Reson Imaging 2007;26:1413-1420.

Planted effects mirror the seed study (Hagemeier et al., NeuroImage Clin 2017/2018, "Changes of
deep gray matter magnetic susceptibility over 2 years in multiple sclerosis and healthy control
brain"): MS > HC in caudate and pallidum, MS < HC in thalamus, caudate increasing over two years
in both groups; putamen carries no planted effect (the null structure).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

#: Tissue classes of the head model (codes in the model's class image). DGM labels use
#: ``LABEL_OFFSET + atlas index``.
AIR, SCALP, SKULL, EXTRA_CSF, SINUS = 0, 1, 2, 3, 4
CSF, GM, WM = 10, 11, 12
LABEL_OFFSET = 100
BRAIN_CODES = (CSF, GM, WM)
CLASS_NAMES = {AIR: "air", SCALP: "scalp", SKULL: "skull", EXTRA_CSF: "extra_csf",
               SINUS: "sinus", CSF: "csf", GM: "gm", WM: "wm"}


#: Tissue properties of the head model's tissue classes (:data:`CLASS_NAMES`):
#: susceptibility (ppm, relative to water), T2* at 3 T (ms), proton density (fraction).
TISSUE_PROPERTIES = {
    "air": (9.4, 1.0, 0.0), "sinus": (9.4, 1.0, 0.0), "skull": (-2.0, 1.0, 0.05),
    "scalp": (0.0, 30.0, 0.9), "extra_csf": (0.0, 300.0, 1.0),
    "csf": (0.0, 300.0, 1.0), "gm": (0.01, 60.0, 0.8), "wm": (-0.03, 48.0, 0.69),
}
#: The same properties for every structure of the atlas (the ``structure`` column of
#: :data:`qsmprep.atlas.DGM_LABELS`, which defines the structures and their labels); a structure
#: missing here is simulated with 0 ppm, T2* 1 ms and proton density 0.
STRUCTURE_PROPERTIES = {
    "caudate": (0.06, 42.0, 0.8),
    "putamen": (0.045, 35.0, 0.8),
    "pallidum": (0.13, 22.0, 0.75),
    "thalamus": (0.005, 48.0, 0.75),
    "substantia_nigra": (0.12, 25.0, 0.75),
    "red_nucleus": (0.09, 30.0, 0.75),
    "dentate": (0.07, 28.0, 0.75),
}


def _property(column: int) -> dict:
    """One column of :data:`TISSUE_PROPERTIES` and :data:`STRUCTURE_PROPERTIES` as a dict."""
    return {name: props[column]
            for table in (TISSUE_PROPERTIES, STRUCTURE_PROPERTIES)
            for name, props in table.items()}


def _chi():
    return _property(0)


def _t2star_ms():
    return _property(1)


def _pd():
    return _property(2)


#: T1w intensities outside the template brain (template units, WM ~ 90).
T1W_OUTSIDE = {"air": 0.0, "sinus": 0.0, "skull": 6.0, "scalp": 70.0, "extra_csf": 18.0}


@dataclass(frozen=True)
class Preset:
    """Geometry of one acquisition protocol."""

    name: str
    model_mm: float          # resolution of the head model (template space)
    gre_mm: tuple            # GRE voxel size
    t1w_mm: tuple            # T1w voxel size
    pad_mm: float = 32.0     # zero padding (air) around the GRE grid for the forward model


PRESETS = {
    "small": Preset("small", model_mm=2.0, gre_mm=(3.0, 3.0, 3.0), t1w_mm=(2.0, 2.0, 2.0)),
    "1mm": Preset("1mm", model_mm=1.0, gre_mm=(1.0, 1.0, 1.0), t1w_mm=(1.0, 1.0, 1.0)),
    # the protocol of issue 14's timing and of the independent heads: 1.5 mm GRE slices
    "1mm-aniso": Preset("1mm-aniso", model_mm=1.0, gre_mm=(1.0, 1.0, 1.5),
                        t1w_mm=(1.0, 1.0, 1.0)),
}


@dataclass(frozen=True)
class SimulationConfig:
    """Everything that defines a simulated cohort apart from the seed and its size.

    Effects are in ppb. ``group_effects_ppb``: MS minus HC at every session.
    ``time_effects_ppb``: change per session step (baseline -> follow-up, 2 years) in both groups.
    ``interaction_effects_ppb``: extra change per session step in MS only.
    ``changes_ppb``: explicit planted change per session step for every subject (added on top,
    also in ``repeat`` mode). ``repeat``: identical susceptibility at every session (no time or
    group-by-time effects, no within-subject noise); only motion, phase offset and noise differ.
    """

    b0: float = 3.0
    echo_times: tuple = (0.004, 0.008, 0.012, 0.016, 0.020, 0.024)
    snr: float = 100.0                  # magnitude SNR of WM in echo 1 (inf: noise free)
    chi_ppm: dict = field(default_factory=_chi)
    t2star_ms: dict = field(default_factory=_t2star_ms)
    proton_density: dict = field(default_factory=_pd)
    group_effects_ppb: dict = field(
        default_factory=lambda: {"caudate": 10.0, "pallidum": 12.0, "thalamus": -8.0})
    time_effects_ppb: dict = field(default_factory=lambda: {"caudate": 6.0})
    interaction_effects_ppb: dict = field(default_factory=dict)
    changes_ppb: dict = field(default_factory=dict)
    null_structures: tuple = ("putamen",)   # documented: no planted effect
    between_subject_sd_ppb: float = 7.0
    within_subject_sd_ppb: float = 1.5
    texture_sd_ppb: float = 4.0             # smooth intra-tissue texture (sigma 2 mm)
    repeat: bool = False
    # geometry
    warp_rms_mm: float = 2.5                # smooth nonlinear displacement (RMS)
    warp_spacing_mm: float = 8.0
    scale_sd: float = 0.04                  # per-axis head size variation (fraction)
    motion_deg: float = 3.0                 # max rotation per axis and session
    motion_mm: float = 3.0                  # max translation per axis and session
    oblique_deg: float = 0.0                # GRE slab tilt about the left-right axis
    sinus: bool = True
    # images
    phase_offset_rad: float = 1.0           # amplitude of the smooth phase offset phi0
    integer_phase: bool = False             # write phase as int16 -4096..4095 ('arbitrary')
    gre_bias: float = 0.15                  # receive-field amplitude (fraction)
    t1w_bias: float = 0.15
    t1w_noise: float = 0.02                 # fraction of WM intensity

    def with_(self, **kw) -> "SimulationConfig":
        """A copy with some fields replaced.

        Parameters
        ----------
        **kw
            Field values.

        Returns
        -------
        SimulationConfig

        Examples
        --------
        >>> SimulationConfig().with_(snr=50.0).snr
        50.0
        """
        return replace(self, **kw)

    def to_dict(self) -> dict:
        """All fields as a JSON-ready dict (written to ``simulation.json``).

        Returns
        -------
        dict
        """
        return asdict(self)


def session_names(n_sessions: int) -> list[str]:
    """Session labels of a cohort.

    Parameters
    ----------
    n_sessions : int
        Number of sessions.

    Returns
    -------
    list of str
        ``baseline``, ``followup``, ``followup2``, ...

    Examples
    --------
    >>> session_names(3)
    ['baseline', 'followup', 'followup2']
    """
    names = ["baseline", "followup"] + [f"followup{i}" for i in range(2, max(n_sessions, 2))]
    return names[:n_sessions]
