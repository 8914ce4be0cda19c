"""qsmprep.workflows."""
