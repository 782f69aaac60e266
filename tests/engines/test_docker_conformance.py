"""The docker engine against the engine conformance suite (real daemon, bash+busybox image)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tcworker.config import WorkerConfig
from tcworker.engines.docker import DockerEngine
from tcworker.testing.conformance import EngineConformance

pytestmark = pytest.mark.docker


class TestDockerConformance(EngineConformance):
    # stdout and stderr reach the daemon through separate pipes: each keeps its order
    streams_interleave = False

    @pytest.fixture
    def engine_factory(self, docker_client: Any, docker_image: str) -> Callable[[WorkerConfig], DockerEngine]:
        return lambda config: DockerEngine(config, default_image=docker_image, required=True)
