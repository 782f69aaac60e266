"""Fixtures for the payload tests: the shared folder (schemas, cases)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def shared():
    """The shared folder; skips (or fails under CI=true) when absent."""
    from tcworker.testing.shared import require_shared

    return require_shared()
