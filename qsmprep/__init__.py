"""qsmprep: a BIDS-App for longitudinal quantitative susceptibility mapping (QSM) of deep gray matter."""

__version__ = "0.1.0"
__all__ = ["__version__"]
