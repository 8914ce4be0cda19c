"""The thin Nipype interfaces of :mod:`qsmprep.interfaces.registration` that need no ANTs run."""

import json
import logging

from qsmprep import registration as R
from qsmprep import registration_qc as qc
from qsmprep.interfaces.registration import RegistrationQC


def test_registration_qc_node_combines_sidecars_and_logs_the_session(tmp_path, caplog):
    """Two registrations' quality files in, one session verdict out. Fails if the node drops a
    registration (``''`` entries are sessions without that step and must be skipped, not read),
    stops flagging a metric below its threshold, or logs without naming subject and session."""
    good = R.write_quality(tmp_path / "t1w.json", "t1w_to_template", {"t1w_to_template_ncc": 0.97})
    bad = R.write_quality(tmp_path / "gre.json", "gre_to_t1w",
                          {"gre_to_t1w_gc": 0.05, "gre_to_t1w_overlap": 0.99})
    with caplog.at_level(logging.WARNING):
        res = RegistrationQC(in_files=[good, "", bad], subject="01",
                             session="baseline").run(cwd=str(tmp_path))
    verdict = json.loads(open(res.outputs.out_file).read())
    expected = qc.session_verdict([json.loads(open(f).read()) for f in (good, bad)])
    assert verdict == json.loads(json.dumps(expected))
    assert res.outputs.flagged == 1 and verdict["Reasons"] == ["gre_to_t1w_gc=0.050 < 0.3"]
    assert set(verdict["Metrics"]) == {"t1w_to_template_ncc", "gre_to_t1w_gc",
                                       "gre_to_t1w_overlap"}
    assert "sub-01 ses-baseline: registration quality flagged" in caplog.text
