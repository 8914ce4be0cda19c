"""What the group level can analyse (``--measure``) and which structures by default."""

from __future__ import annotations

from typing import NamedTuple

from ..errors import UsageError
from ..stats.cohort import DEFAULT_STRUCTURES

__all__ = ["DEFAULT_STRUCTURES", "MEASURES", "Measure", "get_measure"]


class Measure(NamedTuple):
    """One value of ``--measure``: which ROI-table column is analysed and how it is labelled.

    Attributes
    ----------
    column : str
        Column of the ROI tables analysed (``mean_ppb``, ``r2star_mean``).
    unit : str
        Its unit (``ppb``, ``1/s``), written to every data dictionary.
    suffix : str
        Suffix replacing ``_ppb`` in the output column names (``_ppb``, ``_per_s``).
    name : str
        Name used in running text and figure labels (``susceptibility``, ``R2*``).
    """

    column: str
    unit: str
    suffix: str
    name: str


#: ``--measure`` -> :class:`Measure`; ``chi`` writes to ``group/``, any other to ``group/<measure>/``
MEASURES = {
    "chi": Measure("mean_ppb", "ppb", "_ppb", "susceptibility"),
    "r2star": Measure("r2star_mean", "1/s", "_per_s", "R2*"),
}


def get_measure(measure):
    """The :class:`Measure` record of ``--measure``.

    Parameters
    ----------
    measure : str
        A key of :data:`MEASURES`.

    Returns
    -------
    Measure

    Raises
    ------
    UsageError
        ``measure`` is not a key of :data:`MEASURES` (exit code 64).
    """
    if measure not in MEASURES:
        raise UsageError(f"--measure {measure!r} is not one of {', '.join(MEASURES)}.")
    return MEASURES[measure]
