"""Participant HTML report: one self-contained page per subject (``out/sub-<label>.html``).

Every figure is embedded in the page as inline SVG (:func:`qsmprep.reports.figures.figure_svg`),
so the page needs no other file: it can be mailed, archived or opened from any folder. No figure
files are written next to it. Each figure is rendered once, with matplotlib only.

Sections: a QC summary (every flag of every session, see :mod:`qsmprep.reports.qc`), the
within-subject template with the atlas, then per session the brain mask over the magnitude, the
T1w with the atlas, the QSM with the atlas (colour bar in ppm, legend of structures), the
session's flags and registration metrics, the ROI table (ppb) and the reconstruction provenance;
last the longitudinal change (ppb). All text that comes from the data or the user (labels,
names, sidecar contents, warnings) is HTML-escaped.
"""

from __future__ import annotations

import functools
import html
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd

from .. import __version__
from ..interfaces._io import open_image
from ..qsm.masking import combine_magnitude
from . import qc
from .figures import figure_svg, image_cache, ortho_figure, plot_change

#: QSM display window (ppm) of the report figures.
QSM_WINDOW_PPM = (-0.1, 0.2)

#: Columns of the ROI table as shown (name in the file -> header on the page); others are in
#: the TSV file. Units: ppb for susceptibility, 1/s for R2*.
_STATS_COLUMNS = {"name": "structure", "mean_ppb": "mean (ppb)", "median_ppb": "median (ppb)",
                  "sd_ppb": "SD (ppb)", "n_voxels": "voxels", "volume_mm3": "volume (mm³)",
                  "r2star_mean": "R2* mean (1/s)"}
_CHANGE_COLUMNS = {"name": "structure", "baseline_mean_ppb": "baseline mean",
                   "followup_mean_ppb": "follow-up mean", "change_mean_ppb": "change (mean)",
                   "change_median_ppb": "change (median)", "baseline_n_voxels": "voxels (b)",
                   "followup_n_voxels": "voxels (f)"}


def _orientation(change: pd.DataFrame):
    """``(angle, names of the flagged rows)`` of a change table; ``(None, [])`` without a
    ``b0_angle_deg``."""
    if "b0_angle_deg" not in change.columns or change.empty:
        return None, []
    angle = pd.to_numeric(change["b0_angle_deg"], errors="coerce").iloc[0]
    if not np.isfinite(angle):
        return None, []
    flagged = change.loc[pd.to_numeric(change["orientation_flagged"], errors="coerce") == 1,
                         "name"].astype(str).tolist()
    return float(angle), flagged


def _orientation_html(change: pd.DataFrame) -> str:
    """The change of the head's orientation to B0 between the sessions, as a paragraph
    (empty when the change table has no ``b0_angle_deg``)."""
    from ..b0_orientation import ANGLE_WARN_DEG

    angle, flagged = _orientation(change)
    if angle is None:
        return ""
    text = (f"The head's orientation to B0 changed by {angle:.1f}° between the sessions "
            "(angle between their B0 directions in the head, from a rigid registration of the "
            "follow-up GRE magnitude to the baseline one).")
    if flagged:
        return (f"<p class='warn'>{html.escape(text)} Above {ANGLE_WARN_DEG:g}°, the change of "
                f"{html.escape(', '.join(flagged))} may carry an orientation bias of a few ppb "
                "that is not in the tissue: on the independent simulator these structures read "
                "1-5 ppb differently when only the head's tilt to B0 changed "
                "(<code>orientation_flagged</code> = 1; docs/validation.md).</p>")
    return f"<p class='meta'>{html.escape(text)} Not above {ANGLE_WARN_DEG:g}°: no flag.</p>"


def _exists(path) -> bool:
    return bool(path) and os.path.exists(str(path))


def _magnitude_image(mag):
    """RSS magnitude as an in-memory image from one file (3-D or 4-D) or a list of echo files."""
    files = [mag] if isinstance(mag, (str, os.PathLike)) else list(mag)
    imgs = [open_image(f) for f in files]
    data = [np.asarray(i.dataobj, dtype=np.float32) for i in imgs]
    arr = data[0] if len(data) == 1 else np.stack(data, axis=-1)
    return nb.Nifti1Image(combine_magnitude(arr), imgs[0].affine)


def _table_html(df: pd.DataFrame, columns: dict, digits: int = 1) -> str:
    keep = [c for c in columns if c in df.columns]
    shown = df[keep].rename(columns=columns)
    body = shown.to_html(index=False, na_rep="n/a", border=0, classes="stats", escape=True,
                         float_format=lambda v: f"{v:.{digits}f}")
    return f"<div class='tablewrap'>{body}</div>"


def _flags_html(flags: list[dict]) -> str:
    if not flags:
        return "<p class='ok'>No quality flag.</p>"
    rows = "".join(
        f"<tr class='{html.escape(f['severity'])}'><td>{html.escape(f['severity'])}</td>"
        f"<td>{html.escape(f['category'])}</td><td>{html.escape(f['message'])}</td></tr>"
        for f in flags)
    return ("<div class='tablewrap'><table class='flags'><tr><th>severity</th><th>check</th>"
            f"<th>message</th></tr>{rows}</table></div>")


def _recon_metrics_html(side: dict) -> str:
    """The dipole inversion's stop and field residual, as the Chimap sidecar recorded them."""
    inv = side.get("DipoleInversion") if isinstance(side, dict) else None
    if not isinstance(inv, dict):
        return ""
    parts = []
    if "Iterations" in inv and "StoppedBy" in inv:
        parts.append(f"{html.escape(str(inv.get('Method', '')))} stopped by its "
                     f"{html.escape(str(inv['StoppedBy']))} after {inv['Iterations']} iterations "
                     f"(last relative change {float(inv.get('FinalRelativeChange', float('nan'))):.3g})")
    res = inv.get("FieldResidual")
    if isinstance(res, dict) and res.get("RMSOverNoise") is not None:
        parts.append(f"field residual {float(res['RMSOverNoise']):.2f} x the field noise "
                     f"(flagged above {float(res.get('WarnAbove', float('nan'))):g})")
    if not parts:
        return ""
    return f"<p class='meta'>Dipole inversion: {'; '.join(parts)}.</p>"


def _metrics_html(metrics: dict) -> str:
    if not metrics:
        return ("<p class='meta'>Registration quality metrics: not recorded in the stats table "
                "(no <code>qc_*</code> columns).</p>")
    items = ", ".join(f"<code>{html.escape(k)}</code> = {v:.3g}" for k, v in metrics.items())
    return f"<p class='meta'>Registration quality metrics: {items}.</p>"


def _figure(fig, name: str, caption: str) -> str:
    return (f"<figure>{figure_svg(fig, salt=name)}<figcaption>{html.escape(caption)}"
            "</figcaption></figure>")


def _ortho_html(name, caption, *args, **kwargs) -> str:
    return _figure(ortho_figure(*args, **kwargs), name, caption)


def _mask_html(name, caption, mag, **kwargs) -> str:
    return _figure(ortho_figure(_magnitude_image(mag), **kwargs), name, caption)


def _change_html(name, caption, df, **kwargs) -> str:
    return _figure(plot_change(df, None, **kwargs), name, caption)


def _draw_all(draws, n_threads: int = 1) -> list[str]:
    """Run the figure functions ``draws`` (each returns HTML) in ``n_threads`` threads.

    Reading and decompressing images, resampling labels and the percentiles of the display
    range run in numpy, zlib/ISA-L and SciPy with the GIL released, so two threads overlap most
    of a figure's cost. Each figure is its own ``Figure`` (not pyplot's global list) and
    :func:`qsmprep.reports.figures.figure_svg` writes one at a time, so the page is the same
    whatever ``n_threads``. Results are in the order of ``draws``.
    """
    if n_threads <= 1 or len(draws) <= 1:
        return [draw() for draw in draws]
    with ThreadPoolExecutor(max_workers=min(n_threads, len(draws))) as pool:
        return list(pool.map(lambda draw: draw(), draws))


_CSS = """
body{font-family:Helvetica,Arial,sans-serif;margin:1.5em auto;max-width:1100px;padding:0 1em;
color:#222} h1{border-bottom:2px solid #444} h2{margin-top:1.6em;border-bottom:1px solid #bbb}
.tablewrap{max-width:100%;overflow-x:auto}
table.stats,table.flags{border-collapse:collapse;font-size:0.82em}
table.stats td,table.stats th{padding:2px 6px;text-align:right;border-bottom:1px solid #ddd;
white-space:nowrap} table.stats td:first-child,table.stats th:first-child{text-align:left}
table.stats th,table.flags th{background:#f0f0f0;white-space:normal}
table.flags td,table.flags th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left;
vertical-align:top} tr.error td{color:#b00} tr.warning td{color:#a40}
figure{margin:0.8em 0} figure svg{max-width:100%;height:auto;display:block}
figcaption{font-size:0.8em;color:#555} .meta{font-size:0.85em;color:#555} .ok{color:#262}
pre{background:#f6f6f6;padding:8px;font-size:0.8em;overflow-x:auto} .warn{color:#a40}
"""


@image_cache()  # the figures share labels, masks and maps: each file is read once
def build_report(subject, sessions, out_dir, extra_figures=(), change_tsv=None, warnings=(),
                 template=None, labels_template=None, label_table=None, registration_mode=None,
                 min_roi_voxels=qc.MIN_ROI_VOXELS, n_threads=1):
    """Write the self-contained participant report ``sub-<subject>.html``.

    Parameters
    ----------
    subject : str
        Subject label without ``sub-`` (escaped in the page).
    sessions : list of dict
        Per session: ``session``, ``chi``, ``mask`` (final QSM mask), ``brain_mask`` (mask
        before erosion, optional), ``mag`` (magnitude: one file, or a list of echo files),
        ``labels`` (GRE grid), ``stats`` (the ROI table), ``sidecar`` (the Chimap sidecar as
        a dict), and optionally ``t1w`` and ``labels_t1w`` (atlas labels on the session's
        T1w grid). A figure whose files are missing is left out.
    out_dir : str or Path
        Where the page is written (created if needed).
    extra_figures : iterable of path
        SVG files made elsewhere, embedded inline.
    change_tsv : path, optional
        The longitudinal change table (``*_desc-dgmchange_stats.tsv``).
    warnings : iterable of str
        Input warnings of the subject (e.g. a session without T1w), listed under "Warnings".
    template, labels_template : path, optional
        The within-subject template and its atlas labels (longitudinal path).
    label_table : path, optional
        The atlas ``dseg.tsv`` (label names and contour colours).
    registration_mode : str, optional
        ``longitudinal`` or ``cross-sectional``, said in the page.
    min_roi_voxels : int
        Small-ROI threshold of the QC flags (:data:`qsmprep.reports.qc.MIN_ROI_VOXELS`).
    n_threads : int
        Threads drawing the figures (the page is the same for any number).

    Returns
    -------
    path : str
        The page written.
    figures : list
        Always empty (kept for the interface's ``figures`` output): nothing but the page is
        written, every figure is inline SVG.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = pd.read_csv(label_table, sep="\t") if _exists(label_table) else None
    esc = html.escape
    body = []
    summary = []

    jobs = []  # (place in body, function drawing one figure as HTML): drawn at the end

    def figure_later(draw, *args, **kwargs):
        body.append(None)
        jobs.append((len(body) - 1, functools.partial(draw, *args, **kwargs)))

    if template and labels_template and _exists(template) and _exists(labels_template):
        body.append("<h2>Within-subject template</h2><p>Atlas labels carried into the unbiased "
                    "within-subject template (one SyN registration per subject).</p>")
        figure_later(_ortho_html, f"sub-{subject}-template", "Within-subject T1w template with "
                     "the atlas contours (colours as in the legend).", template, labels_template,
                     label_table=table, title="subject template + atlas")
    for s in sessions:
        ses = s.get("session")
        prefix = f"sub-{subject}" + (f"_ses-{ses}" if ses and ses != "single" else "")
        stats = None
        if _exists(s.get("stats")):
            stats = pd.read_csv(s["stats"], sep="\t", na_values="n/a", keep_default_na=False)
        side = s.get("sidecar") or {}
        flags, metrics = qc.session_flags(stats, side, min_voxels=min_roi_voxels)
        n_err = sum(f["severity"] == "error" for f in flags)
        summary.append(f"<li><a href='#{esc(prefix)}'>{esc(prefix)}</a>: "
                       + (f"<span class='warn'>{len(flags)} flag(s), {n_err} error(s)</span>"
                          if flags else "<span class='ok'>no flag</span>") + "</li>")
        body.append(f"<h2 id='{esc(prefix)}'>{esc(prefix)}</h2>")
        if s.get("mag") and (_exists(s.get("mask")) or _exists(s.get("brain_mask"))):
            outlines = []
            if _exists(s.get("brain_mask")) and s.get("brain_mask") != s.get("mask"):
                outlines.append((s["brain_mask"], "#ff4d4d", "brain mask"))
            if _exists(s.get("mask")):
                outlines.append((s["mask"], "#ffd21f", "final QSM mask (after background "
                                 "field removal erosion)"))
            figure_later(_mask_html, f"{prefix}-mask", "Root-sum-of-squares magnitude of all "
                         "echoes with the mask outlines.", s["mag"], outlines=outlines,
                         title=f"{prefix}: brain mask over magnitude")
        if _exists(s.get("t1w")) and _exists(s.get("labels_t1w")):
            figure_later(_ortho_html, f"{prefix}-t1w", "Session T1w with the atlas contours.",
                         s["t1w"], s["labels_t1w"], label_table=table,
                         title=f"{prefix}: T1w + atlas")
        if _exists(s.get("chi")):
            lo, hi = QSM_WINDOW_PPM
            labels = s["labels"] if _exists(s.get("labels")) else None
            figure_later(_ortho_html, f"{prefix}-qsm", f"Susceptibility map, window {lo:g} to "
                         f"{hi:g} ppm, with the atlas labels on the GRE grid.", s["chi"], labels,
                         label_table=table, vmin=lo, vmax=hi,
                         cbar_label="susceptibility χ (ppm)", title=f"{prefix}: QSM + atlas")
        body.append("<h3>Quality flags</h3>" + _flags_html(flags) + _metrics_html(metrics)
                    + _recon_metrics_html(side))
        if stats is not None:
            body.append("<h3>Deep gray matter susceptibility (ppb)</h3>"
                        + _table_html(stats, _STATS_COLUMNS))
        body.append("<details><summary>Reconstruction provenance (Chimap sidecar)</summary><pre>"
                    + esc(json.dumps(side, indent=2, default=str)) + "</pre></details>")
    for fig in extra_figures:
        if _exists(fig) and str(fig).endswith(".svg"):
            text = Path(fig).read_text()
            start = text.find("<svg")
            body.append(f"<figure>{text[start:]}</figure>" if start >= 0 else "")
    if _exists(change_tsv):
        df = pd.read_csv(change_tsv, sep="\t", na_values="n/a", keep_default_na=False)
        body.append("<h2 id='change'>Longitudinal change (ppb)</h2>")
        angle, flagged = _orientation(df)
        if flagged:
            summary.append(f"<li><a href='#change'>longitudinal change</a>: <span class='warn'>"
                           f"head orientation to B0 changed by {angle:.1f}°; changes of "
                           f"{esc(', '.join(flagged))} flagged</span></li>")
        if len(df.dropna(subset=["baseline_mean_ppb", "followup_mean_ppb"])):
            figure_later(_change_html, f"sub-{subject}-change", "Mean susceptibility per "
                         "structure (ppb) at both sessions (left) and their difference (right).",
                         df, title=f"sub-{subject}: baseline vs follow-up", label_table=table)
        body.append(_orientation_html(df))
        cols = dict(_CHANGE_COLUMNS)
        if "orientation_flagged" in df.columns:
            cols["orientation_flagged"] = "orientation flag"
        body.append(_table_html(df, cols)
                    + "<p class='meta'>All values in ppb; voxels (b)/(f): voxels at baseline "
                    "and follow-up.</p>")

    for (place, _), text in zip(jobs, _draw_all([draw for _, draw in jobs], n_threads)):
        body[place] = text

    head = [f"<h1>qsmprep report: sub-{esc(subject)}</h1>",
            f"<p class='meta'>qsmprep {esc(__version__)}; sessions: "
            f"{', '.join(esc(s.get('session') or 'n/a') for s in sessions)}"
            + (f"; atlas registration: {esc(registration_mode)}" if registration_mode else "")
            + "</p>"]
    if warnings:
        head.append("<h2>Warnings</h2><ul>" + "".join(f"<li class='warn'>{esc(w)}</li>"
                                                     for w in warnings) + "</ul>")
    head.append("<h2>Quality control summary</h2><ul>" + "".join(summary) + "</ul>"
                f"<p class='meta'>Checks: registration quality (<code>qc_*</code> columns of the "
                f"stats table), structures with fewer than {min_roi_voxels} voxels, "
                "reconstruction flags recorded in the Chimap sidecar (solver cut short, a map "
                "that leaves more than 10 times the field noise unexplained, non-finite voxels, "
                "...), and departures from the 2024 ISMRM QSM consensus "
                "recommendations.</p>")
    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>qsmprep sub-"
            f"{esc(subject)}</title><style>{_CSS}</style></head><body>"
            + "\n".join(head + body) + "</body></html>")
    report = out_dir / f"sub-{subject}.html"
    report.write_text(page, encoding="utf-8")
    return str(report), []
