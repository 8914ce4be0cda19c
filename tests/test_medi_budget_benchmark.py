"""benchmarks/medi_budget.py: its unwrapping-error input and one run on qsmprep's own small head
(no qsm-forward needed; the residual it prints is tested in tests/qsm/test_inversion.py)."""

from __future__ import annotations

import numpy as np

from qsmprep.qsm import kernels
from tests._paths import load_script

B = load_script("benchmarks/medi_budget.py")


def test_wrap_ball_is_one_wrap_at_the_echo_spacing():
    final = np.zeros((80, 40, 40), bool)
    final[10:70, 5:35, 5:35] = True
    c = {"final": final, "vox": (1.0, 1.0, 1.5), "tes": np.array([0.0045, 0.0105, 0.0165]),
         "b0": 3.0}
    ball = B.wrap_ball(c)
    jump = 1e6 / (kernels.GAMMA_BAR_HZ_PER_T * 3.0 * 0.006)  # ppm of 1 cycle over 6 ms
    assert np.isclose(ball.max(), jump, rtol=1e-5) and set(np.unique(ball)) == {0.0, ball.max()}
    n = int((ball > 0).sum())
    assert abs(n - 4 / 3 * np.pi * 12 ** 3 / 1.5) / n < 0.05  # a 12 mm ball in 1 x 1 x 1.5 mm


def test_run_on_own_small_head(tmp_path):
    """Longer solves settle (smaller last change), the longest budget is the reference, and
    the label errors are those of a working chain (tens of ppb at most)."""
    rows = B.run("own-small", [5, 20], tmp_path)
    assert [r["n_iter"] for r in rows] == [5, 20]
    assert rows[0]["change"] > rows[1]["change"] > 0
    assert rows[1]["vs_longest"] == 0.0 and rows[0]["vs_longest"] > 0
    assert all(0 < r["err"] < 30 and 0 < r["resid"] < 20 for r in rows)
