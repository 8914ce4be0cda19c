"""Group level: the participants' ROI tables in, cohort statistics, tables and report out.

Not a Nipype workflow (nothing at this level benefits from a graph): plain functions, one module
per job.

* :mod:`.inputs` - which sessions are analysed: completed subjects, ``participants.tsv``,
  ``--participant-label``, ``--exclude-file``, registration QC flags
* :mod:`.analyses` - the statistics run per structure, one :class:`~.analyses.Analysis` record
  each (:data:`~.analyses.ANALYSES`); the numbers come from :mod:`qsmprep.stats`
* :mod:`.tables` - column dictionaries and the TSV + JSON writer
* :mod:`.report` - figures and the self-contained ``report.html``
* :mod:`.run` - :func:`run_group`, the whole group level
* :mod:`.measures` - ``--measure`` (:data:`MEASURES`) and :data:`DEFAULT_STRUCTURES`

What is read from the participant outputs is read by :mod:`qsmprep.derivatives.readers`.
"""

from .measures import DEFAULT_STRUCTURES, MEASURES
from .run import run_group

__all__ = ["DEFAULT_STRUCTURES", "MEASURES", "run_group"]
