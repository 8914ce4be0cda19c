"""Group report: per-structure figures and one self-contained HTML page (``group/report.html``).

The page shows, for every statistic of :data:`qsmprep.group.analyses.ANALYSES`, the table that
the analysis' record renders (:meth:`qsmprep.group.analyses.Analysis.render`) and its caption,
and builds the methods paragraph from the clauses each record writes about what was run.

Figures are written as SVG under ``group/figures/`` and embedded in the page as base64 data URIs,
so the HTML can be e-mailed or archived on its own.  The methods paragraph is generated from
what was actually run (software versions, the reconstruction provenance recorded in the Chimap
sidecars, the tests and their corrections, what was skipped and why).

Every text that comes from the data (group, participant, session and structure labels,
reasons, file content) is escaped: the Jinja2 environment autoescapes, the few HTML fragments
built here escape their inputs with :func:`html.escape` and are passed as
:class:`markupsafe.Markup`, and figure text is escaped by Matplotlib's SVG writer (``$`` is
escaped too, so a label is never parsed as mathtext).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import platform
import re
from importlib import metadata
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import jinja2  # noqa: E402
import markupsafe  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..stats.rules import MIN_DF, MIN_PER_SAMPLE  # noqa: E402

TEMPLATE = Path(__file__).resolve().parents[1] / "data" / "templates" / "group_report.html"
#: above this many points per panel, points and lines are embedded as an image inside the SVG
#: (writing thousands of SVG markers dominated the group level's time at 1,000 participants)
_RASTER_ABOVE = 300
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]

REFERENCES = {
    "seed": "Hagemeier J, et al. Changes of deep gray matter magnetic susceptibility over 2 years in "
    "multiple sclerosis and healthy control brain. NeuroImage Clin 2018;18:1007-1016. "
    "doi:10.1016/j.nicl.2017.04.008",
    "pingouin": "Vallat R. Pingouin: statistics in Python. J Open Source Softw 2018;3(31):1026.",
    "statsmodels": "Seabold S, Perktold J. statsmodels: econometric and statistical modeling with "
    "Python. Proc 9th Python in Science Conf 2010.",
    "scipy": "Virtanen P, et al. SciPy 1.0: fundamental algorithms for scientific computing in "
    "Python. Nat Methods 2020;17:261-272.",
    "bh": "Benjamini Y, Hochberg Y. Controlling the false discovery rate: a practical and powerful "
    "approach to multiple testing. J R Stat Soc B 1995;57:289-300.",
    "ncp": "Steiger JH, Fouladi RT. Noncentrality interval estimation and the evaluation of "
    "statistical models. In: Harlow LL, et al., eds. What if there were no significance tests? "
    "Erlbaum; 1997:221-257.",
    "lmm": "Lindstrom MJ, Bates DM. Newton-Raphson and EM algorithms for linear mixed-effects "
    "models for repeated-measures data. J Am Stat Assoc 1988;83:1014-1022.",
    "bw": "Schluchter MD, Elashoff JT. Small-sample adjustments to tests with unbalanced repeated "
    "measures assuming several covariance structures. J Stat Comput Simul 1990;37:69-87.",
    "welch": "Welch BL. The generalization of 'Student's' problem when several different population "
    "variances are involved. Biometrika 1947;34:28-35.",
}

_STEP_NAMES = {
    "BrainMask": "brain mask",
    "EchoCombination": "multi-echo field estimation",
    "PhaseUnwrapping": "phase unwrapping",
    "BackgroundFieldRemoval": "background field removal",
    "DipoleInversion": "dipole inversion",
    "Reference": "susceptibility referencing",
}


# --------------------------------------------------------------------------------------------
# formatting helpers
def fmt_p(p):
    """P-value for a table cell: three decimals, ``&lt;0.001`` below 0.001.

    Parameters
    ----------
    p : float or None

    Returns
    -------
    str
        HTML text; ``n/a`` for None or a non-finite value.

    Examples
    --------
    >>> fmt_p(0.01234), fmt_p(0.0002), fmt_p(float("nan"))
    ('0.012', '&lt;0.001', 'n/a')
    """
    if p is None or not np.isfinite(p):
        return "n/a"
    if p < 0.001:
        return "&lt;0.001"
    return f"{p:.3f}"


def p_eq(p):
    """P-value for running text: ``= 0.012`` or ``&lt; 0.001``.

    Parameters
    ----------
    p : float or None

    Returns
    -------
    str
        HTML text (``= n/a`` when ``p`` is missing).
    """
    txt = fmt_p(p)
    return txt.replace("&lt;", "&lt; ") if txt.startswith("&lt;") else f"= {txt}"


def fmt_num(x, digits=1):
    """Number with ``digits`` decimals, ``n/a`` when missing or not finite.

    Parameters
    ----------
    x : float or None
    digits : int

    Returns
    -------
    str
    """
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "n/a"
    return f"{x:.{digits}f}"


def _version(pkg):
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "n/a"


def software_versions():
    """Versions of Python and of the libraries the statistics and figures use.

    Returns
    -------
    dict
        ``{"Python": ..., "numpy": ..., "scipy": ..., "pandas": ..., "pingouin": ...,
        "statsmodels": ..., "matplotlib": ...}`` (``n/a`` for a package not installed).
    """
    return {
        "Python": platform.python_version(),
        **{p: _version(p) for p in ("numpy", "scipy", "pandas", "pingouin", "statsmodels", "matplotlib")},
    }


def _group_colors(groups):
    return {g: PALETTE[i % len(PALETTE)] for i, g in enumerate(groups)}


def _svg_data_uri(path):
    return "data:image/svg+xml;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


# --------------------------------------------------------------------------------------------
# figures
def session_label(session):
    """Session label without the ``ses-`` prefix, as shown in figures and tables.

    Parameters
    ----------
    session : str

    Returns
    -------
    str
    """
    return str(session).removeprefix("ses-")


def _mpl(text):
    """Text for Matplotlib: ``$`` escaped so that labels are never parsed as mathtext."""
    return str(text).replace("$", r"\$")


def figure_stem(index, structure):
    """File-name-safe stem for a structure's figures (labels may hold any character).

    Parameters
    ----------
    index : int
        Position of the structure (keeps stems unique when labels differ only in symbols).
    structure : str
        Structure label.

    Returns
    -------
    str
        ``structure-<index, 2 digits><alphanumeric characters of the label, at most 40>``.

    Examples
    --------
    >>> figure_stem(3, "<b>thalamus</b>")
    'structure-03bthalamusb'
    """
    safe = re.sub(r"[^A-Za-z0-9]+", "", str(structure))[:40]
    return f"structure-{index:02d}{safe}"


def boxstrip_figure(sub, groups, sessions, structure, out_file, seed=0, ylabel="susceptibility (ppb)"):
    """Box plot per group x session with every participant as a jittered point (SVG).

    Parameters
    ----------
    sub : pandas.DataFrame
        Rows of the analysis table for one structure (``group``, ``session_id``, ``chi_ppb``).
    groups, sessions : list of str
        Level orders (x positions and colours).
    structure : str
        Title.
    out_file : str or Path
        Destination ``.svg``.
    seed : int
        Seed of the horizontal jitter (the figure is reproducible).
    ylabel : str
        Y-axis label (measure and unit).

    Returns
    -------
    str or Path
        ``out_file``.  Above a few hundred points per panel the points are embedded as an
        image inside the SVG.
    """
    colors = _group_colors(groups)
    rng = np.random.default_rng(seed)
    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    width = 0.8 / max(len(groups), 1)
    for gi, grp in enumerate(groups):
        for si, ses in enumerate(sessions):
            vals = sub.loc[(sub["group"] == grp) & (sub["session_id"] == ses), "chi_ppb"].dropna().to_numpy()
            pos = si + (gi - (len(groups) - 1) / 2) * width
            if vals.size:
                bp = ax.boxplot(
                    vals, positions=[pos], widths=width * 0.8, patch_artist=True, showfliers=False,
                    medianprops={"color": "black", "linewidth": 1.2},
                )
                for patch in bp["boxes"]:
                    patch.set_facecolor(colors[grp])
                    patch.set_alpha(0.25)
                    patch.set_edgecolor(colors[grp])
                ax.scatter(
                    pos + rng.uniform(-width * 0.25, width * 0.25, vals.size), vals, s=12,
                    color=colors[grp], alpha=0.85, linewidths=0, zorder=3, rasterized=vals.size > _RASTER_ABOVE,
                )
    ax.set_xticks(range(len(sessions)), [_mpl(session_label(s)) for s in sessions])
    ax.set_xlim(-0.6, len(sessions) - 0.4)
    ax.set_ylabel(_mpl(ylabel))
    ax.set_title(_mpl(f"{structure}: group x session"), fontsize=10)
    handles = [plt.Line2D([], [], marker="s", ls="", color=colors[g], label=_mpl(g)) for g in groups]
    ax.legend(handles=handles, fontsize=8, frameon=False, loc="best")
    ax.spines[["top", "right"]].set_visible(False)
    _save_svg(fig, out_file)
    return out_file


def spaghetti_figure(sub, groups, sessions, structure, out_file, ylabel="susceptibility (ppb)"):
    """Each participant's trajectory over sessions, one panel per group (SVG).

    Thin lines (one ``LineCollection`` per group) join a participant's sessions; participants
    with a single session are open markers; the group mean +/- SEM per session is drawn thick.

    Parameters
    ----------
    sub : pandas.DataFrame
        Rows of the analysis table for one structure.
    groups, sessions : list of str
        Panel order and x positions.
    structure : str
        Title.
    out_file : str or Path
        Destination ``.svg``.
    ylabel : str
        Y-axis label.

    Returns
    -------
    str or Path
        ``out_file``.
    """
    colors = _group_colors(groups)
    pos = {s: i for i, s in enumerate(sessions)}
    fig, axes = plt.subplots(1, len(groups), figsize=(2.3 * len(groups) + 0.6, 3.4), sharey=True, squeeze=False)
    for ax, grp in zip(axes[0], groups):
        gsub = sub[sub["group"] == grp]
        ok = gsub.dropna(subset=["chi_ppb"]).sort_values(["participant_id", "time_index"])
        x = ok["session_id"].map(pos).to_numpy(float)
        y = ok["chi_ppb"].to_numpy(float)
        pid = ok["participant_id"].to_numpy()
        same = pid[1:] == pid[:-1]
        segs = np.stack([np.column_stack([x[:-1], y[:-1]]), np.column_stack([x[1:], y[1:]])], axis=1)[same]
        dense = len(x) > _RASTER_ABOVE  # thousands of markers: embed them as an image in the SVG
        if len(segs):
            ax.add_collection(LineCollection(segs, colors=colors[grp], alpha=0.35, linewidths=0.8, rasterized=dense))
        counts = pd.Series(pid).map(pd.Series(pid).value_counts()).to_numpy() if len(pid) else np.array([])
        multi = counts >= 2
        if multi.any():
            ax.plot(x[multi], y[multi], ls="", marker="o", ms=2.5, color=colors[grp], alpha=0.35, rasterized=dense)
        if (~multi).any():
            ax.plot(x[~multi], y[~multi], ls="", marker="o", mfc="white", mec=colors[grp], ms=4, alpha=0.9,
                    rasterized=dense)
        stats = gsub.groupby("session_id")["chi_ppb"].agg(["mean", "sem"]).reindex(sessions)
        ax.errorbar(range(len(sessions)), stats["mean"], yerr=stats["sem"], color="black", lw=2, capsize=3, zorder=4)
        ax.set_xticks(range(len(sessions)), [_mpl(session_label(s)) for s in sessions])
        ax.set_xlim(-0.3, len(sessions) - 0.7)
        ax.set_title(_mpl(f"{grp} (n={gsub['participant_id'].nunique()})"), fontsize=9, color=colors[grp])
        ax.spines[["top", "right"]].set_visible(False)
    axes[0][0].set_ylabel(_mpl(ylabel))
    fig.suptitle(_mpl(f"{structure}: individual change"), fontsize=10)
    _save_svg(fig, out_file)
    return out_file


def _save_svg(fig, out_file):
    """``tight_layout``, then one SVG draw.

    ``Figure.tight_layout`` leaves a placeholder layout engine on the figure, and ``savefig``
    then draws the whole figure once more before the real draw (for a layout engine that
    does nothing).  Clearing the engine after the layout is computed drops that extra draw; the
    SVG is the same.
    """
    fig.tight_layout()
    fig.set_layout_engine(None)
    fig.savefig(out_file, format="svg")
    plt.close(fig)


def make_figures(table, groups, sessions, structures, fig_dir, ylabel="susceptibility (ppb)"):
    """Write the box/strip and the spaghetti figure of every structure.

    Parameters
    ----------
    table : pandas.DataFrame
        Analysis table (:func:`qsmprep.stats.analysis_table`).
    groups, sessions : list of str
        Level orders.
    structures : list of str
        Structures, in report order.
    fig_dir : str or Path
        Folder (created).
    ylabel : str
        Y-axis label (measure and unit).

    Returns
    -------
    list of dict
        ``{"structure", "kind" ("boxplot" or "spaghetti"), "path"}``.  File names come from
        :func:`figure_stem`, never from the raw label.
    """
    fig_dir = Path(fig_dir)
    fig_dir.mkdir(parents=True, exist_ok=True)
    plt.rcParams["svg.fonttype"] = "none"
    plt.rcParams["svg.hashsalt"] = "qsmprep"
    out = []
    for i, struct in enumerate(structures):
        sub = table[table["structure"] == struct]
        stem = figure_stem(i, struct)
        p1 = boxstrip_figure(sub, groups, sessions, struct, fig_dir / f"{stem}_boxplot.svg", ylabel=ylabel)
        out.append({"structure": struct, "kind": "boxplot", "path": p1})
        p2 = spaghetti_figure(sub, groups, sessions, struct, fig_dir / f"{stem}_spaghetti.svg", ylabel=ylabel)
        out.append({"structure": struct, "kind": "spaghetti", "path": p2})
    return out


# --------------------------------------------------------------------------------------------
# tables
def paper_table(desc, anova, groups, sessions, structures):
    """The report's main table, laid out as in a paper.

    Rows: structures; columns: mean +/- SD per group x session, then the ANOVA p-values (raw,
    FDR-adjusted in parentheses, bold when FDR-significant; the Greenhouse-Geisser p when it
    exists).

    Parameters
    ----------
    desc : pandas.DataFrame
        ``descriptives`` result.
    anova : pandas.DataFrame
        ``anova`` result.
    groups, sessions, structures : list of str
        Orders of columns and rows.

    Returns
    -------
    dict
        For the template: ``header_groups``, ``header_cells`` (with the largest n per cell),
        ``sources``, ``rows``.
    """
    sources = [s for s in ("group", "time", "group_x_time") if s in set(anova["source"])]
    n = desc.set_index(["structure", "group", "session_id"])["n"]
    header_cells = []
    for g in groups:
        for s in sessions:
            ns = n.xs((g, s), level=("group", "session_id")) if len(desc) else pd.Series(dtype=int)
            nmax = int(ns.max()) if len(ns) else 0
            header_cells.append({"group": g, "session": session_label(s), "n": nmax})
    rows = []
    idx = desc.set_index(["structure", "group", "session_id"])
    aidx = anova.set_index(["structure", "source"]) if len(anova) else None
    for struct in structures:
        cells = []
        for g in groups:
            for s in sessions:
                try:
                    r = idx.loc[(struct, g, s)]
                    cells.append(markupsafe.Markup(f"{fmt_num(r['mean_ppb'])} &plusmn; {fmt_num(r['sd_ppb'])}"))
                except KeyError:
                    cells.append("n/a")
        pcells = []
        for src in sources:
            if aidx is not None and (struct, src) in aidx.index:
                r = aidx.loc[(struct, src)]
                p = r["p_gg_corr"] if np.isfinite(r["p_gg_corr"]) else r["p"]
                txt = f"{fmt_p(p)} ({fmt_p(r['p_fdr'])})"
                pcells.append({"text": markupsafe.Markup(txt), "sig": bool(r["significant_fdr"])})
            else:
                pcells.append({"text": "n/a", "sig": False})
        rows.append({"structure": struct, "cells": cells, "pcells": pcells})
    return {
        "header_groups": [{"group": g, "span": len(sessions)} for g in groups],
        "header_cells": header_cells,
        "sources": [markupsafe.Markup({"group": "Group", "time": "Time", "group_x_time": "Group &times; time"}[s])
                    for s in sources],
        "rows": rows,
    }


def df_html(df, columns, formats, rename=None, highlight=None):
    """Plain HTML table of selected columns with per-column formatters.

    Parameters
    ----------
    df : pandas.DataFrame
    columns : list of str
        Columns shown, in order.
    formats : dict
        ``column -> callable(value) -> HTML text``; other floats get three decimals, other
        values are escaped text (``n/a`` when missing).
    rename : dict, optional
        ``column -> heading`` (escaped).
    highlight : str, optional
        Boolean column; rows where it is true get ``class="sig"``.

    Returns
    -------
    markupsafe.Markup
        ``<table class='data'>...</table>``.
    """
    rename = rename or {}
    head = "".join(f"<th>{html.escape(rename.get(c, c))}</th>" for c in columns)
    body = []
    for _, r in df.iterrows():
        cls = ' class="sig"' if highlight is not None and bool(r.get(highlight, False)) else ""
        tds = []
        for c in columns:
            v = r[c]
            f = formats.get(c)
            if f is not None:
                txt = f(v)
            elif isinstance(v, float):
                txt = fmt_num(v, 3)
            else:
                txt = html.escape(str(v)) if pd.notna(v) else "n/a"
            tds.append(f"<td>{txt}</td>")
        body.append(f"<tr{cls}>{''.join(tds)}</tr>")
    return markupsafe.Markup(f"<table class='data'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def _key_findings(anova, lmm, groups, sessions, unit="ppb"):
    """Plain-language list of the FDR-significant effects, with the LMM estimate (HTML
    fragments, every label escaped; returned as :class:`markupsafe.Markup`)."""
    esc = html.escape
    out = []
    if anova.empty:
        return out
    marg = lmm[lmm["term_type"] == "marginal_contrast"].set_index(["structure", "term"]) if len(lmm) else None
    for r in anova[anova["significant_fdr"]].itertuples():
        est = ""
        if marg is not None:
            if r.source == "group" and len(groups) >= 2:
                key = (r.structure, f"group[{groups[1]}] (marginal)")
                if key in marg.index and bool(marg.loc[key, "fit_ok"]) and np.isfinite(marg.loc[key, "ci_low"]):
                    m = marg.loc[key]
                    est = (f": {esc(groups[1])} &minus; {esc(groups[0])} = {m['estimate']:+.1f} {esc(unit)} "
                           f"[{m['ci_low']:.1f}, {m['ci_high']:.1f}] (LMM, averaged over sessions)")
            elif r.source == "time" and len(sessions) >= 2:
                key = (r.structure, f"time[{sessions[-1]}] (marginal)")
                if key in marg.index and bool(marg.loc[key, "fit_ok"]) and np.isfinite(marg.loc[key, "ci_low"]):
                    m = marg.loc[key]
                    est = (f": {esc(session_label(sessions[-1]))} &minus; {esc(session_label(sessions[0]))} = {m['estimate']:+.1f} "
                           f"{esc(unit)} [{m['ci_low']:.1f}, {m['ci_high']:.1f}] (LMM, averaged over groups)")
        label = {"group": "group effect", "time": "time effect", "group_x_time": "group &times; time interaction"}[r.source]
        out.append(markupsafe.Markup(f"<b>{html.escape(r.structure)}</b> &mdash; {label}, F({r.df1:.0f}, {r.df2:.0f}) = {r.f:.2f}, "
                   f"p {p_eq(r.p)}, p<sub>FDR</sub> {p_eq(r.p_fdr)}, &eta;<sup>2</sup><sub>p</sub> = {r.partial_eta_sq:.2f}{est}"))
    return out


def methods_text(context, table, results, analyses, design):
    """Methods paragraphs (HTML) generated from what was run.

    Parameters
    ----------
    context : dict
        Run description (see :func:`write_report`).
    table : pandas.DataFrame
        Analysis table (participants per group).
    results : dict
        ``name -> DataFrame`` of the analyses.
    analyses : sequence of Analysis
        Their records; each contributes the clauses of its ``methods``.
    design : Design
        Groups and sessions of the run.

    Returns
    -------
    paragraphs : list of markupsafe.Markup
    references : list of str
        Numbered in the order the paragraphs cite them.
    """
    groups, sessions = design.groups, design.sessions
    v = software_versions()
    n_by_group = table.groupby("group")["participant_id"].nunique().reindex(groups).fillna(0).astype(int)
    cohort = ", ".join(f"{n} {html.escape(g)}" for g, n in n_by_group.items())
    paras = []
    prov = context.get("provenance", {})
    recon = []
    for key, name in _STEP_NAMES.items():
        if key in prov:
            items = prov[key]
            txt = "; ".join(f"{html.escape(k)}" + (f" [{c} of {prov['n_files']} sessions]" if len(items) > 1 else "") for k, c in items.items())
            recon.append(f"{name}: {txt}")
    for key, items in prov.items():
        if key in _STEP_NAMES or key in ("n_files", "MagneticFieldStrength", "EchoTime", "_unreadable", "QualityFlags"):
            continue
        recon.append(f"{html.escape(key)}: " + "; ".join(html.escape(k) for k in items))
    acq = []
    for key in ("MagneticFieldStrength", "EchoTime"):
        if key in prov:
            acq.append("; ".join(html.escape(k) for k in prov[key]))
    if prov.get("n_files"):
        p = (f"Susceptibility maps were reconstructed with qsmprep {html.escape(context['version'])} "
             f"(provenance read from {prov['n_files']} Chimap sidecars"
             + (f"; acquisition {', '.join(acq)}" if acq else "") + "): " + "; ".join(recon) + ".")
        mixed = [name for key, name in _STEP_NAMES.items() if len(prov.get(key, {})) > 1]
        if mixed:
            p += f" <b>Warning: the cohort mixes different settings for {', '.join(mixed)}.</b>"
        paras.append(p)
    else:
        paras.append(f"No Chimap sidecar (*_Chimap.json) was found under the output directory; the "
                     f"reconstruction settings are not recorded here (qsmprep {html.escape(context['version'])}).")

    hemi = ("Left and right hemispheres were analysed as separate structures."
            if context["hemispheres"] else
            "Per participant and session, the mean susceptibility of each structure was the "
            "equal-weight average of its left and right label means (set to missing when either "
            "hemisphere was missing).")
    cov = (f" Covariates ({', '.join(html.escape(c) for c in context['covariates'])}; numeric ones mean-centred) "
           "entered the linear mixed model only." if context["covariates"] else "")
    paras.append(
        f"Group statistics were computed by qsmprep {html.escape(context['version'])} (Python {v['Python']}, "
        f"pandas {v['pandas']}, SciPy {v['scipy']}, pingouin {v['pingouin']}, statsmodels {v['statsmodels']}) "
        f"from {context['n_tables']} per-session ROI tables (atlas {html.escape(str(context.get('atlas', 'n/a')))}): {cohort} participants "
        f"(group column <code>{html.escape(context['group_column'])}</code>), sessions "
        f"{', '.join(html.escape(session_label(s)) for s in sessions)}, structures {', '.join(html.escape(s) for s in context['structures'])}. "
        + (f"Susceptibility is reported in ppb relative to the reference region of the reconstruction. {hemi}"
           if context.get("measure", "chi") == "chi" else
           f"The measure analysed is R2* ({html.escape(str(context.get('unit', '1/s')))}), the mean of the "
           f"per-voxel R2* (<code>r2star_mean</code>) of each structure. {hemi}")
    )
    tests = []
    for analysis in analyses:
        tests += analysis.methods(results[analysis.name], design)
    p = ("Per structure we ran " + "; ".join(tests) + "." if tests else "No inferential test could be run.")
    p += (" Confidence intervals (95%) of Cohen's d and d<sub>z</sub> are exact intervals obtained by inverting "
          "the noncentral t distribution [6]. P-values were corrected for the number of structures with the "
          f"Benjamini-Hochberg false discovery rate [5] separately for each test family (one effect or one "
          f"contrast across structures); q = {context['fdr_alpha']}." + cov
          + f" Minimum sample sizes: a test was run only with at least {MIN_PER_SAMPLE} participants (or "
          f"complete pairs) per group; a mixed-model term only with at least {MIN_DF} denominator degrees of "
          "freedom; below that nothing is tested and the report says so.")
    excl = context.get("exclusions") or []
    if excl or context.get("participant_label"):
        n_file = sum(1 for r in excl if r["source"] == "exclusion_file" and r["excluded"])
        n_qc = sum(1 for r in excl if r["source"] == "qc_flagged" and r["excluded"])
        n_kept = sum(1 for r in excl if r["source"] == "qc_flagged" and not r["excluded"])
        bits = []
        if context.get("participant_label"):
            bits.append(f"the analysis was restricted to {len(context['participant_label'])} selected participants")
        if n_file:
            bits.append(f"{n_file} participant(s)/session(s) were excluded by a user-supplied exclusion list")
        if n_qc:
            bits.append(f"{n_qc} session(s) were excluded because their registration quality was below the "
                        "documented threshold (qc_flagged)")
        if n_kept:
            bits.append(f"{n_kept} session(s) flagged by registration QC were kept on request")
        if bits:
            paras.append("Exclusions: " + "; ".join(bits) + " (listed in exclusions.tsv and below).")
    paras.append(p)
    paras.append("The analysis follows the design of the longitudinal QSM study that motivated qsmprep [1].")
    refs = [REFERENCES[k] for k in ("seed", "pingouin", "statsmodels", "scipy", "bh", "ncp", "lmm", "welch", "bw")]
    return [markupsafe.Markup(p) for p in paras], refs


def write_report(path, table, results, analyses, design, data_warnings, analysis_notes, figures, context):
    """Render ``report.html`` (self-contained: figures embedded; every data-derived text escaped).

    Parameters
    ----------
    path : str or Path
        Destination of the page.
    table : pandas.DataFrame
        Analysis table (:func:`qsmprep.stats.analysis_table`).
    results : dict
        ``name -> DataFrame`` of :func:`qsmprep.group.analyses.run_analyses`; must hold
        ``descriptives``, ``anova`` and ``lmm`` (main table and key findings).
    analyses : sequence of Analysis
        The records that produced ``results``, in report order.
    design : Design
        Groups, sessions, covariates, FDR level and unit of the run.
    data_warnings, analysis_notes : list of str
        Plain-text warnings (missing input, exclusions) and notes (skipped analyses).
    figures : list of dict
        Output of :func:`make_figures` (may be empty).
    context : dict
        Run description: ``version``, ``bids_dir``, ``group_column``, ``covariates``,
        ``structures``, ``hemispheres``, ``sessions``, ``groups``, ``fdr_alpha``, ``n_tables``,
        ``atlas``, ``provenance``, ``elapsed_s``, ``measure``, ``measure_name``, ``unit``,
        ``participant_reports``, ``exclusions``, ``keep_flagged``, ``participant_label``,
        ``fit_notes``.

    Returns
    -------
    Path
        ``path``.
    """
    groups, sessions, structures = context["groups"], context["sessions"], context["structures"]
    unit = context.get("unit", "ppb")
    desc, anova, lmm = results["descriptives"], results["anova"], results["lmm"]
    ptab = paper_table(desc, anova, groups, sessions, structures)
    paras, refs = methods_text(context, table, results, analyses, design)
    sections = [{"name": a.name, "title": a.title, "html": a.render(results[a.name], design),
                 "caption": a.caption(design) if a.caption else None} for a in analyses]
    fig_rows = []
    for struct in structures:
        imgs = [{"kind": f["kind"], "src": _svg_data_uri(f["path"])} for f in figures if f["structure"] == struct]
        if imgs:
            fig_rows.append({"structure": struct, "images": imgs})
    n_by_group = table.groupby("group")["participant_id"].nunique().reindex(groups).fillna(0).astype(int)
    prov = context.get("provenance", {})
    fit_notes = context.get("fit_notes", [])
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    tpl = env.from_string(TEMPLATE.read_text())
    page = tpl.render(
        title="qsmprep group report" + ("" if context.get("measure", "chi") == "chi" else f" ({context['measure_name']})"),
        context=context,
        unit=unit,
        measure_name=context.get("measure_name", "susceptibility"),
        date=_dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        cohort=[{"group": g, "n": int(n)} for g, n in n_by_group.items()],
        sessions=[session_label(s) for s in sessions],
        structures=structures,
        ptab=ptab,
        findings=_key_findings(anova, lmm, groups, sessions, unit),
        data_warnings=list(data_warnings),
        analysis_notes=list(analysis_notes),
        fit_notes=list(fit_notes),
        n_warnings=len(data_warnings) + len(analysis_notes) + len(fit_notes),
        exclusions=context.get("exclusions", []),
        quality_flags=prov.get("QualityFlags", []),
        reports=context.get("participant_reports", []),
        sections=sections,
        fig_rows=fig_rows,
        methods=paras,
        references=refs,
        versions=software_versions(),
        min_n=MIN_PER_SAMPLE,
    )
    Path(path).write_text(page, encoding="utf-8")
    return Path(path)
