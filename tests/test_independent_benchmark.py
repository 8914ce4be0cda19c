"""Acquisition names and noise seeds of benchmarks/independent.py (no qsm-forward needed)."""

from __future__ import annotations

import pytest

from tests._paths import load_script

B = load_script("benchmarks/independent.py")


def test_retest_acquisitions_get_their_own_noise_seeds():
    """Every acquisition of a seed, re-tests included, draws its own noise: a re-test that
    reused the baseline's seed would show a change error of exactly zero."""
    names = ["axial", "followup", "oblique", "retest", "retest2", "retest3"]
    offsets = [B._noise_offset(a) for a in names]
    assert len(set(offsets)) == len(names)
    # the cached baseline, follow-up and oblique acquisitions keep their seeds
    assert offsets[:4] == [0, 1, 2, 3]


@pytest.mark.parametrize("bad", ["retest0", "retestx", "sagittal"])
def test_unknown_acquisition_is_refused(bad):
    with pytest.raises(ValueError, match="unknown acquisition"):
        B._noise_offset(bad)


def test_oblique_repeats_are_tilted_and_get_their_own_noise_seeds():
    """``oblique2``, ``oblique3``: the tilted head again with new noise, never the seed of
    another acquisition of the same or the next head seed (``1000 * seed + offset``)."""
    names = ["axial", "followup", "oblique", "retest", "retest2", "oblique2", "oblique3"]
    offsets = [B._noise_offset(a) for a in names]
    assert len(set(offsets)) == len(names)
    assert all(0 <= o < 1000 for o in offsets)
    assert [B.is_oblique(a) for a in names] == [False, False, True, False, False, True, True]


@pytest.mark.parametrize("bad", ["oblique1", "oblique0", "obliquex", "retest98"])
def test_unknown_oblique_repeat_is_refused(bad):
    with pytest.raises(ValueError, match="unknown acquisition"):
        B._noise_offset(bad)
