"""QC figures ("reportlets") for atlas propagation and longitudinal change.

* :func:`plot_label_contours`: atlas label contours over an anatomical image (template, T1w or
  QSM), three orthogonal slices through the centre of the deep gray matter labels;
* :func:`plot_change`: per-structure baseline vs follow-up mean susceptibility.

Both write SVG (default) or PNG, decided by the output file extension.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nb  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

_FALLBACK_COLOURS = plt.get_cmap("tab20").colors


def _colour_map(label_table: pd.DataFrame | None, indices) -> dict:
    colours = {}
    lookup = {}
    if label_table is not None and "color" in label_table.columns:
        lookup = {
            int(r["index"]): r["color"]
            for r in label_table.to_dict("records")
            if isinstance(r.get("color"), str) and r["color"].startswith("#")
        }
    for k, idx in enumerate(sorted(int(i) for i in indices)):
        colours[idx] = lookup.get(idx, _FALLBACK_COLOURS[k % len(_FALLBACK_COLOURS)])
    return colours


def dgm_cut_coords(labels_file) -> tuple:
    """World coordinates (mm) for three orthogonal cuts through the labelled structures.

    y and z: centre of mass of all labels; x: centre of mass of the labels on the left of it
    (a sagittal cut through one hemisphere's nuclei rather than the midline).
    """
    img = nb.load(str(labels_file))
    lab = np.asarray(img.dataobj)
    if lab.ndim == 4:
        lab = lab[..., 0]
    ijk = np.argwhere(lab > 0)
    if ijk.size == 0:
        centre = (np.array(lab.shape) - 1) / 2.0
        return tuple(float(v) for v in nb.affines.apply_affine(img.affine, centre))
    xyz = nb.affines.apply_affine(img.affine, ijk)
    centre = xyz.mean(axis=0)
    left = xyz[xyz[:, 0] < centre[0]]  # RAS+: smaller x is left
    x = left[:, 0].mean() if len(left) else centre[0]
    return (float(x), float(centre[1]), float(centre[2]))


def plot_label_contours(
    anat_file,
    labels_file,
    out_file,
    label_table: pd.DataFrame | None = None,
    title: str | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = "gray",
):
    """Label contours over ``anat_file`` in three orthogonal slices through the DGM.

    ``labels_file`` may be on another grid than ``anat_file`` (nilearn resamples both into
    world space). For a QSM map pass e.g. ``vmin=-0.1, vmax=0.2`` (ppm). Returns ``out_file``.
    """
    from nilearn import image, plotting

    anat = image.load_img(str(anat_file))
    if len(anat.shape) == 4:
        anat = image.index_img(anat, 0)
    labels = image.load_img(str(labels_file))
    if len(labels.shape) == 4:
        labels = image.index_img(labels, 0)
    lab = np.asarray(labels.dataobj)
    present = [int(v) for v in np.unique(lab) if v > 0]
    colours = _colour_map(label_table, present)
    data = np.asarray(anat.dataobj, dtype=float)
    finite = data[np.isfinite(data) & (data != 0)]
    if vmin is None:
        vmin = float(np.percentile(finite, 1)) if finite.size else 0.0
    if vmax is None:
        vmax = float(np.percentile(finite, 99.5)) if finite.size else 1.0
    fig = plt.figure(figsize=(11, 3.8), facecolor="black")
    display = plotting.plot_img(
        anat,
        display_mode="ortho",
        cut_coords=dgm_cut_coords(labels_file),
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        figure=fig,
        black_bg=True,
        annotate=True,
        draw_cross=False,
        title=title,
    )
    for idx in present:
        mask = image.new_img_like(labels, (lab == idx).astype(np.float32), copy_header=True)
        display.add_contours(mask, levels=[0.5], colors=[colours[idx]], linewidths=1.2)
    Path(out_file).parent.mkdir(parents=True, exist_ok=True)
    display.savefig(str(out_file), dpi=110)
    display.close()
    plt.close(fig)
    return str(Path(out_file).resolve())


def plot_change(
    change: pd.DataFrame,
    out_file,
    title: str | None = None,
    label_table: pd.DataFrame | None = None,
):
    """Baseline vs follow-up mean susceptibility (ppb) per label, from a change table.

    ``change`` is a :func:`qsmprep.roi.longitudinal_change` table (``name``,
    ``baseline_mean_ppb``, ``followup_mean_ppb``, ``change_mean_ppb``). Left: one line per
    label from baseline to follow-up; right: the change per label (bars). Colours and
    abbreviations come from ``label_table`` (the atlas table) when given. Returns ``out_file``.
    """
    df = change.dropna(subset=["baseline_mean_ppb", "followup_mean_ppb"]).reset_index(drop=True)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.2), gridspec_kw={"width_ratios": [1, 1.4]})
    colours = _colour_map(label_table, df["index"])
    abbrev = {}
    if label_table is not None and "abbreviation" in label_table.columns:
        abbrev = dict(zip(label_table["index"].astype(int), label_table["abbreviation"]))
    base_lab = str(df["baseline_session"].iloc[0]) if len(df) else "baseline"
    foll_lab = str(df["followup_session"].iloc[0]) if len(df) else "followup"
    for r in df.to_dict("records"):
        c = colours[int(r["index"])]
        ax1.plot([0, 1], [r["baseline_mean_ppb"], r["followup_mean_ppb"]], "-o", color=c,
                 label=r["name"], lw=1.5, ms=4)
        ax1.annotate(str(abbrev.get(int(r["index"]), r["name"])), (1.04, r["followup_mean_ppb"]),
                     fontsize=7, color=c, va="center")
    ax1.set_xticks([0, 1], [base_lab, foll_lab])
    ax1.set_xlim(-0.2, 1.45)
    ax1.set_ylabel("mean susceptibility (ppb)")
    ax1.grid(alpha=0.3)
    ax1.set_title("per label")
    y = np.arange(len(df))
    ax2.barh(y, df["change_mean_ppb"], color=[colours[int(i)] for i in df["index"]])
    ax2.set_yticks(y, df["name"], fontsize=8)
    ax2.invert_yaxis()
    ax2.axvline(0, color="k", lw=0.8)
    ax2.set_xlabel(f"{foll_lab} - {base_lab} (ppb)")
    ax2.grid(axis="x", alpha=0.3)
    ax2.set_title("change")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    Path(out_file).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(out_file), dpi=110)
    plt.close(fig)
    return str(Path(out_file).resolve())
