#!/usr/bin/env python
"""Convert the QSMxT multi-echo GRE example data (OSF project gkemr) to a BIDS MEGRE dataset.

    python workflows/ci/convert_qsmxt.py SOURCE OUT_BIDS [--subject 1]

SOURCE is the downloaded folder or an archive in it (``.tar``, ``.tar.gz``, ``.tgz``, ``.zip``;
archives found inside the folder are unpacked too). The data are two acquisitions (runs) of the
same multi-echo GRE protocol in one person; they become ``ses-1`` and ``ses-2`` of one
participant, so qsmprep's longitudinal path has a real test-retest pair.

Two source layouts are understood (see workflows/ci/README.md for the assumptions):

1. dcm2niix output: one NIfTI per echo and part with a JSON sidecar carrying ``EchoTime``,
   ``EchoNumber``, ``ImageType`` (``P``/``PHASE`` for phase), ``SeriesNumber``,
   ``AcquisitionTime``, ``ProtocolName``/``SeriesDescription``. Files are classified by their
   sidecars, not their names: an acquisition is (ProtocolName, AcquisitionTime) (or, without
   times, the magnitude series paired with the next phase series), ordered by time.
   A T1w (protocol/series matching mprage/mp2rage/t1, preferring the MP2RAGE ``UNI`` image) is
   copied into both sessions: both runs come from the same visit.
2. BIDS already (QSMxT ``dicom-convert`` output): ``*_run-<n>_echo-<i>_part-<mag|phase>_MEGRE``
   files; ``run-<n>`` becomes ``ses-<n>``.

Phase images keep their stored values; their sidecar gets ``Units`` ``rad`` when the stored range
lies in [-pi, pi] and ``arbitrary`` otherwise (qsmprep rescales arbitrary phase).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tarfile
import tempfile
import zipfile
from collections import defaultdict
from pathlib import Path

import nibabel as nib
import numpy as np

T1_PATTERN = re.compile(r"mp2rage|mprage|t1w?(?![0-9])|_t1_", re.I)
NIFTI = (".nii.gz", ".nii")


class ConversionError(RuntimeError):
    pass


def _stem(path: Path) -> str:
    name = path.name
    for ext in NIFTI:
        if name.endswith(ext):
            return name[: -len(ext)]
    return path.stem


def unpack(source: Path, into: Path) -> Path:
    """Return a folder holding the source data, unpacking archives (also nested ones)."""
    def _extract(archive: Path, dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(dest)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                tf.extractall(dest, filter="data")
        else:
            raise ConversionError(f"{archive} is neither a folder nor a tar/zip archive")

    if source.is_file():
        root = into / "src"
        _extract(source, root)
    elif source.is_dir():
        root = source
    else:
        raise ConversionError(f"{source} does not exist")
    archives = [p for p in root.rglob("*")
                if p.is_file() and p.name.endswith((".zip", ".tar", ".tar.gz", ".tgz"))]
    if archives:
        staged = into / "staged"
        if root is source:
            shutil.copytree(source, staged, ignore=shutil.ignore_patterns(
                "*.zip", "*.tar", "*.tar.gz", "*.tgz"))
        else:
            staged = root
        for i, a in enumerate(archives):
            _extract(a, staged / f"_archive{i}")
        root = staged
    return root


def _image_type(meta: dict) -> list[str]:
    it = meta.get("ImageType", [])
    if isinstance(it, str):
        it = re.split(r"[\\/ ,]+", it)
    return [str(x).upper() for x in it]


def _is_phase(meta: dict, path: Path) -> bool:
    it = _image_type(meta)
    if "P" in it or "PHASE" in it:
        return True
    if "M" in it or "MAGNITUDE" in it:
        return False
    return bool(re.search(r"_ph$", _stem(path)))


def _protocol(meta: dict) -> str:
    return str(meta.get("ProtocolName") or meta.get("SeriesDescription") or "")


def _phase_units(path: Path) -> str:
    data = np.asanyarray(nib.load(str(path)).dataobj)
    lo, hi = float(np.nanmin(data)), float(np.nanmax(data))
    return "rad" if lo >= -np.pi - 1e-3 and hi <= np.pi + 1e-3 else "arbitrary"


def _write(src: Path, meta: dict, dest_stem: Path) -> None:
    dest_stem.parent.mkdir(parents=True, exist_ok=True)
    img = nib.load(str(src))
    nib.save(img, str(dest_stem) + ".nii.gz")
    Path(str(dest_stem) + ".json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def collect_dcm2niix(root: Path) -> tuple[list[dict], list[tuple[Path, dict]]]:
    """Return (acquisitions, t1w candidates) from dcm2niix NIfTI+JSON pairs under root."""
    gre, t1 = [], []
    for nii in sorted(p for p in root.rglob("*") if p.name.endswith(NIFTI)):
        side = nii.with_name(_stem(nii) + ".json")
        if not side.is_file():
            continue
        meta = json.loads(side.read_text())
        proto = _protocol(meta) + " " + str(meta.get("SeriesDescription", ""))
        if T1_PATTERN.search(proto) and not re.search(r"qsm|gre|swi|t2s", proto, re.I):
            t1.append((nii, meta))
        elif "EchoTime" in meta:
            gre.append((nii, meta))
    if not gre:
        raise ConversionError(f"no GRE NIfTI + JSON pairs with EchoTime found under {root}")

    # group by acquisition: (protocol, acquisition time), else pair series numbers
    groups: dict[tuple, list] = defaultdict(list)
    if all("AcquisitionTime" in m for _, m in gre):
        for nii, m in gre:
            groups[(_protocol(m), str(m["AcquisitionTime"]))].append((nii, m))
        order = sorted(groups, key=lambda k: (k[1], k[0]))
    else:
        mags = sorted({m.get("SeriesNumber") for n, m in gre if not _is_phase(m, n)})
        for nii, m in gre:
            sn = m.get("SeriesNumber")
            if _is_phase(m, nii):
                cand = [s for s in mags if s is not None and sn is not None and s < sn]
                sn = max(cand) if cand else sn
            groups[(sn,)].append((nii, m))
        order = sorted(groups, key=lambda k: (k[0] is None, k[0]))

    acquisitions = []
    for key in order:
        echoes: dict[int, dict[str, tuple[Path, dict]]] = defaultdict(dict)
        for nii, m in groups[key]:
            if np.asanyarray(nib.load(str(nii)).dataobj).ndim != 3:
                raise ConversionError(f"{nii}: expected one 3-D volume per echo")
            echo = int(m.get("EchoNumber") or 0)
            part = "phase" if _is_phase(m, nii) else "mag"
            if part in echoes[echo]:
                raise ConversionError(f"two {part} images for echo {echo} in acquisition {key}")
            echoes[echo][part] = (nii, m)
        if 0 in echoes:  # no EchoNumber: order by EchoTime
            flat = [(m["EchoTime"], part, nii, m) for e in echoes.values()
                    for part, (nii, m) in e.items()]
            echoes = defaultdict(dict)
            tes = sorted({round(float(t), 6) for t, *_ in flat})
            for t, part, nii, m in flat:
                echoes[tes.index(round(float(t), 6)) + 1][part] = (nii, m)
        incomplete = [e for e, parts in echoes.items() if set(parts) != {"mag", "phase"}]
        if incomplete:
            raise ConversionError(f"acquisition {key}: echoes {sorted(incomplete)} lack "
                                  "a magnitude or a phase image")
        acquisitions.append(dict(sorted(echoes.items())))
    return acquisitions, t1


def _pick_t1(t1: list[tuple[Path, dict]]):
    if not t1:
        return None

    def rank(item):
        desc = (_protocol(item[1]) + " " + str(item[1].get("SeriesDescription", ""))).upper()
        return (0 if "UNI" in desc and "DEN" in desc else 1 if "UNI" in desc else 2, str(item[0]))
    return sorted(t1, key=rank)[0]


def convert(source: Path, out: Path, subject: str = "1") -> dict:
    """Convert; return a summary {sessions: {ses: n_echoes}, t1w: bool, layout: str}."""
    out = Path(out)
    with tempfile.TemporaryDirectory() as tmp:
        root = unpack(Path(source), Path(tmp))
        bids_files = sorted(p for p in root.rglob("*_MEGRE.nii*"))
        sessions: dict[str, int] = {}
        has_t1 = False
        if bids_files:
            layout = "bids"
            for nii in bids_files:
                stem = _stem(nii)
                ent = dict(re.findall(r"([a-zA-Z]+)-([a-zA-Z0-9]+)", stem))
                ses = ent.get("run") or ent.get("ses") or "1"
                side = nii.with_name(stem + ".json")
                meta = json.loads(side.read_text()) if side.is_file() else {}
                if ent.get("part") == "phase" and "Units" not in meta:
                    meta["Units"] = _phase_units(nii)
                name = f"sub-{subject}_ses-{ses}_echo-{ent['echo']}_part-{ent['part']}_MEGRE"
                _write(nii, meta, out / f"sub-{subject}" / f"ses-{ses}" / "anat" / name)
                sessions[ses] = max(sessions.get(ses, 0), int(ent["echo"]))
            t1s = sorted(p for p in root.rglob("*_T1w.nii*"))
            for ses in sessions:
                if t1s:
                    side = t1s[0].with_name(_stem(t1s[0]) + ".json")
                    meta = json.loads(side.read_text()) if side.is_file() else {}
                    _write(t1s[0], meta, out / f"sub-{subject}" / f"ses-{ses}" / "anat"
                           / f"sub-{subject}_ses-{ses}_T1w")
                    has_t1 = True
        else:
            layout = "dcm2niix"
            acquisitions, t1 = collect_dcm2niix(root)
            t1w = _pick_t1(t1)
            for i, echoes in enumerate(acquisitions, start=1):
                ses = str(i)
                anat = out / f"sub-{subject}" / f"ses-{ses}" / "anat"
                for echo, parts in echoes.items():
                    for part, (nii, meta) in parts.items():
                        meta = dict(meta)
                        if part == "phase":
                            meta["Units"] = _phase_units(nii)
                        _write(nii, meta, anat / f"sub-{subject}_ses-{ses}_echo-{echo}_part-{part}_MEGRE")
                sessions[ses] = len(echoes)
                if t1w is not None:
                    _write(t1w[0], t1w[1], anat / f"sub-{subject}_ses-{ses}_T1w")
                    has_t1 = True
        if len(sessions) < 1:
            raise ConversionError("no multi-echo acquisition found")

    (out / "dataset_description.json").write_text(json.dumps({
        "Name": "QSMxT multi-echo GRE example data (OSF gkemr), two runs as two sessions",
        "BIDSVersion": "1.9.0",
        "DatasetType": "raw",
        "GeneratedBy": [{"Name": "qsmprep workflows/ci/convert_qsmxt.py"}],
        "SourceDatasets": [{"URL": "https://osf.io/gkemr/"}],
    }, indent=2) + "\n")
    (out / "participants.tsv").write_text(f"participant_id\tgroup\nsub-{subject}\tn/a\n")
    (out / f"sub-{subject}" / f"sub-{subject}_sessions.tsv").write_text(
        "session_id\tacq_order\n" + "".join(f"ses-{s}\t{i}\n" for i, s in
                                              enumerate(sorted(sessions), start=1)))
    (out / "README").write_text(
        "QSMxT example data converted by qsmprep's workflows/ci/convert_qsmxt.py: two runs of the "
        "same multi-echo GRE protocol in one person, stored as ses-1 and ses-2.\n")
    return {"sessions": sessions, "t1w": has_t1, "layout": layout}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="downloaded folder or archive")
    parser.add_argument("out", type=Path, help="BIDS output folder (created)")
    parser.add_argument("--subject", default="1", help="participant label (default 1)")
    args = parser.parse_args(argv)
    try:
        summary = convert(args.source, args.out, args.subject)
    except ConversionError as exc:
        print(f"convert_qsmxt: error: {exc}", file=sys.stderr)
        return 65
    print(f"convert_qsmxt: {summary['layout']} layout -> {args.out}: "
          + ", ".join(f"ses-{s}: {n} echoes" for s, n in sorted(summary["sessions"].items()))
          + (", T1w" if summary["t1w"] else ", no T1w"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
