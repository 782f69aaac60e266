"""The native engine in multiuser mode (a fresh OS user per run) against the conformance suite,
with cgroup v2 process trees and with the session fallback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tcworker.config import WorkerConfig
from tcworker.engines.native import NativeEngine
from tcworker.testing.conformance import EngineConformance

from multiuser_helpers import mu_parent, multiuser_config  # noqa: F401


class TestMultiuserConformance(EngineConformance):
    @pytest.fixture
    def conformance_config(self, mu_parent: Path) -> Iterator[WorkerConfig]:  # noqa: F811
        yield multiuser_config(mu_parent)

    @pytest.fixture
    def engine_factory(self) -> Callable[[WorkerConfig], NativeEngine]:
        def make(config: WorkerConfig) -> NativeEngine:
            engine = NativeEngine(config)
            assert engine.multiuser
            return engine

        return make


class TestMultiuserFallbackConformance(TestMultiuserConformance):
    """Without cgroup v2 the uid sweep at the end of a run backs up the session tracking."""

    @pytest.fixture
    def engine_factory(self) -> Callable[[WorkerConfig], NativeEngine]:
        return lambda config: NativeEngine(config, use_cgroup=False)
