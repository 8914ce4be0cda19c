"""qsmprep.simulate."""
