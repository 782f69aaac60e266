"""Plugins: features that hook into every run (see :mod:`tcworker.plugins.base`)."""
