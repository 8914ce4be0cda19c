#!/usr/bin/env python
"""Download the QSMxT multi-echo example data from OSF project ``gkemr``.

    python workflows/ci/fetch_qsmxt.py DEST_DIR [--project gkemr]

Lists every file of the project's OSF storage through the public OSF API (v2), downloads each
with retries (exponential back-off), checks it against the SHA-256 that OSF itself reports and,
when pinned, against ``workflows/ci/checksums.sha256``. Standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
import urllib.request
from pathlib import Path

API = "https://api.osf.io/v2/nodes/{project}/files/osfstorage/"


def _get(url: str, retries: int = 5, timeout: float = 120.0) -> bytes:
    for attempt in range(1, retries + 1):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                return resp.read()
        except OSError as exc:  # URLError, HTTPError, timeouts
            if attempt == retries:
                raise RuntimeError(f"GET {url} failed {retries} times: {exc}") from exc
            wait = 5 * 2 ** (attempt - 1)
            print(f"fetch_qsmxt: {exc}; retry {attempt}/{retries - 1} in {wait} s", file=sys.stderr)
            time.sleep(wait)
    raise AssertionError("unreachable")


def list_files(url: str, prefix: str = ""):
    """Yield (relative path, download url, sha256 or None, size) for every file, recursively."""
    while url:
        page = json.loads(_get(url))
        for item in page["data"]:
            attr = item["attributes"]
            rel = prefix + attr["name"]
            if attr["kind"] == "folder":
                yield from list_files(item["relationships"]["files"]["links"]["related"]["href"],
                                      rel + "/")
            else:
                hashes = (attr.get("extra") or {}).get("hashes") or {}
                yield rel, item["links"]["download"], hashes.get("sha256"), attr.get("size")
        url = (page.get("links") or {}).get("next")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path)
    parser.add_argument("--project", default="gkemr")
    args = parser.parse_args(argv)
    args.dest.mkdir(parents=True, exist_ok=True)
    n = 0
    for rel, url, digest, size in list_files(API.format(project=args.project)):
        out = args.dest / rel
        if out.is_file() and digest and sha256(out) == digest:
            print(f"fetch_qsmxt: {rel} cached")
            n += 1
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, 4):
            out.write_bytes(_get(url))
            if not digest or sha256(out) == digest:
                break
            print(f"fetch_qsmxt: {rel} checksum mismatch (attempt {attempt})", file=sys.stderr)
        else:
            print(f"fetch_qsmxt: {rel} does not match the SHA-256 published by OSF", file=sys.stderr)
            return 1
        print(f"fetch_qsmxt: {rel} ({size} bytes)")
        n += 1
    if n == 0:
        print(f"fetch_qsmxt: OSF project {args.project} lists no files", file=sys.stderr)
        return 1
    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here))
    from verify_checksums import main as verify

    return verify([str(args.dest.parent), str(here / "checksums.sha256"),
                   "--prefix", args.dest.name + "/"])


if __name__ == "__main__":
    sys.exit(main())
