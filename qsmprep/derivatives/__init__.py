"""Derivatives: output names, the output specification, dataset-level files and readers."""
