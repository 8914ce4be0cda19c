"""qsmprep.cli."""
