"""qsmprep.bids.filters: the --bids-filter-file."""

import pytest

from qsmprep import bids as qb
from qsmprep.errors import MissingInputError, UsageError


def test_bad_filter_files(tmp_path):
    f = tmp_path / "f.json"
    f.write_text("{not json")
    with pytest.raises(UsageError) as exc:
        qb.load_bids_filters(f)
    assert exc.value.exit_code == 64
    with pytest.raises(UsageError, match="unknown key"):
        qb.load_bids_filters({"bold": {}})
    with pytest.raises(MissingInputError):
        qb.load_bids_filters(tmp_path / "absent.json")
