"""Cost of the pre-flight pass (``qsmprep/preflight.py``) per session.

Simulates one subject with one session with ``qsmprep-simulate`` (default preset ``1mm``: 1 mm GRE
with the simulator's 6 echoes, 1 mm T1w; cached in the temporary directory), then times, for that
session, ``collect_data`` (headers and sidecars, the checks that existed before) and
``check_session`` (every image decompressed and read once: size vs header, finite values,
non-zero magnitude, phase range vs Units, T1w/GRE overlap). Each is repeated ``--repeat`` times
(files in the page cache after the first read; the first repetition is reported separately as
the closest to a cold read). Prints one table: wall time (s), CPU time (s), peak traced numpy
memory (MB, ``tracemalloc``), images read and MB decompressed; and the whole-process peak RSS.

Usage::

    nice -n 10 .venv/bin/python benchmarks/preflight.py [--preset 1mm|small] [--repeat 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path


def simulate(preset: str, seed: int) -> Path:
    root = Path(tempfile.gettempdir()) / f"qsmprep-bench-preflight-{preset}-seed{seed}"
    if not (root / "dataset_description.json").exists():
        t0 = time.perf_counter()
        subprocess.run([str(Path(sys.executable).parent / "qsmprep-simulate"), str(root), "--subjects", "1",
                        "--sessions", "1", "--seed", str(seed), "--preset", preset, "--overwrite"],
                       check=True, capture_output=True)
        print(f"simulated {root.name} in {time.perf_counter() - t0:.0f} s")
    return root


def measure(func):
    tracemalloc.start()
    c0, t0 = time.process_time(), time.perf_counter()
    out = func()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    return out, wall, cpu, peak


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="1mm", choices=["1mm", "small"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2, help="threads reading the two images of an echo")
    args = ap.parse_args(argv)

    from qsmprep import bids as qb
    from qsmprep import preflight

    root = simulate(args.preset, args.seed)
    layout = qb.build_layout(root, validate=False)
    sessions = qb.collect_participants(layout)
    sub, ses = next(iter(sessions.items()))
    ses = ses[0]

    rows = []
    for rep in range(args.repeat):
        data, w1, c1, p1 = measure(lambda: qb.collect_data(layout, sub, ses))
        summary, w2, c2, p2 = measure(lambda: preflight.check_session(dict(data, warnings=[]),
                                                                        workers=args.workers))
        rows.append((w1, c1, p1, w2, c2, p2, summary))
    shape = data["shape"]
    n_img, mb = rows[0][6]["n_images"], rows[0][6]["bytes"] / 1e6

    def med(i):
        return statistics.median(r[i] for r in rows)

    print(f"\nPre-flight cost per session: preset {args.preset}, GRE {shape} x {len(data['echo_times'])} "
          f"echoes (mag + phase) + T1w; {n_img} images, {mb:.0f} MB decompressed; "
          f"{args.workers} reader thread(s)")
    print(f"{'step':<34}{'wall s (1st)':>13}{'wall s (med)':>13}{'cpu s (med)':>12}{'peak MB':>9}")
    print(f"{'collect_data (headers, sidecars)':<34}{rows[0][0]:>13.2f}{med(0):>13.2f}{med(1):>12.2f}"
          f"{max(r[2] for r in rows):>9.0f}")
    print(f"{'check_session (read every image)':<34}{rows[0][3]:>13.2f}{med(3):>13.2f}{med(4):>12.2f}"
          f"{max(r[5] for r in rows):>9.0f}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"process peak RSS {rss:.0f} MB; {args.repeat} repetitions; aim <= 5 s per session")


if __name__ == "__main__":
    main()
