"""Participant HTML report: one self-contained page per subject (``out/sub-<label>.html``).

Figures are written as SVG files named like BIDS derivatives (``sub-01_ses-baseline_desc-qsm_
figure.svg``) so that the publisher puts them under ``out/sub-<label>/figures/``; the HTML page
references them by relative path, as fMRIPrep's reports do.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nb  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .. import __version__  # noqa: E402
from ..qsm.masking import combine_magnitude  # noqa: E402


def _slices_through(mask):
    """Indices of three orthogonal slices through the centre of ``mask`` (or the volume)."""
    if mask is not None and mask.any():
        idx = np.argwhere(mask)
        return [int(np.median(idx[:, a])) for a in range(3)]
    return [s // 2 for s in mask.shape]


def _oriented(vol, axis, index):
    sl = np.take(vol, index, axis=axis)
    return np.rot90(sl)


def qsm_figure(chi_file, labels_file, out_file, title, vmin=-0.1, vmax=0.2):
    """Three orthogonal QSM slices (ppm) through the DGM with atlas label contours."""
    chi_img = nb.as_closest_canonical(nb.load(chi_file))
    chi = np.asarray(chi_img.dataobj, dtype=np.float32)
    labels = None
    if labels_file and os.path.exists(labels_file):
        labels = np.asarray(nb.as_closest_canonical(nb.load(labels_file)).dataobj).astype(int)
    centre = _slices_through(labels > 0 if labels is not None and labels.any() else chi != 0)
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6), facecolor="black")
    for ax, axis in zip(axes, (0, 1, 2)):
        im = ax.imshow(_oriented(chi, axis, centre[axis]), cmap="gray", vmin=vmin, vmax=vmax,
                       interpolation="nearest")
        if labels is not None:
            lab = _oriented(labels, axis, centre[axis])
            for val in np.unique(lab[lab > 0]):
                ax.contour(lab == val, levels=[0.5], colors=[plt.cm.tab20(int(val) % 20)], linewidths=0.8)
        ax.set_axis_off()
    cbar = fig.colorbar(im, ax=axes, fraction=0.02, pad=0.01)
    cbar.set_label("susceptibility (ppm)", color="white")
    cbar.ax.yaxis.set_tick_params(color="white", labelcolor="white")
    fig.suptitle(title, color="white")
    fig.savefig(out_file, format="svg", facecolor="black", bbox_inches="tight")
    plt.close(fig)
    return out_file


def mask_figure(mag_file, mask_file, out_file, title):
    """Brain mask outline over the (root-sum-of-squares) magnitude."""
    mag = np.asarray(nb.as_closest_canonical(nb.load(mag_file)).dataobj, dtype=np.float32)
    mag = combine_magnitude(mag)
    mask = np.asarray(nb.as_closest_canonical(nb.load(mask_file)).dataobj) > 0
    centre = _slices_through(mask)
    vmax = np.percentile(mag[mag > 0], 99) if (mag > 0).any() else 1
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6), facecolor="black")
    for ax, axis in zip(axes, (0, 1, 2)):
        ax.imshow(_oriented(mag, axis, centre[axis]), cmap="gray", vmin=0, vmax=vmax)
        ax.contour(_oriented(mask, axis, centre[axis]), levels=[0.5], colors=["#ff4d4d"], linewidths=1)
        ax.set_axis_off()
    fig.suptitle(title, color="white")
    fig.savefig(out_file, format="svg", facecolor="black", bbox_inches="tight")
    plt.close(fig)
    return out_file


def _table_html(df: pd.DataFrame) -> str:
    return df.to_html(index=False, na_rep="n/a", float_format=lambda v: f"{v:.1f}", border=0,
                      classes="stats")


_CSS = """
body{font-family:Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{border-bottom:2px solid #444} h2{margin-top:1.6em;border-bottom:1px solid #bbb}
table.stats{border-collapse:collapse;font-size:0.85em} table.stats td,table.stats th{padding:2px 8px;
text-align:right;border-bottom:1px solid #ddd} table.stats th{background:#f0f0f0}
img{max-width:100%;background:black} .meta{font-size:0.85em;color:#555} pre{background:#f6f6f6;padding:8px;
font-size:0.8em;overflow-x:auto} .warn{color:#a40}
"""


def build_report(subject, sessions, out_dir, extra_figures=(), change_tsv=None, warnings=(),
                 template=None, labels_template=None, label_table=None, registration_mode=None):
    """Write ``sub-<subject>.html`` and its figures into ``out_dir``; return all paths.

    ``sessions`` is a list of dicts with keys ``session``, ``chi``, ``mask``, ``brain_mask``,
    ``mag``, ``labels`` (GRE grid), ``stats``, ``sidecar`` (dict), and optionally ``t1w`` and
    ``labels_t1w`` (atlas labels on the session's T1w grid).
    ``template``/``labels_template``: the within-subject template and its labels (longitudinal path).
    ``extra_figures`` are already-made figure files to embed.
    """
    from .figures import plot_change, plot_label_contours

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = pd.read_csv(label_table, sep="\t") if label_table and os.path.exists(label_table) else None
    figures = []

    def img(fig):
        figures.append(str(fig))
        return f"<p><img src='sub-{subject}/figures/{os.path.basename(str(fig))}'></p>"

    parts = [f"<h1>qsmprep report: sub-{html.escape(subject)}</h1>",
             f"<p class='meta'>qsmprep {__version__}; sessions: "
             f"{', '.join(html.escape(s['session'] or 'n/a') for s in sessions)}"
             + (f"; atlas registration: {html.escape(registration_mode)}" if registration_mode else "")
             + "</p>"]
    if warnings:
        parts.append("<h2>Warnings</h2><ul>" + "".join(f"<li class='warn'>{html.escape(w)}</li>"
                                                      for w in warnings) + "</ul>")
    if template and labels_template and os.path.exists(template) and os.path.exists(labels_template):
        parts.append("<h2>Within-subject template</h2><p>Atlas labels carried into the unbiased "
                     "within-subject template (one SyN registration per subject).</p>")
        parts.append(img(plot_label_contours(template, labels_template,
                                             out_dir / f"sub-{subject}_desc-template_figure.png",
                                             label_table=table, title="subject template + atlas")))
    for s in sessions:
        ses = s["session"]
        prefix = f"sub-{subject}" + (f"_ses-{ses}" if ses and ses != "single" else "")
        parts.append(f"<h2>{html.escape(prefix)}</h2>")
        parts.append(img(mask_figure(s["mag"], s["brain_mask"], out_dir / f"{prefix}_desc-brainmask_figure.svg",
                                     f"{prefix}: brain mask over magnitude")))
        if s.get("t1w") and s.get("labels_t1w") and os.path.exists(s["t1w"]) and os.path.exists(s["labels_t1w"]):
            parts.append(img(plot_label_contours(s["t1w"], s["labels_t1w"],
                                                 out_dir / f"{prefix}_desc-t1wlabels_figure.png",
                                                 label_table=table, title=f"{prefix}: T1w + atlas")))
        if s.get("labels") and os.path.exists(s["labels"]):
            parts.append(img(plot_label_contours(s["chi"], s["labels"], out_dir / f"{prefix}_desc-qsm_figure.png",
                                                 label_table=table, vmin=-0.1, vmax=0.2,
                                                 title=f"{prefix}: QSM (-0.1..0.2 ppm) + atlas")))
        else:
            parts.append(img(qsm_figure(s["chi"], None, out_dir / f"{prefix}_desc-qsm_figure.svg",
                                        f"{prefix}: susceptibility")))
        if s.get("stats") and os.path.exists(s["stats"]):
            df = pd.read_csv(s["stats"], sep="\t", na_values="n/a")
            parts.append("<h3>Deep gray matter susceptibility (ppb)</h3>" + _table_html(df))
        side = s.get("sidecar") or {}
        parts.append("<details><summary>Reconstruction provenance (Chimap sidecar)</summary><pre>"
                     + html.escape(json.dumps(side, indent=2, default=str)) + "</pre></details>")
    for fig in extra_figures:
        if fig and os.path.exists(fig):
            parts.append(img(fig))
    if change_tsv and os.path.exists(change_tsv):
        df = pd.read_csv(change_tsv, sep="\t", na_values="n/a")
        parts.append("<h2>Longitudinal change (ppb)</h2>")
        parts.append(img(plot_change(df, out_dir / f"sub-{subject}_desc-dgmchange_figure.svg",
                                     title=f"sub-{subject}: baseline vs follow-up", label_table=table)))
        parts.append(_table_html(df))
    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>qsmprep sub-"
            f"{html.escape(subject)}</title><style>{_CSS}</style></head><body>"
            + "\n".join(parts) + "</body></html>")
    report = out_dir / f"sub-{subject}.html"
    report.write_text(page)
    return str(report), figures
