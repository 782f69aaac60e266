"""Finding the read-only shared folder (design notes, schemas, cases) next to the repository.

:func:`shared_dir` looks at ``$TCWORKER_SHARED``, then ``<repo>/../shared`` (the repository is the
directory holding ``pyproject.toml`` above this package), then ``<cwd>/../shared``.
:func:`require_shared` is the pytest helper: skip when absent, but fail under ``CI=true``.

What does not live here: reading what is in the folder (:mod:`tcworker.testing.cases`).
"""

from __future__ import annotations

import os
from pathlib import Path


def _repo_root() -> Path | None:
    for parent in Path(__file__).resolve().parents:
        if (parent / "pyproject.toml").is_file():
            return parent
    return None


def shared_dir() -> Path | None:
    """The shared folder, or None when none of the candidates is a directory.

    Candidates in order: ``$TCWORKER_SHARED`` (when set, the only one), ``<repo>/../shared``,
    ``<cwd>/../shared``.
    """
    env = os.environ.get("TCWORKER_SHARED")
    if env:
        path = Path(env)
        return path if path.is_dir() else None
    candidates = []
    repo = _repo_root()
    if repo is not None:
        candidates.append(repo.parent / "shared")
    candidates.append(Path.cwd().parent / "shared")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return None


def require_shared() -> Path:
    """The shared folder for a test; skips the test when absent (fails under ``CI=true``)."""
    import pytest

    path = shared_dir()
    if path is not None:
        return path
    reason = ("shared folder not found: set TCWORKER_SHARED or put it at ../shared "
              "next to the repository")
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason + " (CI=true: required)")
    pytest.skip(reason)
    raise AssertionError("unreachable")  # pragma: no cover
