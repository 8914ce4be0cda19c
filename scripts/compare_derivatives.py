#!/usr/bin/env python
"""Compare two qsmprep output folders (e.g. native vs container, SLURM array vs MultiProc).

    python scripts/compare_derivatives.py REFERENCE OTHER [--rtol 1e-5] [--atol-ppb 1e-3]

Checks that both folders hold the same derivative files and that their contents agree:

* NIfTI: same shape and affine; integer images (masks, labels) voxel-identical; float images
  (Chimap, fields) equal within float32 tolerance: ``|a - b| <= atol + rtol * |b|`` with
  ``atol = rtol * max|b|`` and identical NaN positions.
* TSV (ROI statistics, group tables): same columns and rows; numeric columns within
  ``atol_ppb + rtol * |b|``; text columns identical (``n/a`` is missing on both sides).
* JSON sidecars: same keys and values, numbers within ``rtol``, except keys that legitimately
  differ between execution environments (``--ignore-key``, default: DatasetLinks, Container,
  and any string value that is an absolute path of the run).
* Any other file: byte-identical.

Reports, figures and logs (``*.html``, ``figures/``, ``logs/``, ``*.svg``, ``*.png``) are not
compared. Prints one line per difference and a summary; exit status 1 when anything differs.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
from pathlib import Path

import numpy as np

SKIP_PATTERNS = ("*.html", "figures/*", "*/figures/*", "logs/*", "*.svg", "*.png", "*.log")
DEFAULT_IGNORE_KEYS = ("DatasetLinks", "Container", "DateTime", "Date", "ProcessingTime")


def _skipped(rel: str) -> bool:
    return any(fnmatch.fnmatch(rel, pat) for pat in SKIP_PATTERNS)


def list_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")
            if p.is_file() and not _skipped(p.relative_to(root).as_posix())}


def _is_nifti(rel: str) -> bool:
    return rel.endswith((".nii", ".nii.gz"))


def compare_nifti(a: Path, b: Path, rtol: float) -> tuple[bool, str]:
    import nibabel as nib

    ia, ib = nib.load(str(a)), nib.load(str(b))
    if ia.shape != ib.shape:
        return False, f"shape {ia.shape} != {ib.shape}"
    if not np.allclose(ia.affine, ib.affine, rtol=1e-6, atol=1e-6):
        return False, "affines differ"
    da, db = np.asanyarray(ia.dataobj), np.asanyarray(ib.dataobj)
    if np.issubdtype(da.dtype, np.integer) and np.issubdtype(db.dtype, np.integer):
        ndiff = int(np.count_nonzero(da != db))
        return ndiff == 0, f"{ndiff} of {da.size} voxels differ" if ndiff else "identical"
    da, db = da.astype(np.float64), db.astype(np.float64)
    na, nb = np.isnan(da), np.isnan(db)
    if not np.array_equal(na, nb):
        return False, "NaN positions differ"
    fa, fb = da[~na], db[~nb]
    if fa.size == 0 or np.array_equal(fa, fb):
        return True, "identical"
    scale = float(np.max(np.abs(fb))) or 1.0
    diff = np.abs(fa - fb)
    ok = bool(np.all(diff <= rtol * scale + rtol * np.abs(fb)))
    return ok, f"max |diff| {diff.max():.3g} (max |value| {scale:.3g})"


def _read_tsv(path: Path):
    import pandas as pd

    return pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False)


def compare_tsv(a: Path, b: Path, rtol: float, atol: float) -> tuple[bool, str]:
    import pandas as pd

    ta, tb = _read_tsv(a), _read_tsv(b)
    if list(ta.columns) != list(tb.columns):
        return False, f"columns {list(ta.columns)} != {list(tb.columns)}"
    if ta.shape != tb.shape:
        return False, f"shape {ta.shape} != {tb.shape}"
    worst = 0.0
    for col in ta.columns:
        ca, cb = ta[col], tb[col]
        if pd.api.types.is_numeric_dtype(ca) and pd.api.types.is_numeric_dtype(cb):
            va, vb = ca.to_numpy(float), cb.to_numpy(float)
            if not np.array_equal(np.isnan(va), np.isnan(vb)):
                return False, f"column {col}: missing values differ"
            m = ~np.isnan(va)
            d = np.abs(va[m] - vb[m])
            if d.size and np.any(d > atol + rtol * np.abs(vb[m])):
                i = int(np.argmax(d))
                return False, f"column {col}: max |diff| {d[i]:.4g} ({va[m][i]!r} vs {vb[m][i]!r})"
            worst = max(worst, float(d.max()) if d.size else 0.0)
        elif not ca.astype(str).equals(cb.astype(str)):
            return False, f"column {col}: text differs"
    return True, "identical" if worst == 0 else f"max |diff| {worst:.3g}"


def _json_diff(a, b, rtol: float, ignore: set[str], roots: tuple[str, ...], where: str = ""):
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key in ignore:
                continue
            if key not in a or key not in b:
                yield f"{where}/{key}: only in {'reference' if key in a else 'other'}"
                continue
            yield from _json_diff(a[key], b[key], rtol, ignore, roots, f"{where}/{key}")
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            yield f"{where}: lengths {len(a)} != {len(b)}"
        else:
            for i, (x, y) in enumerate(zip(a, b)):
                yield from _json_diff(x, y, rtol, ignore, roots, f"{where}[{i}]")
    elif isinstance(a, (int, float)) and isinstance(b, (int, float)) \
            and not isinstance(a, bool) and not isinstance(b, bool):
        if not np.isclose(a, b, rtol=rtol, atol=0):
            yield f"{where}: {a!r} != {b!r}"
    elif isinstance(a, str) and isinstance(b, str) and a.startswith("/") and b.startswith("/"):
        return  # absolute paths of the two runs (e.g. /data vs the host path)
    elif a != b:
        yield f"{where}: {a!r} != {b!r}"


def compare_json(a: Path, b: Path, rtol: float, ignore: set[str]) -> tuple[bool, str]:
    ja, jb = json.loads(a.read_text()), json.loads(b.read_text())
    diffs = list(_json_diff(ja, jb, rtol, ignore, ()))
    return (not diffs), ("identical" if not diffs else "; ".join(diffs[:3]))


def compare_transform(a: Path, b: Path, tol_mm: float = 1e-4) -> tuple[bool, str]:
    """ANTs transforms (.h5 embeds write metadata, so bytes differ): compare where they map points.

    Both transforms are applied to a 10x10x10 grid of points spanning a head-sized box; they
    agree when no point moves more than ``tol_mm`` apart.
    """
    if a.read_bytes() == b.read_bytes():
        return True, "identical"
    import ants
    import numpy as np
    import pandas as pd

    g = np.linspace(-80.0, 80.0, 10)
    pts = pd.DataFrame(np.array(np.meshgrid(g, g, g, indexing="ij")).reshape(3, -1).T, columns=["x", "y", "z"])
    pa = ants.apply_transforms_to_points(3, pts, [str(a)]).to_numpy()
    pb = ants.apply_transforms_to_points(3, pts, [str(b)]).to_numpy()
    dmax = float(np.abs(pa - pb).max())
    return dmax <= tol_mm, f"transforms map points within {dmax:.2e} mm"


def compare_trees(ref: Path, other: Path, rtol: float = 1e-5, atol_ppb: float = 1e-3,
                  ignore_keys=DEFAULT_IGNORE_KEYS) -> tuple[list[str], dict]:
    """Return (problems, summary) for two output folders."""
    ref, other = Path(ref), Path(other)
    fa, fb = list_files(ref), list_files(other)
    problems = [f"only in {ref}: {r}" for r in sorted(fa - fb)]
    problems += [f"only in {other}: {r}" for r in sorted(fb - fa)]
    summary = {"files": 0, "identical": 0, "within_tolerance": 0, "nifti": 0, "tsv": 0,
               "json": 0, "other": 0}
    for rel in sorted(fa & fb):
        a, b = ref / rel, other / rel
        summary["files"] += 1
        if _is_nifti(rel):
            kind = "nifti"
            ok, msg = compare_nifti(a, b, rtol)
        elif rel.endswith(".tsv"):
            kind = "tsv"
            ok, msg = compare_tsv(a, b, rtol, atol_ppb)
        elif rel.endswith(".json"):
            kind = "json"
            ok, msg = compare_json(a, b, rtol, set(ignore_keys))
        elif rel.endswith(("_xfm.h5", "_xfm.mat")):
            kind = "other"
            ok, msg = compare_transform(a, b)
        else:
            kind = "other"
            ok = a.read_bytes() == b.read_bytes()
            msg = "identical" if ok else "bytes differ"
        summary[kind] += 1
        if not ok:
            problems.append(f"{rel}: {msg}")
        elif msg == "identical":
            summary["identical"] += 1
        else:
            summary["within_tolerance"] += 1
    return problems, summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", type=Path)
    parser.add_argument("other", type=Path)
    parser.add_argument("--rtol", type=float, default=1e-5,
                        help="relative tolerance (float32 arithmetic; default 1e-5)")
    parser.add_argument("--atol-ppb", type=float, default=1e-3,
                        help="absolute tolerance for TSV numbers (default 1e-3, i.e. ppb)")
    parser.add_argument("--ignore-key", action="append", default=list(DEFAULT_IGNORE_KEYS),
                        help="JSON key not compared (repeatable)")
    args = parser.parse_args(argv)
    for d in (args.reference, args.other):
        if not d.is_dir():
            print(f"compare_derivatives: {d} is not a folder", file=sys.stderr)
            return 66
    problems, summary = compare_trees(args.reference, args.other, args.rtol, args.atol_ppb,
                                      args.ignore_key)
    for p in problems:
        print(f"DIFF {p}")
    print("compared {files} files ({nifti} NIfTI, {tsv} TSV, {json} JSON, {other} other): "
          "{identical} identical, {within_tolerance} within tolerance, ".format(**summary)
          + f"{len(problems)} differ")
    if summary["files"] == 0:
        print("compare_derivatives: nothing to compare", file=sys.stderr)
        return 1
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
