"""Maintenance scripts, run from the repository root (``python tools/<script>.py``)."""
