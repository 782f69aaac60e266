"""Finding the shared folder (:mod:`tcworker.testing.shared`)."""

from __future__ import annotations

import pytest

from tcworker.testing import shared as shared_mod


def test_env_var_wins_and_a_missing_dir_gives_none(monkeypatch, tmp_path):
    monkeypatch.setenv("TCWORKER_SHARED", str(tmp_path))
    assert shared_mod.shared_dir() == tmp_path
    monkeypatch.setenv("TCWORKER_SHARED", str(tmp_path / "absent"))
    assert shared_mod.shared_dir() is None


def test_default_is_next_to_the_repository(monkeypatch):
    monkeypatch.delenv("TCWORKER_SHARED", raising=False)
    repo = shared_mod._repo_root()
    assert repo is not None and (repo / "pyproject.toml").is_file()
    expected = repo.parent / "shared"
    assert shared_mod.shared_dir() == (expected if expected.is_dir() else None) or not expected.is_dir()


def test_require_shared_skips_locally_and_fails_under_ci(monkeypatch, tmp_path):
    monkeypatch.setenv("TCWORKER_SHARED", str(tmp_path / "absent"))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        shared_mod.require_shared()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception):
        shared_mod.require_shared()
    monkeypatch.setenv("TCWORKER_SHARED", str(tmp_path))
    assert shared_mod.require_shared() == tmp_path
