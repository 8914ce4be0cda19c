"""Numerical head phantom and longitudinal cohort simulator (test fixtures and demo data).

Public API::

    from qsmprep.simulate import simulate_cohort, simulate_session, SimulationConfig
    simulate_cohort("sim", n_subjects=2, n_sessions=2, preset="small", seed=0)
    data = simulate_session(subject=1, session=0, preset="small", seed=0, group="MS")
"""

from .cohort import assign_groups, phase_to_integer, simulate_cohort
from .config import PRESETS, SimulationConfig, session_names
from .core import SessionData, make_subject, roi_table, simulate_session, wrap_phase
from .geometry import load_truth_transform
from .phantom import build_head_model

__all__ = [
    "PRESETS", "SessionData", "SimulationConfig", "assign_groups", "build_head_model",
    "load_truth_transform", "make_subject", "phase_to_integer", "roi_table", "session_names", "simulate_cohort",
    "simulate_session", "wrap_phase",
]
