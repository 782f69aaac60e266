"""The native engine (with its cgroup v2 process trees) against the engine conformance suite."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tcworker.config import WorkerConfig
from tcworker.engines.native import NativeEngine
from tcworker.testing.conformance import EngineConformance


class TestNativeConformance(EngineConformance):
    @pytest.fixture
    def engine_factory(self) -> Callable[[WorkerConfig], NativeEngine]:
        return NativeEngine
