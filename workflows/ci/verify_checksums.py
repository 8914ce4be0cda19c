#!/usr/bin/env python
"""Verify (or record) SHA-256 checksums of the CI datasets.

    python workflows/ci/verify_checksums.py DATA_ROOT CHECKSUM_FILE [--prefix ds000221/] [--record]

CHECKSUM_FILE uses ``sha256sum`` format (``<hex>  <path relative to DATA_ROOT>``; ``#`` comments).
Verification fails when a listed file is missing or differs. Files under ``--prefix`` that are
not listed are reported as unpinned (a warning, so a first CI run can show their hashes);
``--record`` appends them to the file so they can be committed.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_checksums(path: Path) -> dict[str, str]:
    table = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        digest, rel = line.split(maxsplit=1)
        table[rel.lstrip("*")] = digest.lower()
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("checksums", type=Path)
    parser.add_argument("--prefix", default="", help="only files under this relative folder")
    parser.add_argument("--record", action="store_true", help="append unpinned files' hashes")
    args = parser.parse_args(argv)
    table = read_checksums(args.checksums) if args.checksums.exists() else {}
    bad = 0
    for rel, digest in sorted(table.items()):
        if not rel.startswith(args.prefix):
            continue
        f = args.root / rel
        if not f.is_file():
            print(f"verify_checksums: MISSING {rel}", file=sys.stderr)
            bad += 1
        elif sha256(f) != digest:
            print(f"verify_checksums: MISMATCH {rel}", file=sys.stderr)
            bad += 1
    base = args.root / args.prefix if args.prefix else args.root
    new = []
    for f in sorted(p for p in base.rglob("*") if p.is_file()):
        rel = f.relative_to(args.root).as_posix()
        if rel not in table:
            new.append(f"{sha256(f)}  {rel}")
    for line in new:
        print(f"verify_checksums: unpinned {line}", file=sys.stderr)
    if args.record and new:
        with open(args.checksums, "a") as fh:
            fh.write("\n".join(new) + "\n")
    pinned = sum(r.startswith(args.prefix) for r in table)
    print(f"verify_checksums: {pinned} pinned files checked, {bad} bad, {len(new)} unpinned")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
