"""QC figures ("reportlets") for the participant report, drawn with matplotlib only.

* :func:`ortho_figure`: three orthogonal slices of an image (T1w, template, magnitude or QSM)
  with label contours, a legend naming each structure in its contour colour, orientation marks
  (L/R, A/P, S/I) on every panel and, optionally, a colour bar with its unit;
* :func:`plot_label_contours`: the same, written to an SVG or PNG file;
* :func:`plot_change`: per-structure baseline vs follow-up mean susceptibility;
* :func:`figure_svg`: a figure as inline ``<svg>`` markup, for a self-contained HTML page.

Images are shown in RAS orientation (``nibabel.as_closest_canonical``), neurological convention
(the subject's left on the left of axial and coronal panels), with each panel's aspect ratio set
from the voxel size. Labels on another grid are resampled onto the image grid through the
affines (nearest neighbour), once per figure.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import threading
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nb  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

_FALLBACK_COLOURS = plt.get_cmap("tab20").colors

#: (slicing axis in RAS, horizontal axis, vertical axis, marks: left, right, top, bottom)
_PANELS = (
    (0, 1, 2, ("P", "A", "S", "I")),  # sagittal
    (1, 0, 2, ("L", "R", "S", "I")),  # coronal
    (2, 0, 1, ("L", "R", "A", "P")),  # axial
)


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


def _names(label_table: pd.DataFrame | None, indices) -> dict:
    names = {}
    if label_table is not None and "name" in label_table.columns:
        names = {int(r["index"]): str(r["name"]) for r in label_table.to_dict("records")}
    return {int(i): names.get(int(i), f"label {int(i)}") for i in indices}


def dgm_cut_coords(labels_file) -> tuple:
    """World coordinates (mm) for three orthogonal cuts through the labelled structures.

    y and z: centre of mass of all labels; x: centre of mass of the labels on the left of it
    (a sagittal cut through one hemisphere's nuclei rather than the midline).

    Parameters
    ----------
    labels_file : str or Path
        A label image (3-D, or 4-D: its first volume).

    Returns
    -------
    tuple of float
        ``(x, y, z)`` in mm (RAS); the volume centre when no voxel is labelled.
    """
    img = nb.load(str(labels_file))
    lab = np.asarray(img.dataobj)
    if lab.ndim == 4:
        lab = lab[..., 0]
    return _cut_world(lab, img.affine)


def _cut_world(lab, affine) -> tuple:
    from ..qsm._fftgrid import mask_bounds

    pos = np.asarray(lab) > 0
    bounds = mask_bounds(pos)
    if bounds is None:
        ijk = np.empty((0, pos.ndim), np.intp)
    else:  # the same voxels in the same order as np.argwhere(pos), found in their box
        box = tuple(slice(lo, hi + 1) for lo, hi in zip(*bounds))
        ijk = np.argwhere(pos[box]) + np.asarray(bounds[0], np.intp)
    if ijk.size == 0:
        centre = (np.array(lab.shape) - 1) / 2.0
        return tuple(float(v) for v in nb.affines.apply_affine(affine, centre))
    xyz = nb.affines.apply_affine(affine, ijk)
    centre = xyz.mean(axis=0)
    left = xyz[xyz[:, 0] < centre[0]]  # RAS+: smaller x is left
    x = left[:, 0].mean() if len(left) else centre[0]
    return (float(x), float(centre[1]), float(centre[2]))


def _ras(img, dtype):
    img = nb.as_closest_canonical(img)
    data = np.asarray(img.dataobj)
    if data.ndim == 4:
        data = data[..., 0]
    return np.asarray(data, dtype=dtype), img.affine, tuple(float(z) for z in img.header.get_zooms()[:3])


#: images read during :func:`image_cache` (None: no caching)
_CACHE: dict | None = None


@contextlib.contextmanager
def image_cache():
    """Read each image file once while the block runs (the participant report draws the same
    labels, masks and maps in several figures); the arrays are dropped when it ends.

    The cache is keyed by real path, size, modification time and inode, so a file rewritten
    in the block is read again, and its arrays are read-only, so no figure can change what
    the next one gets.
    """
    global _CACHE
    previous, _CACHE = _CACHE, {}
    try:
        yield
    finally:
        _CACHE = previous


def _ras_file(path: str, dtype):
    from ..interfaces._io import open_image  # ISA-L decompression of .nii.gz, one call

    if _CACHE is None:
        return _ras(open_image(path), dtype)
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ino, np.dtype(dtype).str)
    if key not in _CACHE:
        data, affine, zooms = _ras(open_image(path), dtype)
        data.setflags(write=False)
        affine.setflags(write=False)
        _CACHE[key] = (data, affine, zooms)
    return _CACHE[key]


def _load_ras(path, dtype=np.float32):
    if isinstance(path, nb.spatialimages.SpatialImage):
        return _ras(path, dtype)
    return _ras_file(str(path), dtype)


def _on_grid(path, shape, affine, order=0):
    """Image ``path`` (labels or mask) on the grid ``shape``/``affine`` (RAS image grid)."""
    from ..atlas import resample_to_grid

    data, aff, _ = _load_ras(path, dtype=np.float32)
    if data.shape == tuple(shape) and np.allclose(aff, affine, atol=1e-3):
        return data
    return resample_to_grid(data, aff, shape, affine, order=order)


def _plane(vol, axis, index):
    """The plane ``index`` of ``vol`` across ``axis``, as the C-ordered copy ``np.take`` returns
    (which copies element by element when ``axis`` is not the first: ~70 ms per plane of a
    1 mm head, against well under 1 ms for this strided copy)."""
    return np.ascontiguousarray(vol[(slice(None),) * axis + (int(index),)])


def ortho_figure(anat, labels=None, *, label_table=None, title=None, vmin=None, vmax=None,
                 cmap="gray", cbar_label=None, outlines=(), cut_from=None, legend=True):
    """Three orthogonal slices of an image with label contours, a legend and orientation marks.

    Parameters
    ----------
    anat : str, Path or nibabel image
        The image shown (RAS-reoriented; the first volume of a 4-D image).
    labels : str or Path, optional
        A label image (any grid in the same world space, resampled nearest-neighbour) drawn
        as one contour per label.
    label_table : pandas.DataFrame, optional
        ``index``, ``name``, ``color`` of the labels: contour colours and legend names
        (a fallback palette and ``label <n>`` otherwise).
    title : str, optional
        Figure title.
    vmin, vmax : float, optional
        Display range (default: 1st and 99.5th percentiles of the non-zero finite voxels).
    cmap : str
        Matplotlib colour map of the image.
    cbar_label : str, optional
        Show a colour bar with this text (give the unit, e.g. "susceptibility (ppm)").
    outlines : iterable of (path, colour, str)
        Binary masks drawn as contours (e.g. brain masks) with their legend text.
    cut_from : str or Path, optional
        Image whose non-zero voxels choose the slices (default: the labels, else the first
        outline, else the volume centre).
    legend : bool
        Draw the legend of labels and outlines.

    Returns
    -------
    matplotlib.figure.Figure
        Sagittal, coronal and axial panels on black, neurological convention, each with its
        L/R, A/P, S/I marks; close it (or pass it to :func:`figure_svg`) when done.
    """
    data, aff, zooms = _load_ras(anat)
    lab = None
    if labels is not None:
        lab = np.rint(_on_grid(labels, data.shape, aff, order=0)).astype(np.int32)
    masks = [(_on_grid(f, data.shape, aff, order=0) > 0, c, t) for f, c, t in outlines if f]
    if cut_from is not None:
        sel = _on_grid(cut_from, data.shape, aff, order=0)
    elif lab is not None and lab.any():
        sel = lab
    elif masks:
        sel = masks[0][0]
    else:
        sel = np.zeros(data.shape, np.int8)
    world = _cut_world(np.asarray(sel), aff)
    ijk = np.rint(nb.affines.apply_affine(np.linalg.inv(aff), world)).astype(int)
    ijk = np.clip(ijk, 0, np.array(data.shape) - 1)
    if vmin is None or vmax is None:
        finite = data[np.isfinite(data) & (data != 0)]
        if finite.size:
            # both percentiles from one partition; q in the data's dtype gives the values of
            # two scalar calls (float32 images: the q of a scalar call is weakly typed)
            lo, hi = np.percentile(finite, np.asarray([1.0, 99.5], dtype=finite.dtype))
        else:
            lo, hi = 0.0, 1.0
        vmin = float(lo) if vmin is None else vmin
        vmax = float(hi) if vmax is None else vmax
    present = sorted(int(v) for v in np.unique(lab[lab > 0])) if lab is not None else []
    colours = _colour_map(label_table, present)
    names = _names(label_table, present)
    widths = [data.shape[h] * zooms[h] for _, h, _, _ in _PANELS]
    # a figure outside pyplot's global figure list: figures can be drawn in threads
    fig = Figure(figsize=(10.5, 3.9), facecolor="black")
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": widths, "wspace": 0.04})
    im = None
    for ax, (axis, h, v, marks) in zip(axes, _PANELS):
        sl = _plane(data, axis, ijk[axis])
        # remaining axes keep their order (h before v): rows = v, columns = h after transpose
        show = sl.T[::-1]
        im = ax.imshow(np.nan_to_num(show), cmap=cmap, vmin=vmin, vmax=vmax,
                       interpolation="nearest", aspect=zooms[v] / zooms[h])
        if lab is not None:
            lsl = _plane(lab, axis, ijk[axis]).T[::-1]
            for idx in present:
                if (lsl == idx).any():
                    ax.contour(lsl == idx, levels=[0.5], colors=[colours[idx]], linewidths=0.9)
        for m, colour, _ in masks:
            msl = _plane(m, axis, ijk[axis]).T[::-1]
            if msl.any():
                ax.contour(msl, levels=[0.5], colors=[colour], linewidths=1.0)
        style = {"color": "white", "fontsize": 9, "fontweight": "bold", "transform": ax.transAxes}
        ax.text(0.02, 0.5, marks[0], ha="left", va="center", **style)
        ax.text(0.98, 0.5, marks[1], ha="right", va="center", **style)
        ax.text(0.5, 0.98, marks[2], ha="center", va="top", **style)
        ax.text(0.5, 0.02, marks[3], ha="center", va="bottom", **style)
        coord = world[axis]
        ax.set_title(f"{'xyz'[axis]} = {coord:.0f} mm", color="#bbbbbb", fontsize=8, pad=2)
        ax.set_axis_off()
    if cbar_label and im is not None:
        cbar = fig.colorbar(im, ax=list(axes), fraction=0.025, pad=0.01)
        cbar.set_label(cbar_label, color="white", fontsize=9)
        cbar.ax.yaxis.set_tick_params(color="white", labelcolor="white", labelsize=8)
    handles = []
    if legend:
        handles += [Line2D([], [], color=colours[i], lw=2.5, label=names[i]) for i in present]
        handles += [Line2D([], [], color=c, lw=2.5, label=t) for _, c, t in masks]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=7.5,
                   frameon=False, labelcolor="white", bbox_to_anchor=(0.5, -0.02 - 0.045 * (
                       (len(handles) - 1) // 6)))
    if title:
        fig.suptitle(title, color="white", fontsize=10)
    return fig


#: held while a figure is written as SVG (:func:`figure_svg` sets global rcParams)
_SVG_LOCK = threading.Lock()


def figure_svg(fig, salt: str = "qsmprep") -> str:
    """A figure as inline ``<svg>`` markup for a self-contained HTML page; closes the figure.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure (closed afterwards).
    salt : str
        Salt of the ids matplotlib generates (clip paths, glyphs), and prefix of every id of
        the SVG (``<salt>-<id>``, characters other than letters, digits, ``_`` and ``-``
        replaced by ``_``): give each figure of a page its own, so that two inline SVGs never
        share an id.

    Returns
    -------
    str
        The ``<svg>`` element (no XML prolog, no metadata), text kept as text.
    """
    buf = io.StringIO()
    # rcParams are global: one figure at a time is written under its own salt
    with _SVG_LOCK, matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        fig.savefig(buf, format="svg", facecolor=fig.get_facecolor(), bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    start = text.find("<svg")
    text = text[start:] if start >= 0 else text
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)
    return _prefix_ids(text, salt)


def _prefix_ids(svg: str, salt: str) -> str:
    """Prefix every ``id`` of an SVG, and every reference to one, with the figure's salt.

    matplotlib names its groups ``figure_1``, ``axes_1``, ``patch_1``, ... in every figure
    (``svg.hashsalt`` only salts the hashed ids of clip paths, images and markers), so two
    figures inlined in one HTML page would share ids, which HTML forbids. References
    (``url(#id)``, ``href="#id"``) point into the same figure and get the same prefix.
    """
    token = re.sub(r"[^A-Za-z0-9_-]", "_", salt) or "fig"
    return re.sub(r'(\sid="|url\(#|href="#)(?=[^")])', lambda m: f"{m.group(1)}{token}-", svg)


def plot_label_contours(
    anat_file,
    labels_file,
    out_file,
    label_table: pd.DataFrame | None = None,
    title: str | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = "gray",
    cbar_label: str | None = None,
):
    """Label contours over an image in three orthogonal slices through the DGM, to a file.

    Parameters
    ----------
    anat_file : str or Path
        The image shown.
    labels_file : str or Path
        Label image; may be on another grid (resampled through the affines).
    out_file : str or Path
        Output file; SVG or PNG from its extension (folders created).
    label_table : pandas.DataFrame, optional
        Label names and colours (see :func:`ortho_figure`).
    title : str, optional
        Figure title.
    vmin, vmax : float, optional
        Display range; for a QSM map e.g. ``vmin=-0.1, vmax=0.2``.
    cmap : str
        Matplotlib colour map.
    cbar_label : str, optional
        Colour bar text with the unit, e.g. ``"susceptibility (ppm)"``.

    Returns
    -------
    str
        Absolute path of the file written.
    """
    fig = ortho_figure(anat_file, labels_file, label_table=label_table, title=title, vmin=vmin,
                       vmax=vmax, cmap=cmap, cbar_label=cbar_label)
    Path(out_file).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(out_file), dpi=110, facecolor="black", bbox_inches="tight")
    plt.close(fig)
    return str(Path(out_file).resolve())


def plot_change(
    change: pd.DataFrame,
    out_file,
    title: str | None = None,
    label_table: pd.DataFrame | None = None,
):
    """Baseline vs follow-up mean susceptibility (ppb) per label, from a change table.

    Left: one line per label from baseline to follow-up; right: the change per label (bars).
    Labels without both means are left out.

    Parameters
    ----------
    change : pandas.DataFrame
        A :func:`qsmprep.roi.longitudinal_change` table (``index``, ``name``,
        ``baseline_session``, ``followup_session``, ``baseline_mean_ppb``,
        ``followup_mean_ppb``, ``change_mean_ppb``).
    out_file : str, Path or None
        Output file (format from the extension); None to get the figure instead.
    title : str, optional
        Figure title.
    label_table : pandas.DataFrame, optional
        The atlas table: colours and, with an ``abbreviation`` column, the line labels.

    Returns
    -------
    str or matplotlib.figure.Figure
        Absolute path of the file written, or the open figure when ``out_file`` is None.
    """
    df = change.dropna(subset=["baseline_mean_ppb", "followup_mean_ppb"]).reset_index(drop=True)
    fig = Figure(figsize=(10, 4.2))  # outside pyplot: may be drawn in a thread
    ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.4]})
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
    if out_file is None:
        return fig
    Path(out_file).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(out_file), dpi=110)
    plt.close(fig)
    return str(Path(out_file).resolve())
