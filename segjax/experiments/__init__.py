"""Experiments: sweeps of ordinary training runs, defined in ``experiments/*.py``."""
