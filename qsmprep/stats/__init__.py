"""qsmprep.stats."""
