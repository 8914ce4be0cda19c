"""qsmprep.qsm."""
