"""BIDS input: the raw dataset as qsmprep reads it.

* :mod:`.layout` - schema validation (exit 16), ``.bidsignore``, the pybids layout that never
  writes into the input;
* :mod:`.filters` - the ``--bids-filter-file`` and the pybids queries built from it;
* :mod:`.collect` - which subjects/sessions to process and the checked inputs of each session;
* :mod:`.metadata` - echo times, field strength, phase units, grid, user brain masks.

Everything the derivatives folder holds (names, sidecars, dataset-level files) is
:mod:`qsmprep.derivatives`. Errors are :mod:`qsmprep.errors` exceptions whose message names the
file and the fix. The names below are re-exported for scripts (``from qsmprep.bids import
build_layout``); qsmprep's own modules import from the submodules.
"""

from .collect import collect_data, collect_participants
from .filters import DEFAULT_QUERIES, load_bids_filters
from .layout import build_layout, mapping_ignore_patterns, validate_bids
from .metadata import find_user_mask

__all__ = ["DEFAULT_QUERIES", "build_layout", "validate_bids", "load_bids_filters",
           "mapping_ignore_patterns", "collect_participants", "collect_data", "find_user_mask"]
